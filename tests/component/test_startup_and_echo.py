"""Hostile and mistaken input at the edges of `frugal serve`, `frugal front` and `frugal operator` (issue 29).

Two defect classes, each test naming its own:
- *start-up failure as a traceback*: a process that cannot start as asked (a port in use, an artifact
  directory without a manifest, a variant the manifest does not list, a kubeconfig that does not load)
  must say so on one line naming the flag to change, and exit 2, the exit code every `frugal` command
  gives for input it cannot use (never a 20-line traceback, never 1, the code of a run that failed);
- *unbounded echo of a client's string*: what a client sent (a model, version, tensor or datatype name)
  quoted back in an error is one line of at most 200 characters; a 100 KB name made a gRPC NOT_FOUND
  arrive as RESOURCE_EXHAUSTED (the "queue full, retry" status) once the client's metadata limit dropped
  the stream, so a retrying client retried a request that can never succeed.

Real parts only: the commands run as subprocesses on 127.0.0.1, the server runs ONNX Runtime on a small
MLP built with onnx.helper, the clients are real HTTP and gRPC clients.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from serving_support import Server, http, mlp, running_server, serve_command, write_artifacts
from tritonclient.grpc import service_pb2 as pb

MODEL = "digits"
LONG = "n" * 100_000  # a name no server serves, far over gRPC's default 8 KiB metadata limit
ECHO_LIMIT = 200
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifacts(tmp_path_factory.mktemp("artifacts"), MODEL, {"fp32": mlp((4, 8, 3))})


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def refusal(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line `command` printed on stderr about why it did not start (its log lines aside), after
    checking it exited 2 without a traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(said) == 1 and said[0].startswith(f"{command}: "), done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    return said[0]


def run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------- start-up failures: one line, exit 2


def test_serve_on_a_port_in_use_says_so_on_one_line_and_exits_2(artifacts: Path, taken_port: int) -> None:
    """Defect class: start-up failure as a traceback (a REST port already in use)."""
    done = run([*serve_command(artifacts, "fp32"), "--port", str(taken_port)])
    assert refusal(done, "frugal serve") == f"frugal serve: port {taken_port} is in use: pass another --port"


def test_serve_on_a_grpc_port_in_use_says_so_on_one_line_and_exits_2(artifacts: Path, taken_port: int) -> None:
    """Defect class: start-up failure as a traceback (a gRPC port already in use; grpc's C core must not
    get to log its own failed bind either)."""
    done = run([*serve_command(artifacts, "fp32"), "--grpc-port", str(taken_port)])
    line = refusal(done, "frugal serve")
    assert line.startswith(f"frugal serve: port {taken_port} is in use: pass another --grpc-port"), line


def test_serve_without_a_manifest_names_artifacts_and_exits_2(tmp_path: Path) -> None:
    """Defect class: start-up failure with the run-failed exit code (a missing artifact directory
    exited 1, the code of a run that failed, not 2, the code of input it cannot use)."""
    done = run(serve_command(tmp_path / "nowhere", "fp32"))
    line = refusal(done, "frugal serve")
    assert "manifest.json is missing" in line and "--artifacts" in line, line


def test_serve_of_a_variant_not_in_the_manifest_names_variant_and_exits_2(artifacts: Path) -> None:
    """Defect class: start-up failure with the run-failed exit code (an unknown variant exited 1)."""
    done = run(serve_command(artifacts, "int4"))
    line = refusal(done, "frugal serve")
    assert "variant 'int4' is not in the manifest (variants: fp32)" in line
    assert line.endswith("pass another --variant"), line


def test_front_on_a_port_in_use_says_so_on_one_line_and_exits_2(taken_port: int) -> None:
    """Defect class: start-up failure as a traceback (the front's port already in use)."""
    command = [sys.executable, "-m", "frugal.serving.front", "--upstream", "http://127.0.0.1:9",
               "--model-name", MODEL, "--port", str(taken_port)]  # fmt: skip
    done = run(command)
    assert refusal(done, "frugal front") == f"frugal front: port {taken_port} is in use: pass another --port"


def test_front_with_an_upstream_that_is_no_url_refuses_to_start() -> None:
    """Defect class: start-up failure left for later (an --upstream that is no URL started a front that
    answered every request 502)."""
    command = [sys.executable, "-m", "frugal.serving.front", "--upstream", "md-live:8080", "--model-name",
               MODEL, "--port", "0"]  # fmt: skip
    done = run(command, timeout=20)
    assert done.returncode == 2 and "--upstream" in done.stderr.splitlines()[-1], done.stderr


def test_an_unknown_log_level_refuses_to_start(artifacts: Path) -> None:
    """Defect class: start-up failure as a traceback (the front's `--log-level LOUD` ended in logging's
    ValueError) or ignored (`frugal serve` served at INFO)."""
    front = [sys.executable, "-m", "frugal.serving.front", "--upstream", "http://127.0.0.1:9", "--model-name",
             MODEL, "--port", "0"]  # fmt: skip
    for command in (serve_command(artifacts, "fp32"), front):
        done = run([*command, "--log-level", "LOUD"], timeout=20)
        assert done.returncode == 2 and "--log-level LOUD" in done.stderr.splitlines()[-1], done.stderr


def operator_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "frugal.operator.cluster.operator_command", "--metrics-port", "0",
            "--health-port", "0", *extra]  # fmt: skip


