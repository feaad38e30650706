"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``scripts/controlplane-binaries.sh`` (built from the Go module proxy and cached
outside the repository). Everything listens on 127.0.0.1 on free ports, keeps its state in a temporary
directory and is stopped by :meth:`ControlPlane.stop`. If a server cannot start, :class:`ControlPlaneError`
is raised with the tail of its log: a tier that cannot start its real parts fails, it never skips.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARIES_SCRIPT = REPO_ROOT / "scripts" / "controlplane-binaries.sh"
CRD_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
CHART_DIR = REPO_ROOT / "charts" / "frugal"
ADMIN_TOKEN = "frugal-admin-token"
# A second identity with no RBAC bindings, for least-privilege tests.
DEVELOPER_USER = "developer"
DEVELOPER_TOKEN = "frugal-developer-token"
READY_TIMEOUT_S = 90.0
COMMAND_TIMEOUT_S = 120.0
# The API server's audit log: every write of a Deployment (and its status), a Service or a
# PodDisruptionBudget, with its request body, so a test can assert on the order of the writes (ControlPlane.audit_events).
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Request",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
            "resources": [
                {"group": "apps", "resources": ["deployments", "deployments/status"]},
                {"group": "", "resources": ["services"]},
                {"group": "policy", "resources": ["poddisruptionbudgets"]},
            ],
        },
        {"level": "None"},
    ],
}


class ControlPlaneError(RuntimeError):
    """The control plane could not be prepared or started."""


class CommandFailed(AssertionError):
    """A kubectl/helm command exited non-zero; the message carries its stdout and stderr."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        super().__init__(
            f"{' '.join(map(str, proc.args))} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    helm: Path
    kube_controller_manager: Path | None = None
    kube_scheduler: Path | None = None
    # The e2e tier's node (tests/e2e/node_harness.py); None when the script did not build them.
    kubelet: Path | None = None
    kube_proxy: Path | None = None


def ensure_binaries() -> Binaries:
    """Run the (idempotent, seconds when warm) binaries script and read the paths it prints."""
    proc = subprocess.run(["bash", str(BINARIES_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"{BINARIES_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        kcm = paths.get("KUBE_CONTROLLER_MANAGER")
        scheduler = paths.get("KUBE_SCHEDULER")
        kubelet, kube_proxy = paths.get("KUBELET"), paths.get("KUBE_PROXY")
        return Binaries(
            etcd=Path(paths["ETCD"]),
            kube_apiserver=Path(paths["KUBE_APISERVER"]),
            kubectl=Path(paths["KUBECTL"]),
            helm=Path(paths["HELM"]),
            kube_controller_manager=Path(kcm) if kcm else None,
            kube_scheduler=Path(scheduler) if scheduler else None,
            kubelet=Path(kubelet) if kubelet else None,
            kube_proxy=Path(kube_proxy) if kube_proxy else None,
        )
    except KeyError as missing:
        raise ControlPlaneError(f"{BINARIES_SCRIPT} did not print {missing}:\n{proc.stdout}") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log_tail(self, lines: int = 60) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def start_server(
    name: str, argv: Sequence[str | Path], workdir: Path, env: Mapping[str, str] | None = None
) -> ServerProcess:
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [str(a) for a in argv],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env={**os.environ, **env} if env else None,
    )
    return ServerProcess(name, proc, log_path, log_file)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr}")


def make_certificates(cert_dir: Path, extra_sans: Sequence[str] = ()) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost (and `extra_sans`, openssl's ``IP:...`` /
    ``DNS:...`` entries) signed by it, and a service-account key."""
    if shutil.which("openssl") is None:
        raise ControlPlaneError("the openssl command is needed to create the test cluster's certificates")
    cert_dir.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
             "-subj", "/CN=frugal-test-ca", cwd=cert_dir)  # fmt: skip
    _openssl("req", "-new", *ec, "-keyout", "serving.key", "-out", "serving.csr",
             "-subj", "/CN=127.0.0.1", cwd=cert_dir)  # fmt: skip
    (cert_dir / "serving.ext").write_text(
        f"subjectAltName={','.join(['IP:127.0.0.1', 'DNS:localhost', *extra_sans])}\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
    )
    _openssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "7", "-extfile", "serving.ext", "-out", "serving.crt", cwd=cert_dir)  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=cert_dir)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=cert_dir)


