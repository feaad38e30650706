"""Which image each pod runs: the three targets of the repository's Containerfile.

- ``full`` (torch and the compression stack) runs the operator and the compression Jobs;
- ``serving`` (ONNX Runtime, no torch) runs serving shards, the front, profiling and batch Jobs;
- ``gpu`` (onnxruntime-gpu, torch's CUDA build) runs every pod of an NVIDIA GPU pool.

One repository holds all three: ``REPO:TAG`` is full, ``REPO:TAG-serving`` and ``REPO:TAG-gpu`` the
others (the chart and ``scripts/build-images.sh`` name them so). A HardwareProfile's ``spec.image``
still overrides the serving-side image for its pool.
"""

from __future__ import annotations

from frugal.operator.api.spec import HardwareProfileSpec

DEFAULT_REPOSITORY = "ghcr.io/frugal-dev/frugal"
DEFAULT_TAG = "0.1.0"
DEFAULT_FULL = f"{DEFAULT_REPOSITORY}:{DEFAULT_TAG}"
GPU_KINDS = frozenset({"nvidia-gpu"})


def sibling(full: str, target: str) -> str:
    """The `target` image next to the full one: ``repo:tag`` → ``repo:tag-<target>``.

    A reference without a tag gets ``latest-<target>``; a digest reference names one image only, so
    its siblings cannot be derived and must be given (``--serving-image``, ``--gpu-image``)."""
    if "@" in full:
        raise ValueError(
            f"{full!r} is pinned by digest, so the {target} image cannot be derived from it: "
            f"give the {target} image too (--{target}-image, or the chart's operator.{target}Image)"
        )
    name, _, tag = full.rpartition(":")
    if not name or "/" in tag:  # no tag: the colon, if any, was a registry port
        return f"{full}:latest-{target}"
    return f"{name}:{tag}-{target}"


def is_gpu(profile: HardwareProfileSpec) -> bool:
    return profile.accelerator_kind in GPU_KINDS


def compression(full: str, gpu: str, profile: HardwareProfileSpec) -> str:
    """Compression needs torch: the full image, or the gpu one on a GPU pool."""
    return gpu if is_gpu(profile) else full


def serving(serving_image: str, gpu: str, profile: HardwareProfileSpec) -> str:
    """Serving-side pods (shards, profiling, batch): the profile's own image, else by its accelerator."""
    return profile.image or (gpu if is_gpu(profile) else serving_image)
