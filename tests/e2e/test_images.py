"""frugal's container images (Containerfile), built on this machine by ``scripts/build-images.sh`` and
run as the operator's pods run them.

Real: the images built from the hashed locks by buildah on a Debian base made here, their OCI archives
(read back by skopeo, and imported by a private containerd's ``ctr``, as a node imports them), and
containers started by podman as the pod templates ask: UID 65532, a read-only root filesystem with
only /tmp writable, every capability dropped, the commands of ``container_commands`` as the container
command. The full image compresses the digits model with the compression Job's command; the serving
image then profiles it, serves it over HTTP and gRPC, and scores a parquet batch with it. Nothing is
mocked; if an image cannot be built, every test here fails (this module never skips).

The gpu image is large and opt-in: FRUGAL_TEST_GPU_IMAGE=1 builds and checks it too.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import resource
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.datasets import load_digits

from frugal.operator.api.spec import ModelDeploymentSpec, parse_model_deployment
from frugal.operator.manifests import batch_jobs, container_commands, pod_specs, storage

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-images.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
SOURCE = yaml.safe_load((ROOT / "charts" / "frugal" / "Chart.yaml").read_text())["sources"][0]
TARGETS = ("serving", "full", *(("gpu",) if os.environ.get("FRUGAL_TEST_GPU_IMAGE") == "1" else ()))
LOCKS = {"serving": "requirements/serving.txt", "full": "requirements/all.txt", "gpu": "requirements/gpu.txt"}
# What only the full image may hold: the serving image must start without any of them.
HEAVY = ("torch", "sklearn", "transformers", "tokenizers", "scipy", "matplotlib", "kopf", "kubernetes")
# The OCI runtime, as scripts/build-images.sh picks it (crun 1.8 refuses hybrid cgroup hosts).
RUNTIME = os.environ.get("FRUGAL_BUILD_RUNTIME", "runc")
UID = pod_specs.NON_ROOT_UID
VARIANT = "int8-dynamic"  # what examples/digits.yaml's compression keeps and the planner serves
# A generation's artifacts on the artifact volume, mounted where the operator mounts it in every pod.
GENERATION = "default/digits/g1"
POD_ARTIFACTS = posixpath.join(storage.POD_MOUNT, GENERATION)
BUILD_TIMEOUT_S = 3 * 3600  # a cold build downloads torch and the CUDA wheels (several GB)

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 1200)


@dataclass(frozen=True)
class Image:
    target: str
    name: str  # the tag in podman's storage
    archive: Path  # the OCI archive


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    """The images, built (or found warm) by the script, from its KEY=value lines."""
    done = subprocess.run(
        [str(BUILD_SCRIPT), *TARGETS], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"scripts/build-images.sh failed ({done.returncode}):\n{done.stderr[-8000:]}"
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    built = {t: Image(t, values[f"IMAGE_{t.upper()}"], Path(values[f"ARCHIVE_{t.upper()}"])) for t in TARGETS}
    for image in built.values():
        assert image.archive.is_file(), image
    return built


def test_a_second_run_finds_every_image_warm(images: dict[str, Image]) -> None:
    """An unchanged tree is not rebuilt: the script answers from its cache, with the same lines."""
    written = {target: image.archive.stat().st_mtime_ns for target, image in images.items()}
    done = subprocess.run(
        [str(BUILD_SCRIPT), *TARGETS], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    for target, image in images.items():
        assert (values[f"IMAGE_{target.upper()}"], values[f"ARCHIVE_{target.upper()}"]) == (
            image.name,
            str(image.archive),
        )
        assert f"{target}: {image.name} is up to date" in done.stderr, done.stderr[-2000:]
    # nothing was written again: each archive is the file the first run left
    assert {target: image.archive.stat().st_mtime_ns for target, image in images.items()} == written
    # the same lines in <cache>/images/images.env, beside the archives
    env_file = images["serving"].archive.parent / "images.env"
    recorded = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert values.items() <= recorded.items()
    # stdout and the file hold these lines and nothing else: scripts read them as they are
    names = re.compile(r"(IMAGE|ARCHIVE)_(SERVING|FULL|GPU)")
    assert all(names.fullmatch(name) for name in [*recorded, *values]), (recorded, done.stdout)
    assert len(done.stdout.splitlines()) == len(values) == 2 * len(TARGETS), done.stdout


@pytest.fixture(scope="module")
def md() -> ModelDeploymentSpec:
    """examples/digits.yaml's ModelDeployment, whose pods' commands the containers run."""
    return parse_model_deployment(next(yaml.safe_load_all((ROOT / "examples" / "digits.yaml").read_text())))


# ---------------------------------------------------------------------------------- running images


def rlimits() -> list[str]:
    """podman's default rlimits for root (2^20 files and processes) need CAP_SYS_RESOURCE, which a
    sandboxed root may lack: ask for this process's own hard limits (processes capped at pid_max, as
    podman caps its own)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nofile = 1 << 20 if nofile == resource.RLIM_INFINITY else nofile
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def pod_flags() -> list[str]:
    """`podman run` flags for the operator's pod and container security contexts and scratch env."""
    pod, container = pod_specs.POD_SECURITY, pod_specs.CONTAINER_SECURITY
    assert container["readOnlyRootFilesystem"] and container["capabilities"] == {"drop": ["ALL"]}
    assert not container["allowPrivilegeEscalation"] and pod["runAsUser"] == pod["runAsGroup"] == UID
    flags = [
        "--runtime", RUNTIME, *rlimits(),
        "--user", f"{pod['runAsUser']}:{pod['runAsGroup']}",
        "--read-only", "--read-only-tmpfs=false",
        # the scratch emptyDir: the only writable path of the root filesystem
        "--tmpfs", f"{pod_specs.SCRATCH_PATH}:rw,mode=1777,size=512m",
        "--cap-drop", "all", "--security-opt", "no-new-privileges",
    ]  # fmt: skip
    for variable in pod_specs.SCRATCH_ENV:
        flags += ["--env", f"{variable['name']}={variable['value']}"]
    return flags


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert done.returncode == 0, (
            f"podman {' '.join(args)[:300]} -> {done.returncode}\n{done.stderr[-4000:]}"
        )
    return done


