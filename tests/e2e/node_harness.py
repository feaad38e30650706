"""A real single-node Kubernetes cluster for the e2e tier: the kubelet runs every pod in a container.

What is real, and where it runs (all local processes of the test machine, started and stopped here):

- the control plane of ``tests/controlplane/controlplane_harness.py`` (etcd, kube-apiserver,
  kube-controller-manager with every default controller, kube-scheduler), the API server listening
  on the pod bridge's gateway address so pods reach it through the ``kubernetes`` Service;
- containerd (Debian's 1.6, runc, cgroupfs) with its CRI plugin, its own socket and state in the
  workdir and its image store under the cache (images survive between runs; no container does:
  :meth:`RealCluster.start` removes every container a previous run left);
- a Linux bridge ``frugal0`` (10.244.0.1/24) that pods join through the CNI ``bridge`` plugin; pods
  get a route to the pod network (on-link) and to the Service network (via 10.244.0.1), no default
  route, no masquerading; mangle-table rules drop anything from or to the bridge that would cross
  another interface, so no pod or Service address ever leaves the machine;
- the kubelet (node ``frugal-node``, cgroup v1 allowed), kube-proxy (iptables mode) and CoreDNS
  (serving cluster.local and the cluster's reverse zones only, on 10.244.0.1:53, built without any
  plugin that could forward a query).

Nothing is simulated: a pod that cannot run fails here as on any cluster. If the node cannot start,
:class:`NodeError` carries every server's log tail; the tier fails, it never skips.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from controlplane_harness import (
    REPO_ROOT,
    Binaries,
    ControlPlane,
    ServerProcess,
    ensure_binaries,
    free_port,
    kubeconfig_document,
    start_server,
)

NODE_SCRIPT = REPO_ROOT / "scripts" / "node-binaries.sh"
NODE_NAME = "frugal-node"
BRIDGE = "frugal0"
BRIDGE_MAC = "02:66:72:75:67:01"  # locally administered
POD_CIDR = "10.244.0.0/24"
GATEWAY_IP = "10.244.0.1"  # the bridge's address: the node's IP, the API server, CoreDNS
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "frugal-pods"
CNI_RESULTS = Path("/var/lib/cni/results")  # libcni's cache, fixed in containerd 1.6
ISOLATION_CHAINS = {"FORWARD": "FRUGAL-FORWARD", "POSTROUTING": "FRUGAL-EGRESS"}  # mangle table
NODE_READY_TIMEOUT_S = 180.0
LOCK_TIMEOUT_S = 900.0
STOP_GRACE_S = 20.0
# Host sysctls this node sets (the first two) or its servers may set (the kubelet's kernel tunables,
# kube-proxy's); their values before start are restored at stop.
FORWARDING_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
WATCHED_SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
)  # fmt: skip
# Labels the kubelet may set on its own Node (NodeRestriction); other kubernetes.io / k8s.io
# labels are set by the admin after registration.
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type", "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
})  # fmt: skip


class NodeError(RuntimeError):
    """The node could not be prepared or started (the message carries the servers' log tails)."""


def orphaned_image_refs(listing: str) -> list[str]:
    """The `sha256:<id>` references in a `ctr images ls` listing whose image no named reference points
    at (REF TYPE DIGEST ... columns; DIGEST is the manifest's)."""
    rows = [row.split() for row in listing.splitlines()[1:] if len(row.split()) >= 3]
    named = {row[2] for row in rows if not row[0].startswith("sha256:")}
    return [row[0] for row in rows if row[0].startswith("sha256:") and row[2] not in named]


def cache_dir() -> Path:
    return Path(os.environ.get("FRUGAL_CACHE_DIR") or Path.home() / ".cache" / "frugal")


# -- binaries ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeBinaries:
    """What scripts/node-binaries.sh printed, with the kubelet and kube-proxy of the control plane's script."""

    kubelet: Path
    kube_proxy: Path
    containerd: Path
    ctr: Path
    runc: Path
    cni_bin_dir: Path
    iptables: Path
    conntrack: Path
    coredns: Path
    pause_image: str
    pause_archive: Path
    busybox_image: str
    busybox_archive: Path


def ensure_node_binaries(control: Binaries) -> NodeBinaries:
    """Run the (idempotent, well under a second when warm) node script and read the paths it prints."""
    proc = subprocess.run(["bash", str(NODE_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeError(f"{NODE_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if control.kubelet is None or control.kube_proxy is None:
        raise NodeError(
            "scripts/controlplane-binaries.sh did not build kubelet/kube-proxy (FRUGAL_BUILD_NODE=0?)"
        )
    try:
        return NodeBinaries(
            kubelet=control.kubelet, kube_proxy=control.kube_proxy,
            containerd=Path(values["CONTAINERD"]), ctr=Path(values["CTR"]), runc=Path(values["RUNC"]),
            cni_bin_dir=Path(values["CNI_BIN_DIR"]), iptables=Path(values["IPTABLES"]),
            conntrack=Path(values["CONNTRACK"]), coredns=Path(values["COREDNS"]),
            pause_image=values["PAUSE_IMAGE"], pause_archive=Path(values["PAUSE_ARCHIVE"]),
            busybox_image=values["BUSYBOX_IMAGE"], busybox_archive=Path(values["BUSYBOX_ARCHIVE"]),
        )  # fmt: skip
    except KeyError as missing:
        raise NodeError(f"{NODE_SCRIPT} did not print {missing}:\n{proc.stdout}") from None


# -- configuration documents (pure) ------------------------------------------------------------------
def parse_taint(taint: str | Mapping[str, str]) -> dict[str, str]:
    """``key=value:Effect`` or ``key:Effect`` (kubectl's notation), or a Taint mapping, as a Taint."""
    if not isinstance(taint, str):
        return dict(taint)
    match = re.fullmatch(r"([^=:]+)(?:=([^:]*))?:(NoSchedule|PreferNoSchedule|NoExecute)", taint)
    if not match:
        raise ValueError(f"not a taint (key[=value]:Effect): {taint!r}")
    key, value, effect = match.groups()
    return {"key": key, "effect": effect, **({"value": value} if value else {})}


def split_node_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(labels the kubelet may register its Node with, labels only an admin may set)."""
    own: dict[str, str] = {}
    admin: dict[str, str] = {}
    for key, value in labels.items():
        prefix = key.split("/", 1)[0] if "/" in key else ""
        restricted = any(prefix == ns or prefix.endswith("." + ns) for ns in ("kubernetes.io", "k8s.io"))
        allowed = key in KUBELET_LABELS or any(
            prefix == ns or prefix.endswith("." + ns) for ns in KUBELET_LABEL_NAMESPACES
        )
        (admin if restricted and not allowed else own)[key] = value
    return own, admin


def reverse_zone(cidr: str) -> str:
    """The in-addr.arpa zone of an IPv4 network on an octet boundary: 10.96.0.0/24 -> 0.96.10.in-addr.arpa."""
    network = ipaddress.IPv4Network(cidr)
    if network.prefixlen % 8:
        raise ValueError(f"{cidr}: a reverse zone needs a prefix on an octet boundary")
    octets = str(network.network_address).split(".")[: network.prefixlen // 8]
    return ".".join([*reversed(octets), "in-addr.arpa"])


def kubelet_config(
    *, runtime_socket: Path, port: int, healthz_port: int, client_ca: Path, tls_cert: Path, tls_key: Path,
    resolv_conf: Path, pod_logs_dir: Path, volume_plugin_dir: Path, taints: Sequence[Mapping[str, str]],
) -> dict[str, Any]:  # fmt: skip
    """The KubeletConfiguration: cgroup v1 allowed, cgroupfs, webhook authn/authz plus client
    certificates of the test CA, cluster DNS on the gateway, no eviction or image GC on this disk."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # 1.35 refuses cgroup v1 hosts unless told (KEP-5573)
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "address": GATEWAY_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [GATEWAY_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs_dir),
        "volumePluginDir": str(volume_plugin_dir),
        "registerWithTaints": [dict(t) for t in taints],
        # The disk of a development machine is far from empty and the images are large: evict only
        # at the very end, and never garbage-collect images (100 % disables image GC).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
            "imagefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "failSwapOn": False,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def containerd_config(
    *, root: Path, state: Path, socket: Path, sandbox_image: str, runc: Path, cni_bin_dir: Path,
    cni_conf_dir: Path, can_lower_oom_score: bool = True, cri: bool = True,
) -> str:  # fmt: skip
    """containerd 1.6's config (TOML, version 2): its own root/state/socket, CRI with our pause image,
    runc with cgroupfs, our CNI configuration. Without `cri`, the CRI plugin is off (for cleaning up)."""

    def q(value: object) -> str:  # a TOML basic string
        return json.dumps(str(value))

    cri_id = "io.containerd.grpc.v1.cri"
    lines = [
        "version = 2",
        f"root = {q(root)}",
        f"state = {q(state)}",
        f"disabled_plugins = [{q(cri_id)}]" if not cri else "disabled_plugins = []",
        "[grpc]",
        f"  address = {q(socket)}",
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {q(root / 'opt')}",
    ]
    if cri:
        lines += [
            f'[plugins."{cri_id}"]',
            f"  sandbox_image = {q(sandbox_image)}",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  netns_mounts_under_state_dir = true",
            # Without CAP_SYS_RESOURCE (root on the development VMs lacks it) no process may lower its
            # oom_score_adj, and runc fails to start a sandbox at the kubelet's -998 ("can't get final
            # child's PID from pipe: EOF"): clamp the scores to containerd's own.
            f"  restrict_oom_score_adj = {'false' if can_lower_oom_score else 'true'}",
            "  enable_selinux = false",
            f'[plugins."{cri_id}".containerd]',
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f'[plugins."{cri_id}".containerd.runtimes.runc]',
            '  runtime_type = "io.containerd.runc.v2"',
            f'[plugins."{cri_id}".containerd.runtimes.runc.options]',
            f"  BinaryName = {q(runc)}",
            f"  Root = {q(state / 'runc')}",
            "  SystemdCgroup = false",
            f'[plugins."{cri_id}".cni]',
            f"  bin_dir = {q(cni_bin_dir)}",
            f"  conf_dir = {q(cni_conf_dir)}",
            "  max_conf_num = 1",
            f'[plugins."{cri_id}".registry]',
            '  config_path = ""',
        ]
    return "\n".join(lines) + "\n"


def cni_conflist(*, ipam_dir: Path) -> dict[str, Any]:
    """Pods on the frugal0 bridge: an address from the pod CIDR, routes to the pod network (on-link,
    from the address) and the Service network (via the gateway) only, no default route, no masquerade.
    (containerd's CRI sets up each pod's loopback with the `loopback` plugin itself.)"""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,  # the harness owns the bridge's address and ip_forward
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY_IP}]],
                    "routes": [{"dst": SERVICE_CIDR, "gw": GATEWAY_IP}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def corefile(*, kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """CoreDNS on the gateway address for the cluster domain and the pod/Service reverse zones, from
    the API server. There is no server block for ".", and no forward plugin: other names get REFUSED."""
    zones = [CLUSTER_DOMAIN, reverse_zone(POD_CIDR), reverse_zone(SERVICE_CIDR)]
    return "\n".join([
        " ".join(f"{zone}:53" for zone in zones) + " {",
        f"    bind {GATEWAY_IP}",
        "    errors",
        "    log",
        f"    health 127.0.0.1:{health_port}",
        f"    ready 127.0.0.1:{ready_port}",
        f"    kubernetes {' '.join(zones)} {{",
        f"        kubeconfig {kubeconfig}",
        "        ttl 5",
        "    }",
        "    cache 5",
        "    loadbalance",
        "}",
        "",
    ])  # fmt: skip


def kube_proxy_config(*, kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """kube-proxy in iptables mode that changes no host sysctl: conntrack left alone (the VM may refuse
    it), no NodePorts on localhost (route_localnet), NodePorts on the gateway address only."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": GATEWAY_IP,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "clusterCIDR": POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{GATEWAY_IP}/32"],
        "iptables": {
            "localhostNodePorts": False,
            "masqueradeAll": False,
            "syncPeriod": "30s",
            "minSyncPeriod": "1s",
        },
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }


def isolation_rules() -> dict[str, list[list[str]]]:
    """The mangle-table chains that keep the cluster on the machine, by chain name. Forwarded traffic
    may only go bridge to bridge; nothing with a pod or Service address leaves by another interface."""
    forward, egress = ISOLATION_CHAINS["FORWARD"], ISOLATION_CHAINS["POSTROUTING"]
    return {
        forward: [
            ["-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"],
            ["!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP"],
        ],
        egress: [
            ["-o", BRIDGE, "-j", "RETURN"],
            ["-o", "lo", "-j", "RETURN"],
            ["-s", POD_CIDR, "-j", "DROP"],
            ["-d", POD_CIDR, "-j", "DROP"],
            ["-d", SERVICE_CIDR, "-j", "DROP"],
        ],
    }


def cluster_rbac() -> list[dict[str, Any]]:
    """CoreDNS's identity may list and watch what it serves."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "frugal:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "frugal:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "frugal:coredns"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "frugal-coredns"}],
        },
    ]  # fmt: skip


def host_path_pv(name: str, path: Path, size: str, access_modes: Sequence[str]) -> dict[str, Any]:
    """A hostPath PersistentVolume with no storage class, as a static provisioner would create it."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"frugal.dev/host-path-volume": name}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(access_modes),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


def archive_images(archive: Path) -> dict[str, str]:
    """The images an OCI or Docker archive names, with the digest that identifies each: the manifest
    digest for OCI archives ("oci:sha256:..."), the config digest for Docker archives ("config:sha256:...")."""
    with tarfile.open(archive) as tar:
        names = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        if "index.json" in names:
            member = tar.extractfile(names["index.json"])
            assert member is not None
            index = json.load(member)
            found = {}
            for manifest in index.get("manifests", []):
                annotations = manifest.get("annotations") or {}
                name = annotations.get("io.containerd.image.name") or annotations.get(
                    "org.opencontainers.image.ref.name"
                )
                if name:
                    found[name] = f"oci:{manifest['digest']}"
            return found
        if "manifest.json" in names:
            member = tar.extractfile(names["manifest.json"])
            assert member is not None
            found = {}
            for entry in json.load(member):
                config = Path(entry["Config"]).name.removesuffix(".json")
                digest = config if config.startswith("sha256:") else f"sha256:{config}"
                for tag in entry.get("RepoTags") or []:
                    found[normalize_image(tag)] = f"config:{digest}"
            return found
    raise NodeError(f"{archive} is neither an OCI archive (index.json) nor a Docker archive (manifest.json)")


def normalize_image(name: str) -> str:
    """A Docker-style short name as containerd stores it: busybox:1 -> docker.io/library/busybox:1."""
    first = name.split("/", 1)[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


# -- host plumbing (thin) ------------------------------------------------------------------------
def sh(*argv: str | Path, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def has_capability(bit: int, status: str | None = None) -> bool:
    """Whether this process's effective capabilities (``CapEff`` of /proc/self/status) include `bit`."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    match = re.search(r"^CapEff:\s*([0-9a-f]+)$", text, re.M)
    return bool(match and int(match.group(1), 16) >> bit & 1)


CAP_SYS_RESOURCE = 24


def read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        return path.read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    (Path("/proc/sys") / name.replace(".", "/")).write_text(value)


IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
OWNED_CHAIN = re.compile(r"^(KUBE-|CNI-|FRUGAL-)")


def iptables_snapshot(tool: str) -> dict[str, list[str]]:
    """``<tool> -t <table> -S`` for each table (the chains and rules before the node started)."""
    return {
        table: sh(tool, "-w", "-t", table, "-S", check=False).stdout.splitlines() for table in IPTABLES_TABLES
    }


def iptables_restore_owned(tool: str, before: Mapping[str, Sequence[str]]) -> None:
    """Remove what the node added to `tool`'s tables since `before`: rules that jump to or mention the
    KUBE-/CNI-/FRUGAL- chains or the cluster's networks, and those chains. Nothing else is touched."""
    for table in IPTABLES_TABLES:
        old = set(before.get(table, ()))
        now = sh(tool, "-w", "-t", table, "-S", check=False).stdout.splitlines()
        new_chains = [line.split()[1] for line in now if line.startswith("-N ") and line not in old]
        new_chains = [c for c in new_chains if OWNED_CHAIN.match(c)]
        for line in now:
            if not line.startswith("-A ") or line in old:
                continue
            words = shlex.split(line)
            chain = words[1]
            if chain in new_chains:
                continue  # flushed with its chain below
            mentions = " ".join(words[2:])
            if (
                re.search(r"\b(KUBE-|CNI-|FRUGAL-)", mentions)
                or BRIDGE in mentions
                or "10.244.0." in mentions
                or "10.96.0." in mentions
            ):
                sh(tool, "-w", "-t", table, "-D", chain, *words[2:], check=False)
        for chain in new_chains:
            sh(tool, "-w", "-t", table, "-F", chain, check=False)
        for chain in new_chains:
            sh(tool, "-w", "-t", table, "-X", chain, check=False)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first."""
    found = []
    prefix = str(root)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(root: Path) -> None:
    for _ in range(3):  # a lazy unmount of a parent can expose nothing new, but stacked mounts can
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if sh("umount", point, check=False).returncode != 0:
                sh("umount", "-l", point, check=False)


def pids_with(needle: str) -> list[int]:
    """Processes whose command line contains `needle` (a path unique to one node's workdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kubepods_cgroups() -> list[Path]:
    """The kubelet's pod cgroups (cgroupfs driver, cgroup root "/"), in every v1 hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pod_processes_and_cgroups() -> None:
    """Kill whatever still runs in the pod cgroups (processes the node's pods started), then remove them."""
    for _ in range(10):
        pids = set()
        for group in kubepods_cgroups():
            with contextlib.suppress(OSError):
                pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
        if not pids:
            break
        kill_pids(pids)
        time.sleep(0.3)
    for group in kubepods_cgroups():
        with contextlib.suppress(OSError):
            group.rmdir()


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def remove_stale_shim_sockets(directory: Path = Path("/run/containerd/s")) -> None:
    """containerd 1.6 puts its shims' sockets in /run/containerd/s whatever its state dir; a shim
    killed with SIGKILL leaves its socket behind. Remove those nothing listens on, then the empty dirs."""
    rows = [line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:]]
    listening = {row[7] for row in rows if len(row) >= 8}
    if directory.is_dir():
        for socket in directory.iterdir():
            if str(socket) not in listening:
                socket.unlink(missing_ok=True)
    for empty in (directory, directory.parent):
        with contextlib.suppress(OSError):
            empty.rmdir()


def remove_bridge() -> None:
    for line in sh("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout.splitlines():
        port = line.split(":")[1].strip().split("@")[0]
        sh("ip", "link", "delete", port, check=False)
    sh("ip", "link", "delete", BRIDGE, check=False)


@dataclass
class HostNetwork:
    """The bridge, the route to the Service network, forwarding sysctls and the isolation rules.
    ``setup`` records what it changes in ``saved`` (kept in the node's state file), ``teardown`` undoes it."""

    iptables: str = "iptables"
    saved: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> None:
        self.saved = {
            "sysctls": {name: read_sysctl(name) for name in (*FORWARDING_SYSCTLS, *WATCHED_SYSCTLS)},
            "iptables": iptables_snapshot(self.iptables),
            "ip6tables": iptables_snapshot("ip6tables") if shutil.which("ip6tables") else {},
        }

    def setup(self) -> None:
        if not self.saved:
            self.snapshot()
        remove_bridge()
        # A fixed address: a bridge without one takes its lowest port's, which changes as pods come
        # and go, and the pods' ARP entries for the gateway then point at another pod's port.
        sh("ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge")
        with contextlib.suppress(OSError):
            write_sysctl(f"net.ipv6.conf.{BRIDGE}.disable_ipv6", "1")
        sh("ip", "addr", "add", f"{GATEWAY_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        # Host processes reach Services by the bridge too (kube-proxy's OUTPUT rules rewrite them).
        sh("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", GATEWAY_IP)
        for chain, rules in isolation_rules().items():
            sh(self.iptables, "-w", "-t", "mangle", "-N", chain, check=False)
            sh(self.iptables, "-w", "-t", "mangle", "-F", chain)
            for rule in rules:
                sh(self.iptables, "-w", "-t", "mangle", "-A", chain, *rule)
        for hook, chain in ISOLATION_CHAINS.items():
            if sh(self.iptables, "-w", "-t", "mangle", "-C", hook, "-j", chain, check=False).returncode != 0:
                sh(self.iptables, "-w", "-t", "mangle", "-I", hook, "1", "-j", chain)
        for name, value in FORWARDING_SYSCTLS.items():
            write_sysctl(name, value)

    def teardown(self) -> None:
        for hook, chain in ISOLATION_CHAINS.items():
            while (
                sh(self.iptables, "-w", "-t", "mangle", "-D", hook, "-j", chain, check=False).returncode == 0
            ):
                pass
        iptables_restore_owned(self.iptables, self.saved.get("iptables", {}))
        if self.saved.get("ip6tables"):
            iptables_restore_owned("ip6tables", self.saved["ip6tables"])
        remove_bridge()
        sh("ip", "route", "delete", SERVICE_CIDR, check=False)
        for name, value in (self.saved.get("sysctls") or {}).items():
            if value is not None and read_sysctl(name) not in (None, value):
                with contextlib.suppress(OSError):
                    write_sysctl(name, value)


# -- the cluster ---------------------------------------------------------------------------------
@dataclass
class RealCluster:
    """The control plane plus a real node in ``workdir``; ``start()`` → Node Ready, ``stop()`` → nothing left."""

    workdir: Path
    node_labels: Mapping[str, str] = field(default_factory=dict)
    node_taints: Sequence[str | Mapping[str, str]] = ()
    binaries: Binaries | None = field(default=None, repr=False)
    node_binaries: NodeBinaries | None = field(default=None, repr=False)
    plane: ControlPlane | None = field(default=None, repr=False)
    servers: dict[str, ServerProcess] = field(default_factory=dict, repr=False)
    network: HostNetwork = field(default_factory=HostNetwork, repr=False)
    startup_seconds: float = 0.0
    leftover_containers: int = 0  # containers a previous run left in the shared store, removed at start
    node_name: str = NODE_NAME
    pod_gateway_ip: str = GATEWAY_IP
    kubernetes_service_ip: str = KUBERNETES_SERVICE_IP
    _lock: Any = field(default=None, repr=False)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)
    _health: dict[str, str] = field(default_factory=dict, repr=False)  # server -> its health URL

    # -- paths -------------------------------------------------------------------------------------
    @property
    def node_dir(self) -> Path:
        return self.workdir / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        """Kept under the cache so imported images survive runs (containers never do)."""
        return cache_dir() / "node" / "containerd"

    @property
    def state_file(self) -> Path:
        """What a running node changed on the host, so that a run after a crash can undo it."""
        return cache_dir() / "node" / "active.json"

    @property
    def control(self) -> ControlPlane:
        if self.plane is None:
            raise NodeError("the cluster was not started")
        return self.plane

    @property
    def nodebin(self) -> NodeBinaries:
        if self.node_binaries is None:
            raise NodeError("the cluster was not started")
        return self.node_binaries

    @property
    def kubeconfig(self) -> Path:
        return self.control.kubeconfig

    @property
    def env(self) -> dict[str, str]:
        return self.control.env

    @property
    def server_url(self) -> str:
        return self.control.server_url

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start everything and wait for the Node to be Ready (``startup_seconds``: this wait and the
        starting, not the binaries scripts). On failure, stop what started and raise NodeError."""
        if self.binaries is None:
            self.binaries = ensure_binaries()
        if self.node_binaries is None:
            self.node_binaries = ensure_node_binaries(self.binaries)
        started = time.monotonic()
        self.node_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()  # from here on, the machine's node is this one
        try:
            self._clean_after_crash()
            self.network.snapshot()
            self._write_state()
            self.network.setup()
            self._start_control_plane()
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(cluster_rbac()))
            self._start_containerd()
            self._import(self.nodebin.pause_archive)
            self._start_coredns()
            self._start_kube_proxy()
            self._start_kubelet()
            self._wait_node_ready()
        except Exception as error:
            tails = format_tails(self.log_tails(60))
            try:
                self.stop()
            except NodeError as stopping:
                tails += f"\n{stopping}"
            raise NodeError(f"{error}\n\n{tails}") from error
        except BaseException:
            with contextlib.suppress(NodeError):
                self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop everything this node started and undo its host changes; safe to call twice or after a
        failed start. Every step runs even if one before it failed; the failures are raised at the end."""
        if self._lock is None:
            return  # never started, or already stopped: the host may be another run's node
        failures: list[str] = []

        def step(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as error:
                failures.append(f"{what}: {error}")

        step("letting the kubelet stop the pods", self._drain_pods)
        for name in ("kubelet", "kube-proxy", "coredns"):
            if name in self.servers:
                step(f"stopping {name}", self.servers[name].stop)
        step("removing containers", lambda: self._remove_containers(self.containerd_socket))
        for name, server in reversed(self.servers.items()):  # containerd (and its janitor, if it failed)
            step(f"stopping {name}", server.stop)
        step("killing leftover shims", lambda: kill_pids(pids_with(str(self.containerd_socket))))
        step("killing pod processes", kill_pod_processes_and_cgroups)
        if self.node_binaries is not None:
            step("kube-proxy --cleanup", lambda: sh(self.nodebin.kube_proxy, "--cleanup", check=False))
        step("unmounting", lambda: unmount_all(self.node_dir))
        if self.plane is not None:
            step("stopping the control plane", self.plane.stop)
        if self.network.saved:
            step("removing the bridge, rules and sysctls", self.network.teardown)
        if self.node_binaries is not None:
            step("forgetting conntrack entries", self._forget_connections)
        step("removing libcni's cache", lambda: remove_files(CNI_RESULTS.glob(f"{CNI_NETWORK}-*")))
        step("removing stale shim sockets", remove_stale_shim_sockets)
        self.state_file.unlink(missing_ok=True)
        self._release_lock()
        if failures:
            raise NodeError("stopping the node failed:\n" + "\n".join(failures))

    def _forget_connections(self) -> None:
        for cidr in (POD_CIDR, SERVICE_CIDR):
            for direction in ("-s", "-d"):
                sh(self.nodebin.conntrack, "-D", direction, cidr, check=False)

    # -- servers -----------------------------------------------------------------------------------
    def _start_control_plane(self) -> None:
        for name in ("kubelet", "kube-proxy", "coredns"):
            self._tokens[name] = secrets.token_hex(16)
        certs = self.workdir / "controlplane" / "certs"  # ControlPlane.cert_dir
        self.plane = ControlPlane(
            self.binaries or ensure_binaries(), self.workdir / "controlplane",
            with_controller_manager=True, with_scheduler=True,
            bind_address=GATEWAY_IP,
            extra_sans=(f"IP:{GATEWAY_IP}", f"IP:{KUBERNETES_SERVICE_IP}", "DNS:kubernetes", "DNS:kubernetes.default",
                        "DNS:kubernetes.default.svc", f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}"),
            service_cluster_ip_range=SERVICE_CIDR,
            authorization_mode="Node,RBAC",
            endpoint_reconciler_type="lease",
            service_account_admission=True,
            extra_tokens=(
                f'{self._tokens["kubelet"]},system:node:{NODE_NAME},kubelet-uid,"system:nodes"',
                f"{self._tokens['kube-proxy']},system:kube-proxy,kube-proxy-uid",
                f"{self._tokens['coredns']},frugal-coredns,coredns-uid",
            ),
            apiserver_args=(
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={certs / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={certs / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={certs / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ),
            # Busybox's own TLS client (the test image's wget) sends no signature_algorithms, which
            # leaves TLS 1.2 at SHA-1 signatures; Go 1.25+ refuses those unless told (RFC 9155).
            apiserver_env={"GODEBUG": "tlssha1=1"},
            controllers="*",
            controller_manager_args=(
                f"--root-ca-file={certs / 'ca.crt'}",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--cluster-signing-cert-file={certs / 'ca.crt'}",
                f"--cluster-signing-key-file={certs / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-cidr={POD_CIDR}",
            ),
            on_certificates=self._sign_node_certificates,
        )  # fmt: skip
        assert self.plane.cert_dir == certs
        self.plane.start()

    def _sign_node_certificates(self, cert_dir: Path) -> None:
        """The kubelet's serving certificate and the API server's client certificate for kubelets."""
        sign_certificate(cert_dir, "kubelet-serving", f"/CN={NODE_NAME}",
                         f"subjectAltName=IP:{GATEWAY_IP},DNS:{NODE_NAME}\nextendedKeyUsage=serverAuth\n")  # fmt: skip
        sign_certificate(cert_dir, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
                         "extendedKeyUsage=clientAuth\n")  # fmt: skip

    def _node_kubeconfig(self, name: str, user: str) -> Path:
        path = self.node_dir / f"{name}.kubeconfig"
        ca = (self.control.cert_dir / "ca.crt").read_bytes()
        path.write_text(yaml.safe_dump(kubeconfig_document(self.server_url, ca, user, self._tokens[name])))
        path.chmod(0o600)
        return path

    def _containerd_paths(self, tag: str) -> tuple[Path, Path, Path]:
        """(config, state, socket) of one containerd instance."""
        return self.node_dir / f"{tag}.toml", self.node_dir / f"{tag}-state", self.node_dir / f"{tag}.sock"

    def _run_containerd(self, tag: str, cri: bool) -> ServerProcess:
        config, state, socket = self._containerd_paths(tag)
        config.write_text(containerd_config(
            root=self.containerd_root, state=state, socket=socket, sandbox_image=self.nodebin.pause_image,
            runc=self.nodebin.runc, cni_bin_dir=self.nodebin.cni_bin_dir, cni_conf_dir=self.node_dir / "cni",
            can_lower_oom_score=has_capability(CAP_SYS_RESOURCE), cri=cri,
        ))  # fmt: skip
        server = start_server(tag, [self.nodebin.containerd, "--config", config], self.node_dir)
        self.servers[tag] = server
        deadline = time.monotonic() + 30
        while self._ctr(socket, "version", check=False).returncode != 0:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"{tag} did not start:\n{server.log_tail(40)}")
            time.sleep(0.2)
        return server

    def _start_containerd(self) -> None:
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        (self.node_dir / "cni").mkdir(exist_ok=True)
        (self.node_dir / "cni" / "10-frugal.conflist").write_text(
            json.dumps(cni_conflist(ipam_dir=self.node_dir / "cni-ipam"), indent=2)
        )
        # Containers a previous run left in the shared store are removed with the CRI plugin off: it
        # would otherwise load them as its own at start-up.
        if (self.containerd_root / "io.containerd.metadata.v1.bolt").exists():
            janitor = self._run_containerd("containerd-janitor", cri=False)
            self.leftover_containers = self._remove_containers(
                self._containerd_paths("containerd-janitor")[2]
            )
            janitor.stop()
            del self.servers["containerd-janitor"]
        self._run_containerd("containerd", cri=True)
        held = self._ctr(self.containerd_socket, "containers", "ls", "-q").stdout.split()
        if held:
            raise NodeError(f"containerd still holds containers of an earlier run: {held}")

    def _start_coredns(self) -> None:
        ready = free_port()
        self._health["CoreDNS"] = f"http://127.0.0.1:{ready}/ready"
        path = self.node_dir / "Corefile"
        path.write_text(corefile(kubeconfig=self._node_kubeconfig("coredns", "frugal-coredns"),
                                 health_port=free_port(), ready_port=ready))  # fmt: skip
        self.servers["coredns"] = start_server(
            "coredns", [self.nodebin.coredns, "-conf", path], self.node_dir
        )

    def _start_kube_proxy(self) -> None:
        healthz = free_port()
        self._health["kube-proxy"] = f"http://127.0.0.1:{healthz}/healthz"
        path = self.node_dir / "kube-proxy.yaml"
        config = kube_proxy_config(kubeconfig=self._node_kubeconfig("kube-proxy", "system:kube-proxy"),
                                   healthz_port=healthz, metrics_port=free_port())  # fmt: skip
        path.write_text(yaml.safe_dump(config))
        self.servers["kube-proxy"] = start_server("kube-proxy", [self.nodebin.kube_proxy, f"--config={path}", "--v=2"],
                                                  self.node_dir)  # fmt: skip

    def _start_kubelet(self) -> None:
        certs = self.control.cert_dir
        resolv = self.node_dir / "resolv.conf"
        resolv.write_text("# no upstream nameserver: pods resolve the cluster domain only\n")
        own_labels, _ = split_node_labels(self.node_labels)
        healthz = free_port()
        self._health["the kubelet"] = f"http://127.0.0.1:{healthz}/healthz"
        config = kubelet_config(
            runtime_socket=self.containerd_socket, port=free_port(), healthz_port=healthz,
            client_ca=certs / "ca.crt", tls_cert=certs / "kubelet-serving.crt", tls_key=certs / "kubelet-serving.key",
            resolv_conf=resolv, pod_logs_dir=self.node_dir / "pod-logs",
            volume_plugin_dir=self.node_dir / "volume-plugins",
            taints=[parse_taint(t) for t in self.node_taints],
        )  # fmt: skip
        path = self.node_dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        argv: list[str | Path] = [
            self.nodebin.kubelet, f"--config={path}",
            f"--kubeconfig={self._node_kubeconfig('kubelet', f'system:node:{NODE_NAME}')}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY_IP}",
            f"--root-dir={self.node_dir / 'kubelet'}", f"--cert-dir={self.node_dir / 'kubelet-certs'}", "--v=2",
        ]  # fmt: skip
        if own_labels:
            argv.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in own_labels.items()))
        self.servers["kubelet"] = start_server("kubelet", argv, self.node_dir)

    def _wait_node_ready(self) -> None:
        _, admin_labels = split_node_labels(self.node_labels)
        labelled = False
        deadline = time.monotonic() + NODE_READY_TIMEOUT_S
        waiting_for = "the Node to register"
        while time.monotonic() < deadline:
            for server in [*self.servers.values(), *self.control.servers.values()]:
                if server.proc.poll() is not None:
                    raise NodeError(
                        f"{server.name} exited with {server.proc.returncode} while waiting for {waiting_for}"
                    )
            node = self._get_json("node", NODE_NAME)
            if node is None:
                time.sleep(0.5)
                continue
            if admin_labels and not labelled:
                self.kubectl(
                    "label", "node", NODE_NAME, "--overwrite", *(f"{k}={v}" for k, v in admin_labels.items())
                )
                labelled = True
            waiting_for = node_not_ready_reason(
                node, self.node_labels, [parse_taint(t) for t in self.node_taints]
            )
            if not waiting_for:
                waiting_for = self._services_not_ready()
            if not waiting_for:
                return
            time.sleep(0.5)
        raise NodeError(
            f"node {NODE_NAME} not ready after {NODE_READY_TIMEOUT_S:.0f} s: waiting for {waiting_for}"
        )

    def _services_not_ready(self) -> str:
        for name, url in self._health.items():
            if not http_ok(url):
                return f"{name} ({url})"
        sa = self._get_json("serviceaccount", "default", namespace="default")
        root_ca = self._get_json("configmap", "kube-root-ca.crt", namespace="default")
        if sa is None or root_ca is None:
            return "the default ServiceAccount and kube-root-ca.crt (kube-controller-manager)"
        return ""

    # -- containerd --------------------------------------------------------------------------------
    def _ctr(
        self, socket: Path, *args: str | Path, check: bool = True, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        return sh(
            self.nodebin.ctr,
            "--address",
            socket,
            "--namespace",
            "k8s.io",
            *args,
            check=check,
            timeout=timeout,
        )

    def _remove_containers(self, socket: Path) -> int:
        """Kill every task and delete every container (pods' and sandboxes') in containerd's k8s.io
        namespace; returns how many containers there were."""
        if not socket.exists():
            return 0
        tasks = [
            line.split()[0]
            for line in self._ctr(socket, "tasks", "ls", "-q", check=False).stdout.splitlines()
            if line.strip()
        ]
        for task in tasks:
            self._ctr(socket, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
        for task in tasks:
            for _ in range(20):
                if self._ctr(socket, "tasks", "delete", "--force", task, check=False).returncode == 0:
                    break
                time.sleep(0.2)
        containers = self._ctr(socket, "containers", "ls", "-q", check=False).stdout.split()
        if containers:
            self._ctr(socket, "containers", "delete", *containers, check=False)
        for container in containers:  # libcni's cache of the sandboxes' results (pod network, loopback)
            remove_files(CNI_RESULTS.glob(f"*-{container}-*"))
        return len(containers)

    def _import(self, archive: Path) -> bool:
        """Import `archive` into containerd's k8s.io namespace unless every image it names is there with
        the same digest. Returns whether it imported."""
        wanted = archive_images(archive)
        if wanted and all(self._has_image(name, digest) for name, digest in wanted.items()):
            return False
        self._ctr(self.containerd_socket, "images", "import", "--snapshotter", "overlayfs", archive)
        self._forget_replaced_images()
        return True

    def _forget_replaced_images(self) -> None:
        """Delete the CRI plugin's `sha256:<id>` references to images no name points at any more.

        The CRI plugin keeps such a reference for every image it has seen; re-importing a tag moves the
        tag but leaves the old image's reference, so each rebuilt image (3.5 GB for the full one) would
        stay in the cache for good. Deleting the reference lets containerd's collector free its layers."""
        orphans = orphaned_image_refs(self.image_listing())
        if orphans:
            self._ctr(self.containerd_socket, "images", "rm", "--sync", *orphans, check=False)

    def _has_image(self, name: str, digest: str) -> bool:
        listing = self._ctr(
            self.containerd_socket, "images", "ls", f"name=={name}", check=False
        ).stdout.splitlines()[1:]
        if not listing:
            return False
        manifest_digest = listing[0].split()[2]
        kind, value = digest.split(":", 1)
        if kind == "oci":
            return manifest_digest == value
        content = self._ctr(self.containerd_socket, "content", "get", manifest_digest, check=False)
        try:
            return bool(json.loads(content.stdout)["config"]["digest"] == value)
        except (ValueError, KeyError):
            return False

    # -- cleaning up -------------------------------------------------------------------------------
    def _drain_pods(self) -> None:
        """Let the kubelet stop every pod (and tear down its network) before the node goes away."""
        if (
            self.plane is None
            or "kubelet" not in self.servers
            or self.servers["kubelet"].proc.poll() is not None
        ):
            return
        for name in ("kube-controller-manager", "kube-scheduler"):  # nothing may recreate the pods
            if name in self.plane.servers:
                self.plane.servers[name].stop()
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false",
                     check=False)  # fmt: skip
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            listing = self._ctr(self.containerd_socket, "tasks", "ls", check=False).stdout
            if "RUNNING" not in listing:
                return
            time.sleep(0.5)

    def _acquire_lock(self) -> None:
        """One node per machine (the bridge, its address and port 53 are fixed): wait for another run's."""
        path = cache_dir() / "node" / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("w")
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise NodeError(
                        f"another test run holds the node ({path}) for more than {LOCK_TIMEOUT_S:.0f} s"
                    ) from None
                time.sleep(1.0)
        self._lock = handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _write_state(self) -> None:
        self.state_file.write_text(json.dumps({"workdir": str(self.workdir), "network": self.network.saved}))

    def _clean_after_crash(self) -> None:
        """Undo what a run that died without stop() left: its processes (found by its workdir in their
        command lines), pod processes, mounts, bridge, iptables rules and sysctls."""
        if not self.state_file.exists():
            remove_bridge()  # a bridge nobody recorded cannot be ours to keep
            return
        state = json.loads(self.state_file.read_text())
        old = Path(state["workdir"])
        kill_pids(pids_with(f"{old}/"))
        kill_pod_processes_and_cgroups()
        unmount_all(old)
        remove_stale_shim_sockets()
        HostNetwork(saved=state.get("network") or {}).teardown()
        self.state_file.unlink(missing_ok=True)

    # -- helpers for tests -------------------------------------------------------------------------
    def run(
        self, argv: Sequence[str | Path], *, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.control.run(argv, check=check, input=input)

    def kubectl(
        self, *args: str | Path, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.control.kubectl(*args, check=check, input=input)

    def helm(
        self, *args: str | Path, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.control.helm(*args, check=check, input=input)

    def api_client(self) -> Any:
        return self.control.api_client()

    def image_listing(self) -> str:
        """`ctr images ls` of the node's k8s.io namespace."""
        return self._ctr(self.containerd_socket, "images", "ls").stdout

    def load_images(self, archives: Iterable[Path]) -> list[Path]:
        """Import OCI/Docker archives into the node's containerd (k8s.io namespace), skipping those
        whose images are already there with the same digest; returns the archives imported."""
        return [Path(a) for a in archives if self._import(Path(a))]

    def running_pod_uids(self) -> set[str]:
        """The pod UIDs of every container (and sandbox) containerd runs for the kubelet."""
        uids = set()
        tasks = self._ctr(self.containerd_socket, "tasks", "ls").stdout.splitlines()[1:]
        for container in [row.split()[0] for row in tasks if row.split()[2:3] == ["RUNNING"]]:
            info = self._ctr(self.containerd_socket, "containers", "info", container, check=False)
            if info.returncode == 0:  # it may have gone since the listing
                labels = json.loads(info.stdout).get("Labels") or {}
                uids.add(labels.get("io.kubernetes.pod.uid", f"(no pod: {container})"))
        return uids

    def kill_container(self, container_id: str, signal_name: str = "SIGKILL") -> None:
        """Send `signal_name` to a container's main process through containerd (`containerd://<id>`
        as the kubelet reports it): no preStop hook, no grace period, as when its process crashes."""
        self._ctr(self.containerd_socket, "tasks", "kill", "--signal", signal_name, container_id.removeprefix("containerd://"))

    def isolation_drops(self) -> int:
        """How many packets the isolation rules have dropped (from or to the bridge by another interface)."""
        total = 0
        for chain in ISOLATION_CHAINS.values():
            listing = sh("iptables", "-w", "-t", "mangle", "-L", chain, "-v", "-x", "-n").stdout.splitlines()[
                2:
            ]
            total += sum(int(row.split()[0]) for row in listing if row.split()[2:3] == ["DROP"])
        return total

    def volume_path(self, name: str) -> Path:
        return self.workdir / "volumes" / name

    def host_path_volume(
        self, name: str, size: str, access_modes: Sequence[str], owner_uid: int = 65532
    ) -> Path:
        """A directory owned by `owner_uid` and a hostPath PersistentVolume for it (no storage class),
        which a claim with no class and a fitting size and access mode binds to."""
        path = self.volume_path(name)
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, owner_uid, owner_uid)
        path.chmod(0o2775)
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(host_path_pv(name, path, size, access_modes)))
        return path

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None, timeout_s: float = 60.0
    ) -> str:
        """A namespace (with `labels`) whose default ServiceAccount exists, so pods are admitted at once."""
        document = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(labels or {})},
        }
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
        deadline = time.monotonic() + timeout_s
        while self._get_json("serviceaccount", "default", namespace=name) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"namespace {name} has no default ServiceAccount after {timeout_s:.0f} s"
                )
            time.sleep(0.3)
        return name

    def wait_pod_ready(
        self, namespace: str, selector: str, timeout_s: float = 120.0, count: int = 1
    ) -> list[dict[str, Any]]:
        """Poll until `count` pods matching `selector` are Ready; on timeout, fail with their state,
        the namespace's events and the servers' logs."""
        return self.wait_pods(
            namespace, selector, lambda pod: pod_condition(pod, "Ready"), "Ready", timeout_s, count
        )

    def wait_pods(
        self, namespace: str, selector: str, check: Callable[[dict[str, Any]], bool], what: str,
        timeout_s: float = 120.0, count: int = 1,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Poll until `count` pods matching `selector` exist and `check` holds for each."""
        deadline = time.monotonic() + timeout_s
        while True:
            pods = json.loads(
                self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
            )["items"]
            if len(pods) >= count and all(check(pod) for pod in pods):
                return list(pods)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pods {selector} in {namespace} not {what} after {timeout_s:.0f} s\n{self.describe(namespace)}"
                )
            time.sleep(0.5)

    def wait_service_endpoints(
        self, namespace: str, service: str, count: int = 1, timeout_s: float = 60.0
    ) -> None:
        """Wait until the Service's EndpointSlices list `count` ready endpoints, then for kube-proxy's
        next sync (it programs a change at most its minSyncPeriod, 1 s, after seeing it)."""
        deadline = time.monotonic() + timeout_s
        selector = f"kubernetes.io/service-name={service}"
        while True:
            slices = self.kubectl(
                "get", "endpointslices", "-n", namespace, "-l", selector, "-o", "json"
            ).stdout
            ready = [
                e for item in json.loads(slices)["items"] for e in item.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")
            ]  # fmt: skip
            if len(ready) >= count:
                time.sleep(2.0)
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"service {namespace}/{service} has {len(ready)} ready endpoints, not {count}"
                )
            time.sleep(0.5)

    def describe(self, namespace: str) -> str:
        """The namespace's pods and events and the node's logs, for a failure message."""
        pods = self.kubectl("describe", "pods", "-n", namespace, check=False).stdout
        events = self.kubectl(
            "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
        ).stdout
        return f"--- pods ---\n{pods[-6000:]}\n--- events ---\n{events[-4000:]}\n{format_tails(self.log_tails(30))}"

    def log_tail(self, name: str, lines: int = 60) -> str:
        server = self.servers.get(name) or (self.plane.servers.get(name) if self.plane else None)
        if server is None:
            return f"({name} was not started)"
        with contextlib.suppress(ValueError):
            server.log_file.flush()
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_tails(self, lines: int = 40) -> dict[str, str]:
        """Each server's log tail: the control plane's, then containerd, CoreDNS, kube-proxy and the kubelet."""
        names = [*(self.plane.servers if self.plane else {}), *self.servers]
        return {name: self.log_tail(name, lines) for name in names}

    def _get_json(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", *(["-n", namespace] if namespace else [])]
        proc = self.kubectl(*args, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None


def sign_certificate(cert_dir: Path, name: str, subject: str, extensions: str) -> None:
    """<name>.key and <name>.crt signed by the test CA in `cert_dir`."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    (cert_dir / f"{name}.ext").write_text(extensions)
    sh(
        "openssl",
        "req",
        "-new",
        *ec,
        "-keyout",
        cert_dir / f"{name}.key",
        "-out",
        cert_dir / f"{name}.csr",
        "-subj",
        subject,
    )
    sh("openssl", "x509", "-req", "-in", cert_dir / f"{name}.csr", "-CA", cert_dir / "ca.crt", "-CAkey", cert_dir / "ca.key",
       "-CAcreateserial", "-days", "7", "-extfile", cert_dir / f"{name}.ext", "-out", cert_dir / f"{name}.crt")  # fmt: skip


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def pod_condition(pod: Mapping[str, Any], kind: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def node_not_ready_reason(
    node: Mapping[str, Any], labels: Mapping[str, str], taints: Sequence[Mapping[str, str]]
) -> str:
    """What the Node still lacks ("" when Ready, labelled, tainted as asked and without the not-ready taint)."""
    status = node.get("status") or {}
    if not any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    ):
        return "the Node's Ready condition"
    have = (node.get("metadata") or {}).get("labels") or {}
    missing = {k: v for k, v in labels.items() if have.get(k) != v}
    if missing:
        return f"node labels {missing}"
    present = [
        (t.get("key"), t.get("value"), t.get("effect")) for t in (node.get("spec") or {}).get("taints") or []
    ]
    for taint in taints:
        if (taint.get("key"), taint.get("value"), taint.get("effect")) not in present:
            return f"taint {dict(taint)}"
    if any(key == "node.kubernetes.io/not-ready" for key, _, _ in present):
        return "the node lifecycle controller to lift node.kubernetes.io/not-ready"
    return ""


def format_tails(tails: Mapping[str, str]) -> str:
    return "\n".join(f"--- {name} (log tail) ---\n{text}" for name, text in tails.items())


@contextlib.contextmanager
def running_cluster(workdir: Path, **kwargs: Any) -> Iterator[RealCluster]:
    cluster = RealCluster(workdir, **kwargs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
