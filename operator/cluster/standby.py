"""A replica that does not lead: it waits for the Lease, answering its liveness URL meanwhile (a
standby is live, not broken, so its probe must not restart it), and a leader that loses the Lease
stops at once (`lost`) so two never reconcile. `operator_command.run` calls these around kopf."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from frugal.operator.cluster import leader

HEALTH_PATH = "/healthz"
LOST_LEADERSHIP_EXIT = 1


def stand_by(elector: leader.Elector, stop: threading.Event, health_address: tuple[str, int] | None) -> bool:
    """Wait to lead, answering the liveness URL meanwhile (a standby is live, not broken: its probe must
    not restart it); SIGTERM or SIGINT ends the wait. True once leading."""
    import signal

    health = _health(elector, *health_address) if health_address is not None else None
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        leading = elector.wait_to_lead(stop)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if health is not None:
            health.shutdown()
            health.server_close()
    if leading and stop.is_set():  # the signal came as the Lease did: hand it straight back
        elector.release()
        return False
    return leading


def _health(elector: leader.Elector, host: str, port: int) -> Any:
    """A tiny HTTP server on the health port until this process leads (then kopf's takes the port):
    GET /healthz answers 200 while the elector keeps trying, 503 once a try hangs past a lease."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stale_after = elector.timing.lease_duration_s + 2 * elector.timing.retry_period_s

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != HEALTH_PATH:
                self.send_error(404)
                return
            live = time.monotonic() - elector.tried_at < stale_after
            body = json.dumps({"leader": False, "live": live}).encode()
            self.send_response(200 if live else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # probes every few seconds: not worth a log line
            pass

    server = ThreadingHTTPServer((host.strip("[]"), port), Health)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server


def lost(elector: leader.Elector) -> None:
    """Leadership lost (not renewed within the renew deadline, or another holds the Lease): stop at once,
    before anyone may take over, so two leaders never reconcile; the pod restarts as a standby."""
    logging.getLogger(__name__).error(
        "Lost the Lease %s/%s as %s: exiting with status %d (the pod restarts as a standby)",
        elector.namespace, elector.name, elector.identity, LOST_LEADERSHIP_EXIT,
    )  # fmt: skip
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LOST_LEADERSHIP_EXIT)