def run(
    image: Image, command: Sequence[str], *flags: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`command` as a pod's container command (it replaces the entrypoint; the image's CMD is dropped)."""
    return podman(
        "run", "--rm", "--network", "none", *pod_flags(), *flags,
        "--entrypoint", json.dumps(list(command)), image.name,
        timeout=timeout, check=check,
    )  # fmt: skip


def python_json(image: Image, code: str, *flags: str) -> Any:
    """Run `code` in the image's python as a pod would; it prints one JSON value."""
    return json.loads(run(image, ["python", "-c", code], *flags).stdout)


def volume(path: Path, target: str, writable: bool = False) -> list[str]:
    """A host directory as a pod volume: owned by the pod's user when the pod writes to it (as fsGroup
    makes a claim writable), readable by anyone otherwise."""
    for item in [path, *path.rglob("*")]:
        if writable:
            shutil.chown(item, UID, UID)
        item.chmod(item.stat().st_mode | 0o555 if item.is_dir() else item.stat().st_mode | 0o444)
    return ["--volume", f"{path}:{target}:{'rw' if writable else 'ro'}"]


def locked(lock: Path) -> dict[str, str]:
    """name -> version of every package a hashed lock pins."""
    pins = {}
    for line in lock.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", line):
            pins[canonical(match[1])] = match[2]
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url: str, body: Any | None = None, timeout: float = 10) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def digits() -> np.ndarray:
    """scikit-learn's digits as the zoo model reads them: 64 intensities scaled to [0, 1], FP32."""
    return (load_digits().data / 16.0).astype(np.float32)


