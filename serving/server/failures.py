"""Every failure a client of the serving components can see, each carrying its own HTTP and gRPC status.

One hierarchy, as KServe's and MLServer's servers have: code anywhere in serving raises a
`ServingError` subclass with a message written for the client, and each transport maps it to its own
status in one place: `app.error_response` (REST), `grpc_transport.status_of` (gRPC) and
`front.error_response` (the front, REST only). A failure that is not a `ServingError` is a bug or a
runtime's refusal on valid-looking input: `unexpected` turns it into an `InferenceFailed` (500 /
INTERNAL), logged with its traceback.

| class             | HTTP | gRPC               | Retry-After |
|-------------------|------|--------------------|-------------|
| InvalidInput      | 400  | INVALID_ARGUMENT   |             |
| ModelNotFound     | 404  | NOT_FOUND          |             |
| PayloadTooLarge   | 413  | RESOURCE_EXHAUSTED |             |
| QueueFull         | 429  | RESOURCE_EXHAUSTED | 1           |
| ClientClosed      | 499  | CANCELLED          |             |
| InferenceFailed   | 500  | INTERNAL           |             |
| BadGateway        | 502  | UNAVAILABLE        |             |
| Unavailable       | 503  | UNAVAILABLE        | 1           |
|   ShuttingDown    | 503  | UNAVAILABLE        | 1           |
|   NextStageError  | 503  | UNAVAILABLE        | 1           |
|   HoldFull        | 503  | UNAVAILABLE        | 1           |
|   NoReplica       | 503  | UNAVAILABLE        | per hold    |
| DeadlineExceeded  | 504  | DEADLINE_EXCEEDED  |             |

499 is nginx's status for a client that went away: it is never sent, only kept out of the counts of
answers. gRPC codes are `grpc.StatusCode` member names, so this module needs no grpc import (the
front and the operator's local balancer import serving without the gRPC stack).

A string the client sent (a model, version, tensor or datatype name, a request-target) goes into a
message or a log line only through `echo`: one line, control characters escaped, at most
`ECHO_LIMIT` characters. Unbounded, a 100 KB name made the answer itself too large: over gRPC the
client's metadata limit dropped the stream and a NOT_FOUND arrived as RESOURCE_EXHAUSTED, the
"queue full, retry" status, for a request that can never succeed.
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar, Literal

log = logging.getLogger("frugal.serving")

ECHO_LIMIT = 200  # characters of a client's string quoted in an error message or a log line


def one_line(text: object, limit: int = 300) -> str:
    """`text` fit for one log line: whitespace runs (newlines included) as one space, other control
    characters escaped, at most `limit` characters (what a client sent may be in it)."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    flat = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def echo(text: object) -> str:
    """Something the client sent, fit to quote back in an error message or a log line (`one_line`,
    at most `ECHO_LIMIT` characters)."""
    return one_line(text, ECHO_LIMIT)


GrpcCode = Literal[
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "CANCELLED",
    "INTERNAL",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
]


class ServingError(Exception):
    """A failure a client sees: `str(error)` is the message it reads, the class says the status."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[GrpcCode] = "INTERNAL"
    retry_after_s: int | None = None  # seconds, for a Retry-After header; None: no header

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(ServingError, ValueError):
    """A request the protocol or the model's signature does not allow; the message says what to change."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


ProtocolError = InvalidInput  # the codecs' name for it


class ModelNotFound(ServingError):
    """The request names a model or a version this server does not serve."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServingError):
    """The request body is over the server's limit (gRPC's own refusal of a large message has this code)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class QueueFull(ServingError):
    """The batch queue is at its bound; the client should retry shortly."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    retry_after_s = 1


class ClientClosed(ServingError):
    """The client went away before its request arrived; nobody is left to answer."""

    http_status = 499
    grpc_code = "CANCELLED"


class InferenceFailed(ServingError):
    """A runtime failure on valid-looking input (e.g. ONNX Runtime rejects a value)."""


class BadGateway(ServingError):
    """The front reached a replica, but the exchange with it failed (it may have run the request)."""

    http_status = 502
    grpc_code = "UNAVAILABLE"


class Unavailable(ServingError):
    """The request cannot be served now, but may be soon: the client should retry."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    retry_after_s = 1


class ShuttingDown(Unavailable):
    """The server is draining and takes no new work."""


class NextStageError(Unavailable):
    """The next stage of a sharded model could not answer."""


class HoldFull(Unavailable):
    """The front already holds as many requests as it may for a model waking from zero."""


class NoReplica(Unavailable):
    """No replica answered the front within its hold deadline."""


class DeadlineExceeded(ServingError):
    """The request's deadline passed before its result was ready."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


def unexpected(exc: Exception, what: str = "inference failed") -> ServingError:
    """`exc` as a client sees it: itself when it is a `ServingError`, else logged and made an
    `InferenceFailed` naming its type."""
    if isinstance(exc, ServingError):
        return exc
    log.error("%s", what, exc_info=exc)
    return InferenceFailed(f"{what}: {type(exc).__name__}: {one_line(exc)}")  # a runtime may quote input
