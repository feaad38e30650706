"""The frugal.dev/v1alpha1 API: the CRDs as the single source of validation, and typed resources.

`load_documents` and `parse_resource` reject exactly what kube-apiserver rejects (the CRDs' OpenAPI
schema and their CEL rules, read from the CRD files), apply the CRDs' defaults and return typed
pydantic models. `check` gives the defaulted document and its errors without raising.
"""

from .crds import API_VERSION, GROUP, VERSION, crd, crd_text, kinds, schema
from .field_errors import DocumentErrors, FieldError, ValidationFailed
from .loading import load_documents, parse_resource, parse_resources, parse_yaml
from .models import (
    BatchInference,
    Condition,
    HardwareProfile,
    HardwareProfileSpec,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Resource,
)
from .validation import Checked, check

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "BatchInference",
    "Checked",
    "Condition",
    "DocumentErrors",
    "FieldError",
    "HardwareProfile",
    "HardwareProfileSpec",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "Resource",
    "ValidationFailed",
    "check",
    "crd",
    "crd_text",
    "kinds",
    "load_documents",
    "parse_resource",
    "parse_resources",
    "parse_yaml",
    "schema",
]
