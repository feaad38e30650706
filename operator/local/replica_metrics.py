"""`frugal up`'s metrics source: what Prometheus answers in a cluster, read from the replicas' own
``/metrics``.

Each read scrapes every ready replica of every running shard and parses it
(:func:`observations.parse_scrape`), keeping the previous scrape per replica; a replica that just
became ready starts from an empty scrape at that moment (its counters were zero then). The (previous,
current) pairs of each shard index become one sample (:func:`observations.samples_from_scrapes`:
Prometheus' ``rate`` and ``histogram_quantile`` over the time between two reads), summed over the
revisions running that index, as a query by the model's and shard's labels would be. The requests
held at zero replicas are the endpoint balancer's. One source answers whatever source is asked for:
on one machine there is no other.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from frugal.operator.control.port import MetricsKey, MetricsReading
from frugal.operator.decision import observations
from frugal.operator.local.replicas import Replica
from frugal.operator.local.runner import ProcessRunner

SCRAPE_TIMEOUT_SECONDS = 2.0


@dataclass
class ReplicaMetrics:
    runner: ProcessRunner
    namespace: str
    model_name: str
    clock: Callable[[], float] = time.monotonic
    # Every scrape, by replica name (the run's account reads energy counters from them).
    on_scrape: Callable[[str, observations.Scrape], None] | None = None
    _previous: dict[str, observations.Scrape] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def read(self, wanted: Sequence[MetricsKey]) -> MetricsReading:
        pairs: dict[int, list[tuple[observations.Scrape, observations.Scrape]]] = {}
        seen = set()
        for shard in self.runner.running():
            shard.reap()
            pairs.setdefault(shard.index, [])
            for replica in shard.ready():
                seen.add(replica.name)
                scrape = self.scrape(replica)
                if scrape is None:
                    continue
                assert replica.ready_at is not None
                with self._lock:
                    before = self._previous.get(replica.name) or observations.Scrape(
                        replica.ready_at, {}, {}, {}
                    )
                    self._previous[replica.name] = scrape
                pairs[shard.index].append((before, scrape))
        with self._lock:
            self._previous = {name: scrape for name, scrape in self._previous.items() if name in seen}
        samples = {
            (self.namespace, self.model_name, index): observations.samples_from_scrapes(found)
            for index, found in pairs.items()
        }
        held = {(self.namespace, self.model_name): float(self.runner.endpoint.held)}
        return MetricsReading({key: samples for key in wanted}, held={key: held for key in wanted})

    def scrape(self, replica: Replica) -> observations.Scrape | None:
        """One scrape of `replica` (None when it does not answer), passed on to `on_scrape`."""
        try:
            with urllib.request.urlopen(f"{replica.url}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None
        scrape = observations.parse_scrape(text, self.clock())
        if self.on_scrape is not None:
            self.on_scrape(replica.name, scrape)
        return scrape
