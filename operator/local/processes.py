"""Run a pod template's container on this machine, as a kubelet would, minus the image.

`frugal up` executes the very Jobs and Deployments the operator's builders produce: the container's
command and environment run as a local process. What only a cluster provides is translated:
the `frugal`/`python` programs become this interpreter, downward-API values are filled in, service
DNS names and ports are rewritten to loopback addresses, and a serving container's CPU limit (which a
pod's cgroup would make the server's thread count) is passed as its thread count.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from frugal.operator.manifests.storage import PVC_ROOT_ENV

PROGRAMS: dict[str, list[str]] = {
    "frugal": [sys.executable, "-m", "frugal.operator.main"],
    "python": [sys.executable],
    "python3": [sys.executable],
}
NAMESPACE_FIELD = "metadata.namespace"
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_argv(command: Sequence[str]) -> list[str]:
    """The container command with its program replaced by this machine's equivalent."""
    program, *rest = command
    return [*PROGRAMS.get(program, [program]), *rest]


def with_flag(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """`argv` with the value after `flag` replaced, or `flag value` appended when absent."""
    result = list(argv)
    if flag in result:
        result[result.index(flag) + 1] = value
    else:
        result += [flag, value]
    return result


def local_env(
    container: Mapping[str, Any], namespace: str, completion_index: int = 0, overrides: Mapping[str, str] = {}
) -> dict[str, str]:
    """This process's environment plus the container's env, downward-API fields resolved.

    Where claims are mounted is a fact of the pod's filesystem: a ``FRUGAL_PVC_ROOT`` this process
    already has (where the claims are on this machine) wins over the container's."""
    env = dict(os.environ)
    for entry in container.get("env", []):
        if entry["name"] == PVC_ROOT_ENV and PVC_ROOT_ENV in os.environ:
            continue
        env[entry["name"]] = _env_value(entry, namespace, completion_index)
    env.update(overrides)
    return env


def _env_value(entry: Mapping[str, Any], namespace: str, completion_index: int) -> str:
    if "value" in entry:
        return str(entry["value"])
    field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if field == NAMESPACE_FIELD:
        return namespace
    if field == COMPLETION_INDEX_FIELD:
        return str(completion_index)
    raise ValueError(f"env {entry.get('name')}: cannot resolve {entry.get('valueFrom')} outside a cluster")


def cpu_limit(container: Mapping[str, Any]) -> int | None:
    """The container's CPU limit in whole CPUs (rounded up), as a cgroup would enforce it; None without one."""
    value = str(container.get("resources", {}).get("limits", {}).get("cpu", "")).strip()
    if not value:
        return None
    cores = float(value[:-1]) / 1000.0 if value.endswith("m") else float(value)
    return max(1, math.ceil(cores - 1e-9))


def only_container(pod_template: Mapping[str, Any]) -> dict[str, Any]:
    containers = pod_template["spec"]["containers"]
    if len(containers) != 1:
        raise ValueError(f"expected one container in the pod template, found {len(containers)}")
    return dict(containers[0])


def start(argv: Sequence[str], env: Mapping[str, str], log: Any = None) -> subprocess.Popen[bytes]:
    """Start a container's process; stdout and stderr both go to `log` (a file, PIPE, or this terminal)."""
    stderr = None if log is None else subprocess.STDOUT
    return subprocess.Popen(list(argv), env=dict(env), stdout=log, stderr=stderr, stdin=subprocess.DEVNULL)
