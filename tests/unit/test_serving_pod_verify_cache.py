"""Serving pods keep `frugal serve`'s verify cache on an emptyDir of their own, and only serving pods."""

from __future__ import annotations

from test_manifests import ARTIFACTS, DIGITS_INPUTS, GPU, IMAGE, SPEC

from frugal.operator.decision.planner import Option
from frugal.operator.manifests import jobs, pod_specs, serving_objects
from frugal.serving.serve_command import env_name


def test_every_shard_mounts_an_emptydir_and_points_the_server_at_it() -> None:
    selection = Option("int8-dynamic", "gpu-t4", 2)
    for index in range(2):
        deployment = serving_objects.desired_shard_deployment(SPEC, GPU, IMAGE, ARTIFACTS, selection, index)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[pod_specs.VERIFY_CACHE_VOLUME] == {
            "name": "verify-cache",
            "emptyDir": {"sizeLimit": pod_specs.VERIFY_CACHE_SIZE_LIMIT},
        }
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[pod_specs.VERIFY_CACHE_PATH] == {"name": "verify-cache", "mountPath": "/var/cache/frugal/verify"}
        assert "readOnly" not in mounts[pod_specs.VERIFY_CACHE_PATH]  # the server writes it
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[env_name("--verify-cache-dir")] == pod_specs.VERIFY_CACHE_PATH
        # the artifacts stay read-only: the cache is the only thing the server writes besides /tmp
        artifacts_mount = next(m for m in container["volumeMounts"] if m["name"] == "artifacts")
        assert artifacts_mount.get("readOnly") is True


def test_jobs_and_the_front_get_no_verify_cache() -> None:
    job = jobs.desired_compression_job(SPEC, GPU, IMAGE, ARTIFACTS)
    front = serving_objects.desired_front(SPEC, IMAGE, inputs=DIGITS_INPUTS)
    for pod in (job["spec"]["template"]["spec"], front["spec"]["template"]["spec"]):
        assert pod_specs.VERIFY_CACHE_VOLUME not in {v["name"] for v in pod["volumes"]}
        for container in pod["containers"]:
            assert pod_specs.VERIFY_CACHE_ENV not in {e["name"] for e in container["env"]}