def reference(volume: Path, x: np.ndarray) -> np.ndarray:
    """The variant's logits from ONNX Runtime in this process."""
    session = ort.InferenceSession(
        str(volume / GENERATION / f"variants/{VARIANT}/model.onnx"), providers=["CPUExecutionProvider"]
    )
    return np.asarray(session.run(["logits"], {"input": x})[0])


# ------------------------------------------------------------------------------------------- locks


def test_the_image_locks_pin_the_versions_of_all_txt() -> None:
    """serving.txt is a subset of all.txt and gpu.txt is all.txt with onnxruntime-gpu (and the CUDA
    libraries only it needs) for onnxruntime, each at all.txt's versions: scripts/upgrade-deps.sh
    compiles them together, and an image must not run other versions than the suite passed on."""
    full = locked(ROOT / LOCKS["full"])
    serving, gpu = locked(ROOT / LOCKS["serving"]), locked(ROOT / LOCKS["gpu"])
    assert {name: full.get(name) for name in serving} == serving
    assert not {"torch", "scikit-learn", "transformers", "scipy", "kopf", "kubernetes"} & set(serving)
    assert set(full) - set(gpu) == {"onnxruntime"}
    assert {name: version for name, version in gpu.items() if name in full} == {
        name: version for name, version in full.items() if name != "onnxruntime"
    }
    extra = set(gpu) - set(full)
    assert "onnxruntime-gpu" in extra and all(n.startswith("nvidia-") for n in extra - {"onnxruntime-gpu"}), (
        extra
    )


# ------------------------------------------------------------------------------------ image config


@pytest.mark.parametrize("target", TARGETS)
def test_the_image_runs_as_65532_with_the_frugal_entrypoint_and_its_labels(
    images: dict[str, Image], target: str
) -> None:
    image = images[target]
    assert image.name == f"localhost/frugal:{VERSION}" + ("" if target == "full" else f"-{target}")
    done = subprocess.run(
        ["skopeo", "inspect", "--config", f"oci-archive:{image.archive}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)["config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["frugal"]
    env = dict(item.split("=", 1) for item in config["Env"])
    # the pods' commands start with `frugal` or `python`: both must be the venv's
    assert env["PATH"].split(":")[0] == "/opt/frugal/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["HOME"] == env["TMPDIR"] == "/tmp"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.source"] == SOURCE
    assert labels["org.opencontainers.image.version"] == VERSION
    revision = labels["org.opencontainers.image.revision"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision), revision
    commit = revision.removesuffix("-dirty") + "^{commit}"
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", commit], capture_output=True, check=False
    )
    assert known.returncode == 0, f"revision {revision} is no commit of this repository"


@pytest.mark.parametrize("target", TARGETS)
def test_the_installed_packages_are_exactly_the_lock(images: dict[str, Image], target: str) -> None:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    installed = {canonical(name): version for name, version in python_json(images[target], code).items()}
    expected = locked(ROOT / LOCKS[target]) | {"frugal": VERSION}
    assert installed == expected, {
        "missing": sorted(set(expected) - set(installed)),
        "unexpected": sorted(set(installed) - set(expected)),
        "other version": sorted(n for n in set(expected) & set(installed) if expected[n] != installed[n]),
    }


def test_the_serving_image_has_no_torch_and_the_full_image_has_it(images: dict[str, Image]) -> None:
    code = "import json, os, sysconfig; print(json.dumps(os.listdir(sysconfig.get_paths()['purelib'])))"
    serving = set(python_json(images["serving"], code))
    full = set(python_json(images["full"], code))
    assert not serving & set(HEAVY), serving & set(HEAVY)
    assert set(HEAVY) <= full, set(HEAVY) - full
    assert {"onnxruntime", "numpy", "pyarrow", "grpc", "frugal"} <= serving