def kubeconfig_document(server: str, ca_pem: bytes, user: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "frugal-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "frugal-test", "context": {"cluster": "frugal-test", "user": user}}],
        "current-context": "frugal-test",
    }


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager when built) in ``workdir``."""

    binaries: Binaries
    workdir: Path
    with_controller_manager: bool = True
    # kube-scheduler binds pods to Nodes; off by default: no Nodes exist unless a test registers them.
    with_scheduler: bool = False
    # What a cluster with a real node changes (tests/e2e/node_harness.py); the defaults are this tier's.
    bind_address: str = "127.0.0.1"  # the API server's only listening (and advertised) address
    extra_sans: tuple[str, ...] = ()  # more subjectAltName entries of its serving certificate
    service_cluster_ip_range: str = "10.0.0.0/24"
    authorization_mode: str = "RBAC"
    endpoint_reconciler_type: str = "none"
    service_account_admission: bool = False  # off: nothing here would create the default ServiceAccount
    extra_tokens: tuple[str, ...] = ()  # more lines of the token file: token,user,uid[,"group,..."]
    apiserver_args: tuple[str, ...] = ()
    apiserver_env: Mapping[str, str] = field(default_factory=dict)  # added to its environment
    controllers: str = (
        "garbage-collector-controller,namespace-controller,deployment-controller,"
        "replicaset-controller,job-controller,persistentvolume-binder-controller,"
        "persistentvolume-protection-controller,persistentvolumeclaim-protection-controller"
    )
    controller_manager_args: tuple[str, ...] = ()
    # Called with the certificate directory once the CA exists, before any server starts (to sign more).
    on_certificates: Callable[[Path], None] | None = None
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    apiserver_port: int = 0
    startup_seconds: float = 0.0

    @property
    def server_url(self) -> str:
        return f"https://{self.bind_address}:{self.apiserver_port}"

    @property
    def cert_dir(self) -> Path:
        return self.workdir / "certs"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def developer_kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig-developer"

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG and PATH with kubectl and helm first."""
        tools = os.pathsep.join(str(p.parent) for p in (self.binaries.kubectl, self.binaries.helm))
        helm_home = self.workdir / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": tools + os.pathsep + os.environ.get("PATH", ""),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            make_certificates(self.cert_dir, self.extra_sans)
            if self.on_certificates is not None:
                self.on_certificates(self.cert_dir)
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfigs()
            self._wait_ready()
            if self.with_controller_manager and self.binaries.kube_controller_manager is not None:
                self._start_controller_manager()
            if self.with_scheduler:
                self._start_scheduler()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        for name in reversed(list(self.servers)):
            self.servers[name].stop()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (SIGTERM, as a node drain or a crash-free restart would); etcd and the
        controller-manager keep running. :meth:`start_apiserver` brings it back as it was."""
        self.servers["kube-apiserver"].stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again with the flags, port and certificates it had; returns once ready."""
        stopped = self.servers["kube-apiserver"]
        assert stopped.proc.poll() is not None, "kube-apiserver is still running: stop_apiserver() first"
        argv = [str(arg) for arg in stopped.proc.args]
        self.servers["kube-apiserver"] = start_server(
            "kube-apiserver", argv, self.workdir, self.apiserver_env
        )
        self._wait_ready()

    def log_tail(self, name: str = "kube-apiserver", lines: int = 60) -> str:
        server = self.servers.get(name)
        return server.log_tail(lines) if server else f"({name} was not started)"

    # -- servers -----------------------------------------------------------------------------------
    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        data = self.workdir / "etcd-data"
        argv: list[str | Path] = [
            self.binaries.etcd, "--name=frugal-test", f"--data-dir={data}", "--unsafe-no-fsync",
            f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=frugal-test=http://127.0.0.1:{peer}", "--log-level=warn",
        ]  # fmt: skip
        self.servers["etcd"] = start_server("etcd", argv, self.workdir)
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._poll("etcd", lambda: b'"health":"true"' in _http_get(f"{self.etcd_url}/health"), 30.0)

    def _start_apiserver(self) -> None:
        self.apiserver_port = free_port()
        certs = self.cert_dir
        tokens = self.workdir / "tokens.csv"
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        tokens.write_text(
            f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n{DEVELOPER_TOKEN},{DEVELOPER_USER},developer-uid\n'
            + "".join(f"{line}\n" for line in self.extra_tokens)
        )
        admission = [] if self.service_account_admission else ["--disable-admission-plugins=ServiceAccount"]
        argv: list[str | Path] = [
            self.binaries.kube_apiserver,
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.bind_address}", f"--advertise-address={self.bind_address}",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={certs}", f"--tls-cert-file={certs / 'serving.crt'}",
            f"--tls-private-key-file={certs / 'serving.key'}", f"--client-ca-file={certs / 'ca.crt'}",
            f"--token-auth-file={tokens}",
            f"--authorization-mode={self.authorization_mode}", *admission,
            f"--service-cluster-ip-range={self.service_cluster_ip_range}", "--allow-privileged=true",
            f"--endpoint-reconciler-type={self.endpoint_reconciler_type}",
            f"--service-account-issuer={self.server_url}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
            "--audit-log-mode=blocking", *self.apiserver_args,
        ]  # fmt: skip
        self.servers["kube-apiserver"] = start_server(
            "kube-apiserver", argv, self.workdir, self.apiserver_env
        )

    def _start_controller_manager(self) -> None:
        assert self.binaries.kube_controller_manager is not None
        argv: list[str | Path] = [
            self.binaries.kube_controller_manager,
            f"--kubeconfig={self.kubeconfig}", "--secure-port=0", "--leader-elect=false",
            f"--controllers={self.controllers}", *self.controller_manager_args,
        ]  # fmt: skip
        self.servers["kube-controller-manager"] = start_server("kube-controller-manager", argv, self.workdir)

    def _start_scheduler(self) -> None:
        if self.binaries.kube_scheduler is None:
            raise ControlPlaneError("kube-scheduler was not built: run scripts/controlplane-binaries.sh")
        argv: list[str | Path] = [
            self.binaries.kube_scheduler, f"--kubeconfig={self.kubeconfig}", "--secure-port=0", "--leader-elect=false",
        ]  # fmt: skip
        self.servers["kube-scheduler"] = start_server("kube-scheduler", argv, self.workdir)

    def _write_kubeconfigs(self) -> None:
        ca = (self.cert_dir / "ca.crt").read_bytes()
        for path, user, token in (
            (self.kubeconfig, "admin", ADMIN_TOKEN),
            (self.developer_kubeconfig, DEVELOPER_USER, DEVELOPER_TOKEN),
        ):
            path.write_text(yaml.safe_dump(kubeconfig_document(self.server_url, ca, user, token)))
            path.chmod(0o600)

    def _wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

        def ready() -> bool:
            # /readyz, then the default namespace (created by a bootstrap controller just after).
            return _http_get(f"{self.server_url}/readyz", context, headers) == b"ok" and bool(
                _http_get(f"{self.server_url}/api/v1/namespaces/default", context, headers)
            )

        self._poll("kube-apiserver", ready, READY_TIMEOUT_S)

    def _poll(self, name: str, check: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for server in self.servers.values():
                if server.proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{server.name} exited with {server.proc.returncode} while waiting for {name}:\n"
                        f"{server.log_tail(80)}"
                    )
            if check():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout_s:.0f} s:\n{self.log_tail(name, 80)}")

    # -- clients -----------------------------------------------------------------------------------
    def run(
        self, argv: Sequence[str | Path], *, check: bool = True, input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        proc = subprocess.run(
            [str(a) for a in argv], input=input, capture_output=True, text=True, check=False,
            env=dict(env or self.env), cwd=REPO_ROOT, timeout=COMMAND_TIMEOUT_S,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise CommandFailed(proc)
        return proc

    def kubectl(
        self, *args: str | Path, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run([self.binaries.kubectl, *args], check=check, input=input)

    def helm(
        self, *args: str | Path, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run([self.binaries.helm, *args], check=check, input=input)

    def audit_events(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events (writes of Deployments, their status, Services and
        PodDisruptionBudgets; see AUDIT_POLICY), in `namespace` if given, ordered by when the API server received them."""
        events = []
        if self.audit_log.exists():
            for line in self.audit_log.read_text().splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:  # a line still being written
                    continue
                ref = event.get("objectRef") or {}
                if namespace is None or ref.get("namespace") == namespace:
                    events.append(event)
        return sorted(events, key=lambda e: str(e.get("requestReceivedTimestamp", "")))

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin identity."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _http_get(
    url: str, context: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None
) -> bytes:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return bytes(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return b""