def operator_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}


@pytest.mark.parametrize("content", [None, "clusters: [\n", "{}"], ids=["missing", "not-yaml", "empty"])
def test_operator_with_a_kubeconfig_that_does_not_load_names_kubeconfig(tmp_path: Path, content: str | None) -> None:
    """Defect class: start-up failure as a traceback (a missing, unparsable or empty kubeconfig)."""
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    done = subprocess.run(operator_command("--kubeconfig", str(kubeconfig)), capture_output=True, text=True,
                          timeout=60, env=operator_env())  # fmt: skip
    line = refusal(done, "frugal operator")
    assert str(kubeconfig) in line and line.endswith("pass another --kubeconfig"), line


def test_operator_on_a_metrics_port_in_use_names_metrics_port(tmp_path: Path, taken_port: int) -> None:
    """Defect class: start-up failure as a traceback (the operator's metrics port already in use)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))  # fmt: skip
    command = operator_command("--kubeconfig", str(kubeconfig), "--metrics-port", str(taken_port),
                               "--metrics-host", "127.0.0.1")  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=operator_env())
    line = refusal(done, "frugal operator")
    assert line == f"frugal operator: port {taken_port} is in use: pass another --metrics-port", line


# ------------------------------------------------------------------- echoed client strings: bounded


@pytest.fixture(scope="module")
def server(artifacts: Path) -> Iterator[Server]:
    with running_server(artifacts, "fp32") as running:
        yield running


def bounded(message: str) -> None:
    """`message` quotes what the client sent truncated and on one line."""
    assert len(message) < 3 * ECHO_LIMIT + 200, len(message)
    assert "..." in message and "\n" not in message and "\x1b" not in message, message


def test_rest_errors_quote_a_long_model_name_truncated(server: Server) -> None:
    """Defect class: unbounded echo of a client's string (the model name in the URL, into a 404)."""
    reply = http("POST", f"{server.url}/v2/models/{'m' * 5000}/infer", b"{}")
    assert reply.status == 404
    bounded(reply.json()["error"])


def test_rest_errors_quote_long_tensor_and_datatype_names_truncated_and_escaped(server: Server) -> None:
    """Defect class: unbounded echo of a client's string (tensor and datatype names in the body, into a
    400; control characters would break the answer's and the log's line)."""
    hostile = LONG + "\n\x1b[31m"
    for tensor in ({"name": hostile, "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]},
                   {"name": "input", "datatype": hostile, "shape": [1, 4], "data": [0, 0, 0, 0]},
                   {"name": "input", "datatype": "FP32", "shape": [0] * 20_000, "data": [0]}):  # fmt: skip
        body = json.dumps({"inputs": [tensor]}).encode()
        reply = http("POST", f"{server.url}/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
        assert reply.status == 400, reply.body[:300]
        bounded(reply.json()["error"])


def grpc_infer(server: Server, request: pb.ModelInferRequest) -> grpc.RpcError:
    assert server.grpc_target is not None
    with grpc.insecure_channel(server.grpc_target) as channel:
        method = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as failed:
            method(request.SerializeToString(), timeout=30)
    return failed.value


def test_grpc_not_found_for_a_long_model_name_stays_not_found(server: Server) -> None:
    """Defect class: unbounded echo of a client's string (a 100 KB model name made NOT_FOUND arrive as
    RESOURCE_EXHAUSTED, the retryable "queue full" status)."""
    request = pb.ModelInferRequest(model_name=LONG)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0.0] * 4)
    error = grpc_infer(server, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND, (error.code(), error.details()[:300])
    bounded(error.details())


def test_grpc_invalid_argument_for_a_long_input_name_stays_invalid_argument(server: Server) -> None:
    """Defect class: unbounded echo of a client's string (a 100 KB input name into INVALID_ARGUMENT)."""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=LONG, datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0.0] * 4)
    error = grpc_infer(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details()[:300])
    bounded(error.details())
