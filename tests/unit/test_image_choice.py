"""Which image each pod runs: full for compression, serving for what serves, gpu on GPU pools."""

from __future__ import annotations

from typing import Any

import pytest
from test_decide import DONE, MD, PROFILED, PROFILES, profile

from frugal.operator.api.spec import parse_hardware_profile
from frugal.operator.cluster.operator_command import OptionError, build_parser, resolve
from frugal.operator.decision.decide import ClusterState, decide
from frugal.operator.decision.operator_settings import Settings
from frugal.operator.manifests import images

SETTINGS = Settings(image="registry.example/frugal:1.2", storage_uri="file:///store", allow_host_path=True)


def images_of(objects: Any) -> dict[str, list[str]]:
    """Object name -> the images of its pod template's containers."""
    found = {}
    for obj in objects:
        template = obj.get("spec", {}).get("template", {})
        containers = template.get("spec", {}).get("containers", [])
        if containers:
            found[obj["metadata"]["name"]] = [c["image"] for c in containers]
    return found


def gpu_profile(name: str, image: str | None = None) -> Any:
    spec: dict[str, Any] = {
        "accelerator": {"kind": "nvidia-gpu", "count": 1},
        "costPerHour": "0.01",
        "power": {"idleWatts": 1, "maxWatts": 5},
    }
    if image:
        spec["image"] = image
    return parse_hardware_profile({"metadata": {"name": name}, "spec": spec})


@pytest.mark.parametrize(
    ("full", "serving"),
    [
        ("ghcr.io/frugal-dev/frugal:0.1.0", "ghcr.io/frugal-dev/frugal:0.1.0-serving"),
        ("localhost:5000/frugal:dev", "localhost:5000/frugal:dev-serving"),
        ("localhost:5000/frugal", "localhost:5000/frugal:latest-serving"),
        ("frugal", "frugal:latest-serving"),
    ],
)
def test_the_serving_image_is_the_full_images_sibling_tag(full: str, serving: str) -> None:
    assert images.sibling(full, "serving") == serving


def test_a_digest_cannot_name_its_siblings_and_the_operator_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="--serving-image"):
        images.sibling("r/frugal@sha256:" + "0" * 64, "serving")
    digest = "r/frugal@sha256:" + "0" * 64
    with pytest.raises(OptionError, match="pinned by digest"):
        resolve(build_parser().parse_args(["--image", digest]), {})
    given = resolve(
        build_parser().parse_args(["--image", digest, "--serving-image", "s@sha256:1", "--gpu-image", "g@sha256:2"]),
        {},
    )
    assert (given.settings.serving_default, given.settings.gpu_default) == ("s@sha256:1", "g@sha256:2")


def test_the_chart_variables_set_each_image() -> None:
    env = {"FRUGAL_WORKLOAD_IMAGE": "r/f:1", "FRUGAL_SERVING_IMAGE": "r/s:1", "FRUGAL_GPU_IMAGE": "r/g:1"}
    settings = resolve(build_parser().parse_args([]), env).settings
    assert (settings.image, settings.serving_default, settings.gpu_default) == ("r/f:1", "r/s:1", "r/g:1")


def test_compression_runs_the_full_image_and_serving_the_serving_image() -> None:
    first = decide(MD, PROFILES, ClusterState(), None, SETTINGS)
    assert images_of(first.apply) == {"digits-g1-compress": ["registry.example/frugal:1.2"]}
    state = ClusterState(compression=DONE, profiling={"cpu": DONE, "gpu": DONE})
    served = decide(MD, PROFILES, state, PROFILED, SETTINGS)
    assert images_of(served.apply) == {"digits-g1-shard-0": ["registry.example/frugal:1.2-serving"]}


def test_profiling_runs_the_serving_image_or_the_profiles_own() -> None:
    profiles = {"cpu": PROFILES["cpu"], "gpu": gpu_profile("gpu", image="mine/ort-cuda:12")}
    state = ClusterState(compression=DONE)
    decision = decide(MD, profiles, state, PROFILED, SETTINGS)
    assert images_of(decision.apply) == {
        "digits-g1-profile-cpu": ["registry.example/frugal:1.2-serving"],
        "digits-g1-profile-gpu": ["mine/ort-cuda:12"],
    }


def test_a_gpu_pool_runs_the_gpu_image_for_compression_and_serving() -> None:
    gpu = gpu_profile("gpu")
    assert SETTINGS.compression_image(gpu) == "registry.example/frugal:1.2-gpu"
    assert SETTINGS.serving_image_for(gpu) == "registry.example/frugal:1.2-gpu"
    cpu = profile("cpu", "0.1", 20)
    assert SETTINGS.compression_image(cpu) == "registry.example/frugal:1.2"
    assert SETTINGS.serving_image_for(cpu) == "registry.example/frugal:1.2-serving"


def test_a_front_runs_with_the_operators_placement_not_on_the_models_pool() -> None:
    from frugal.operator.api.spec import parse_model_deployment
    from frugal.operator.manifests import serving_objects

    body = {"metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "zoo://digits-mlp"}, "serving": {"hardwareProfiles": ["cpu"], "slo": {"latencyP95Ms": 20}},
                     "autoscaling": {"minReplicas": 0}}}  # fmt: skip
    md = parse_model_deployment(body)
    placement = {"nodeSelector": {"pool": "system"}, "tolerations": [{"key": "pool", "operator": "Exists"}]}
    pod = serving_objects.desired_front(md, "img", placement, inputs=())["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"} and pod["tolerations"] == placement["tolerations"]
    bare = serving_objects.desired_front(md, "img", inputs=())["spec"]["template"]["spec"]
    assert "nodeSelector" not in bare and "tolerations" not in bare
