"""Requests the client got wrong, logged as such: aiohttp logs every request it cannot parse (a negative
Content-Length, both Content-Length and chunked, no Host, a broken chunk) as an ERROR with a
traceback, so any client could flood a server's log and trip error-log alerts. :func:`quiet_client_faults`
puts a filter on the logger a server's ``web.AppRunner(logger=...)`` uses: those become one escaped,
truncated line at DEBUG; everything else passes as aiohttp logged it. Used by ``frugal serve`` and
``frugal front``.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from frugal.serving.server.failures import one_line

__all__ = ["ClientFaults", "client_caused", "one_line", "quiet_client_faults"]


def client_caused(exc: BaseException | None) -> bool:
    """A request the client got wrong: HTTP aiohttp could not parse (a negative Content-Length, both
    Content-Length and chunked, no Host, a broken chunk), which aiohttp answers 400 itself."""
    return isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500


class ClientFaults(logging.Filter):
    """On a server's log: aiohttp's "Error handling request" about a request the client got wrong becomes
    one line at DEBUG without the traceback; anything else passes as aiohttp logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not client_caused(exc):
            return True
        assert isinstance(exc, HttpProcessingError)
        said = one_line(record.getMessage())  # "Error handling request from <client>"
        record.msg = "%s (a malformed request, answered %d): %s"
        record.args = (said, exc.code, one_line(exc.message))
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)  # it was let through at ERROR


def quiet_client_faults(logger: logging.Logger) -> logging.Logger:
    """`logger` with the :class:`ClientFaults` filter, for ``web.AppRunner(logger=...)``."""
    if not any(isinstance(f, ClientFaults) for f in logger.filters):
        logger.addFilter(ClientFaults())
    return logger
