"""Deterministic names and the standard labels of every child object.

Names are a pure function of (ModelDeployment, generation, serving revision, role): a restart or a repeated event
recomputes the same names, so server-side apply updates instead of duplicating. Names longer than
the limit keep a readable prefix and end in a hash of the full name, so they stay unique.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from frugal.operator.api.spec import Owner

DNS_LABEL_MAX = 63
# An Indexed Job's pods get the hostname "<job>-<index>": keep room for the index.
JOB_NAME_MAX = 52

PART_OF = "frugal"
MANAGED_BY = "frugal-operator"
LABEL_MD = "frugal.dev/model-deployment"
LABEL_GENERATION = "frugal.dev/generation"
# Serving objects only: a re-planning rollover within a generation is a new revision of its shards.
LABEL_REVISION = "frugal.dev/revision"
LABEL_SHARD = "frugal.dev/shard"
LABEL_PROFILE = "frugal.dev/hardware-profile"
LABEL_VARIANT = "frugal.dev/variant"
LABEL_ROLE = "app.kubernetes.io/component"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

_INVALID = re.compile(r"[^a-z0-9-]+")


def bounded(*parts: str | int, limit: int = DNS_LABEL_MAX) -> str:
    """Join parts into a DNS-1123 label of at most `limit` characters (hashed suffix when cut)."""
    full = _INVALID.sub("-", "-".join(str(p) for p in parts if str(p)).lower()).strip("-")
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: limit - 9].rstrip('-')}-{digest}"


def generation_prefix(owner: Owner, generation: int | None = None) -> str:
    return f"{owner.name}-g{owner.generation if generation is None else generation}"


def compression_job(owner: Owner) -> str:
    return bounded(generation_prefix(owner), "compress", limit=JOB_NAME_MAX)


def distillation_service(owner: Owner) -> str:
    return bounded(generation_prefix(owner), "workers")


def profiling_job(owner: Owner, profile: str) -> str:
    return bounded(generation_prefix(owner), "profile", profile, limit=JOB_NAME_MAX)


def revision_prefix(owner: Owner, generation: int | None = None, revision: int | None = None) -> str:
    """The generation's prefix, plus ``-r<revision>`` after a re-planning rollover (revision 0 has none)."""
    rev = owner.revision if revision is None else revision
    return generation_prefix(owner, generation) + (f"-r{rev}" if rev else "")


def shard(owner: Owner, index: int, generation: int | None = None, revision: int | None = None) -> str:
    """Name of a shard's Deployment, Service and PodDisruptionBudget."""
    return bounded(revision_prefix(owner, generation, revision), "shard", index)


def endpoint_service(owner: Owner) -> str:
    """The stable Service clients call; it follows the generation that is ready."""
    return bounded(owner.name)


def front(owner: Owner) -> str:
    """The always-on front of a model that may scale to zero (its Deployment); not per generation."""
    return bounded(owner.name, "front")


def live_service(owner: Owner) -> str:
    """Behind a front: the Service of the live generation's first shard, which the front forwards to."""
    return bounded(owner.name, "live")


def front_identity(owner: Owner) -> str:
    """The front's ServiceAccount, and the Role and RoleBinding that let it wake the model (one name)."""
    return bounded(owner.name, "front")


def labels(owner: Owner, component: str, **extra: str) -> dict[str, str]:
    """The app.kubernetes.io/* labels plus frugal's own selectors."""
    result = {
        LABEL_NAME: f"frugal-{component}",
        LABEL_INSTANCE: owner.name,
        LABEL_ROLE: component,
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_MD: owner.name,
        LABEL_GENERATION: str(owner.generation),
    }
    result.update({key: bounded(value) if key != LABEL_SHARD else value for key, value in extra.items()})
    return result


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(owner: Owner, name: str, component: str, **extra: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component, **extra),
        "ownerReferences": [owner_reference(owner)],
    }