def test_the_serving_image_imports_every_serving_module_and_writes_nothing_into_the_image(
    images: dict[str, Image],
) -> None:
    """Every frugal.serving module and its libraries import without torch; with bytecode writing on and
    as root (who could write anywhere), nothing lands outside /tmp: the image's bytecode is complete."""
    name = f"frugal-e2e-imports-{uuid.uuid4().hex[:8]}"
    code = (
        "import importlib, json, pkgutil, sys; import frugal.serving as s\n"
        "names = [m.name for m in pkgutil.walk_packages(s.__path__, 'frugal.serving.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "libs = ['onnxruntime', 'onnx', 'numpy', 'pyarrow.parquet', 'grpc', 'aiohttp', 'uvloop', 'orjson',\n"
        "        'prometheus_client', 'tritonclient.grpc', 'pynvml', 'pydantic', 'yaml', 'jsonschema',\n"
        "        'celpy', 'rich', 'frugal.operator.main']\n"
        "for n in names + libs: importlib.import_module(n)\n"
        f"heavy = [n for n in {HEAVY!r} if n in sys.modules]\n"
        "print(json.dumps({'modules': len(names), 'heavy': heavy}))"
    )
    try:
        done = podman(
            "run", "--name", name, "--network", "none", "--runtime", RUNTIME, *rlimits(), "--user", "0:0",
            "--env", "PYTHONDONTWRITEBYTECODE=", "--entrypoint", json.dumps(["python", "-c", code]),
            images["serving"].name,
        )  # fmt: skip
        result = json.loads(done.stdout)
        assert result["modules"] >= 10 and result["heavy"] == [], result
        changed = podman("diff", "--format", "json", name).stdout
        paths = [p for kind in json.loads(changed or "{}").values() for p in kind]
        outside = [p for p in paths if p.startswith(("/opt", "/usr"))]
        assert outside == [], outside[:20]
    finally:
        podman("rm", "--force", name, check=False)


def test_the_commands_the_operator_runs_start_in_their_image(images: dict[str, Image]) -> None:
    serving = [
        ["frugal", "--help"],
        ["frugal", "version"],
        ["frugal", "serve", "--help"],
        ["frugal", "front", "--help"],
        ["frugal", "batch-worker", "--help"],
        ["frugal", "batch-aggregate", "--help"],
        ["python", "-m", "frugal.serving.profiling", "--help"],
    ]
    full = [["frugal", "operator", "--help"], ["frugal", "compress", "--help"]]
    for target, commands in (("serving", serving), ("full", full)):
        for command in commands:
            done = run(images[target], command, check=False)
            assert done.returncode == 0, (target, command, done.stderr[-3000:])
            assert ("usage:" in done.stdout) or command[1] == "version", (target, command, done.stdout[:500])
    version = run(images["serving"], ["frugal", "version"]).stdout
    assert VERSION in version


# ---------------------------------------------------------------------------------- the model's path


@pytest.fixture(scope="module")
def artifacts(
    images: dict[str, Image], md: ModelDeploymentSpec, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The artifact volume, holding the digits model compressed by the compression Job's command in
    the full image."""
    out = tmp_path_factory.mktemp("artifacts")
    done = run(
        images["full"],
        container_commands.compress(md, POD_ARTIFACTS),
        *volume(out, storage.POD_MOUNT, True),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    manifest = json.loads((out / GENERATION / "manifest.json").read_text())
    assert VARIANT in {v["name"] for v in manifest["variants"]}, manifest["variants"]
    return out


def test_the_profiling_job_measures_the_model_in_the_serving_image(
    images: dict[str, Image], md: ModelDeploymentSpec, artifacts: Path, tmp_path: Path
) -> None:
    writable = tmp_path / "artifacts"
    shutil.copytree(artifacts, writable)
    command = container_commands.profile(POD_ARTIFACTS, "local-cpu", md, "CPUExecutionProvider")
    done = run(images["serving"], command, *volume(writable, storage.POD_MOUNT, True), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    profile = json.loads((writable / GENERATION / "profiles" / "local-cpu.json").read_text())
    assert VARIANT in json.dumps(profile), profile


@contextmanager
def container(image: Image, command: Sequence[str], *flags: str) -> Iterator[str]:
    """A detached pod-like container running `command`; yields its name, removes it afterwards."""
    name = f"frugal-e2e-{command[1]}-{uuid.uuid4().hex[:8]}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        *pod_flags(),
        *flags,
        "--entrypoint",
        json.dumps(list(command)),
        image.name,
    )
    try:
        yield name
    finally:
        podman("rm", "--force", name, check=False)


def wait_ready(base: str, name: str, timeout: float = 120) -> None:
    """Until GET base/v2/health/ready answers 200; fails with the container's log if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = http(f"{base}/v2/health/ready", timeout=2)
        except OSError:
            status = 0
        if status == 200:
            return
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running" and time.monotonic() < deadline, (
            state,
            podman("logs", name).stderr[-4000:],
        )
        time.sleep(0.5)


def infer(base: str, model: str, x: np.ndarray) -> np.ndarray:
    """One OIP REST inference of `x` as the model's 'input'; its 'logits'."""
    request = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    status, body = http(f"{base}/v2/models/{model}/infer", request)
    assert status == 200, body[:2000]
    [output] = json.loads(body)["outputs"]
    assert output["name"] == "logits" and output["shape"] == [len(x), 10], output["shape"]
    return np.asarray(output["data"], dtype=np.float32).reshape(len(x), 10)


def stop_cleanly(name: str) -> None:
    """SIGTERM, as the kubelet stops a pod: the process drains and exits 0."""
    podman("stop", "--time", "20", name, timeout=60)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert code == "0", (code, podman("logs", name).stderr[-3000:])


def test_the_serving_image_serves_the_model_and_fronts_it_read_only_as_65532(
    images: dict[str, Image], md: ModelDeploymentSpec, artifacts: Path
) -> None:
    """`frugal serve` as a shard pod runs it (HTTP, gRPC, metrics), then `frugal front` before it, as the
    front of a model that scales to zero runs it: both from the serving image, on podman's bridge."""
    http_port, grpc_port, front_port = free_port(), free_port(), free_port()
    cache = pod_specs.VERIFY_CACHE_PATH
    serve = container_commands.serve(md, POD_ARTIFACTS, VARIANT, 0, 1, None)
    server_flags = [
        *volume(artifacts, storage.POD_MOUNT),
        "--tmpfs", f"{cache}:rw,mode=1777,size=8m", "--env", f"{pod_specs.VERIFY_CACHE_ENV}={cache}",
        "--publish", f"127.0.0.1:{http_port}:{container_commands.SERVING_PORT}",
        "--publish", f"127.0.0.1:{grpc_port}:{container_commands.GRPC_PORT}",
    ]  # fmt: skip
    x = digits()[:5]
    with container(images["serving"], serve, *server_flags) as server:
        base = f"http://127.0.0.1:{http_port}"
        wait_ready(base, server)
        np.testing.assert_allclose(
            infer(base, md.model_name, x), reference(artifacts, x), rtol=1e-4, atol=1e-4
        )
        status, metrics = http(f"{base}/metrics")
        assert status == 200 and b"frugal_" in metrics
        assert grpc_ready(f"127.0.0.1:{grpc_port}", md.model_name)

        address = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", server).stdout.strip()
        upstream = f"http://{address}:{container_commands.SERVING_PORT}"
        front = container_commands.front(md, upstream, 30, hold_requests=8, max_body_bytes=1024 * 1024)
        publish = f"127.0.0.1:{front_port}:{container_commands.SERVING_PORT}"
        with container(images["serving"], front, "--publish", publish) as fronted:
            front_base = f"http://127.0.0.1:{front_port}"
            wait_ready(front_base, fronted)
            np.testing.assert_allclose(
                infer(front_base, md.model_name, x), reference(artifacts, x), rtol=1e-4, atol=1e-4
            )
            stop_cleanly(fronted)
        stop_cleanly(server)


def grpc_ready(target: str, model: str) -> bool:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(target)
    try:
        return bool(client.is_server_ready() and client.is_model_ready(model))
    finally:
        client.close()


def test_a_parquet_batch_runs_in_the_serving_image(
    images: dict[str, Image], artifacts: Path, tmp_path: Path
) -> None:
    """`frugal batch-worker` then `frugal batch-aggregate`, as the BatchInference Jobs run them."""
    x = digits()[:300]
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    pq.write_table(pa.table({"input": pa.array(list(x), pa.list_(pa.float32()))}), data / "digits.parquet")
    config = {
        "input": "/data/digits.parquet", "output": "/out/run", "artifacts": POD_ARTIFACTS, "variant": VARIANT,
        "batchSize": 32, "rowsPerShard": 128,
    }  # fmt: skip
    flags = [
        *volume(artifacts, storage.POD_MOUNT), *volume(data, "/data"), *volume(out, "/out", True),
        "--env", f"{batch_jobs.CONFIG_ENV}={json.dumps(config)}", "--env", "JOB_COMPLETION_INDEX=0",
    ]  # fmt: skip
    for command in (["frugal", "batch-worker", "--count", "1"], ["frugal", "batch-aggregate"]):
        done = run(images["serving"], command, *flags, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-4000:])
    with np.load(out / "run" / "predictions.npz") as predictions:
        got = predictions["logits"]
    # dynamic INT8 quantizes each batch on its own: compare batch by batch (shards of 128 rows are 4
    # batches of 32, so the batches start every 32 rows)
    expected = np.concatenate([reference(artifacts, x[s : s + 32]) for s in range(0, len(x), 32)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- distribution


def test_a_private_containerd_imports_the_serving_archive(images: dict[str, Image], tmp_path: Path) -> None:
    """What a node does with the archive: `ctr -n k8s.io images import` (containerd 1.6)."""
    # a short path (a unix socket's must be), removed afterwards with the unpacked image
    state = Path(f"/tmp/frugal-ctrd-{uuid.uuid4().hex[:8]}")
    state.mkdir()
    socket_path = state / "containerd.sock"
    config = tmp_path / "containerd.toml"
    config.write_text(
        f'version = 2\nroot = "{state / "root"}"\nstate = "{state / "state"}"\n'
        # `ctr images import` needs the content and image services only: no CRI beside the node's
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket_path}"\n'
    )
    log = (tmp_path / "containerd.log").open("w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        ctr = ["ctr", "--address", str(socket_path), "--namespace", "k8s.io"]
        deadline = time.monotonic() + 60
        while subprocess.run([*ctr, "version"], capture_output=True, check=False).returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (
                tmp_path / "containerd.log"
            ).read_text()
            time.sleep(0.5)
        image = images["serving"]
        done = subprocess.run(
            [*ctr, "images", "import", str(image.archive)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        listed = subprocess.run(
            [*ctr, "images", "ls", "--quiet"], capture_output=True, text=True, check=True
        ).stdout
        assert image.name in listed.split(), listed
    finally:
        daemon.terminate()
        daemon.wait(60)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------------------------- gpu


@pytest.mark.skipif("gpu" not in TARGETS, reason="the gpu image is opt-in: FRUGAL_TEST_GPU_IMAGE=1")
def test_the_gpu_image_shares_the_full_images_layers_and_links_its_cuda_libraries(
    images: dict[str, Image],
) -> None:
    def layers(image: Image) -> list[str]:
        done = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", image.name)
        return list(json.loads(done.stdout))

    full, gpu = layers(images["full"]), layers(images["gpu"])
    # base, user, lock, locked packages: the full image's layers but its last two (frugal itself)
    assert gpu[: len(full) - 2] == full[:-2]
    code = (
        "import json, subprocess, onnxruntime, pathlib; "
        "lib = pathlib.Path(onnxruntime.__file__).parent / 'capi' / 'libonnxruntime_providers_cuda.so'; "
        "out = subprocess.run(['ldd', str(lib)], capture_output=True, text=True).stdout; "
        "print(json.dumps([l.split()[0] for l in out.splitlines() if 'not found' in l]))"
    )
    # everything but the driver's libcuda (the node provides it) resolves inside the image
    assert python_json(images["gpu"], code) == ["libcuda.so.1"]
