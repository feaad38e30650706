"""What the operator tells a model's front about waking the model, and how the front reads it. Pure;
the standard library only.

The front of a model that may scale to zero wakes the model itself when it holds a request: it scales
each of the live revision's shard Deployments from 0 to 1 replica through the ``deployments/scale``
subresource. Which Deployments those are moves with the live revision (a re-planning rollover, a new
generation), and the front must not restart when it moves, so the operator writes their names on the
Service the front forwards to (``<name>-live``, whose selector moves at the same moment), under
`WAKE_ANNOTATION`, comma-separated, the front shard first. The front reads that Service when it wakes
the model; its Role lets it get that one Service and scale exactly those Deployments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WAKE_ANNOTATION = "frugal.dev/wake-deployments"
FIELD_MANAGER = "frugal-front"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def wake_annotation(deployments: Iterable[str]) -> str:
    """The annotation's value for these Deployment names (each a DNS label; at least one)."""
    names = list(dict.fromkeys(deployments))
    if not names or not all(_DNS_LABEL.match(name) for name in names):
        raise ValueError(f"a wake list needs one or more Deployment names (DNS labels), not {names!r}")
    return ",".join(names)


def deployments_to_wake(value: str | None) -> tuple[str, ...]:
    """The Deployment names in an annotation's value, in order; what is not a DNS label is left out."""
    parts = (part.strip() for part in (value or "").split(","))
    return tuple(dict.fromkeys(part for part in parts if _DNS_LABEL.match(part)))
