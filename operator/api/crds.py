"""The CRDs shipped as package data: the single source of the schemas and CEL rules."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

CRD_PACKAGE = "frugal.operator.crds"
CRD_FILES = ("modeldeployment.yaml", "hardwareprofile.yaml", "batchinference.yaml")
GROUP = "frugal.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

Schema = dict[str, Any]


def crd_text(filename: str) -> str:
    return resources.files(CRD_PACKAGE).joinpath(filename).read_text(encoding="utf-8")


@functools.cache
def _crds() -> dict[str, dict[str, Any]]:
    loaded = (yaml.safe_load(crd_text(filename)) for filename in CRD_FILES)
    return {crd["spec"]["names"]["kind"]: crd for crd in loaded}


def kinds() -> tuple[str, ...]:
    return tuple(_crds())


def crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition for `kind` (ModelDeployment, HardwareProfile or BatchInference)."""
    return _crds()[kind]


def schema(kind: str, version: str = VERSION) -> Schema:
    """The openAPIV3Schema of `kind` at `version`."""
    for entry in crd(kind)["spec"]["versions"]:
        if entry["name"] == version:
            found: Schema = entry["schema"]["openAPIV3Schema"]
            return found
    raise KeyError(f"{kind} has no version {version}")
