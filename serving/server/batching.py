"""Dynamic batching: pure merge/split, and a bounded queue that feeds the runtime one batch at a time.

Policy. A request that finds the runtime idle runs at once (waiting would only add latency: the
next arrivals batch up behind it). While the runtime is busy, arrivals queue and leave together, up to
`max_batch_size`, as soon as it frees. Under sustained concurrency (the last batch held more than one
request) the collector also waits up to `max_delay` to fill a batch — overlapping the previous batch's
execution. The queue is bounded: a full queue refuses at once (`failures.QueueFull`: 429). Each
request holds one future; a batch's failure is set on every future in it; a request whose deadline
passes is answered with `DeadlineExceeded` and dropped from any batch not yet started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from frugal.serving.server.failures import DeadlineExceeded, QueueFull, ShuttingDown

Tensors = dict[str, np.ndarray]


# ------------------------------------------------------------------------------------------ pure parts


def signature_key(inputs: Mapping[str, np.ndarray]) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """Requests with equal keys can be stacked on dim 0."""
    return tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()))


def group_compatible(requests: Sequence[Mapping[str, np.ndarray]]) -> list[list[int]]:
    """Indices of `requests` grouped by stackability, in order of first appearance."""
    groups: dict[tuple[tuple[str, str, tuple[int, ...]], ...], list[int]] = {}
    for index, inputs in enumerate(requests):
        groups.setdefault(signature_key(inputs), []).append(index)
    return list(groups.values())


def merge(requests: Sequence[Mapping[str, np.ndarray]]) -> tuple[Tensors, list[int]]:
    """Stack compatible requests on dim 0; returns the batch and each request's row count."""
    sizes = [next(iter(inputs.values())).shape[0] for inputs in requests]
    if len(requests) == 1:
        return dict(requests[0]), sizes
    names = list(requests[0])
    return {name: np.concatenate([inputs[name] for inputs in requests]) for name in names}, sizes


def split(outputs: Mapping[str, np.ndarray], sizes: Sequence[int]) -> list[Tensors]:
    """Undo `merge` on the outputs: each request gets its own rows of every output."""
    total = sum(sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(f"output '{name}' has shape {list(array.shape)}, not {total} rows; cannot split")
    if len(sizes) == 1:
        return [dict(outputs)]
    bounds = np.cumsum([0, *sizes])
    return [
        {name: array[bounds[i] : bounds[i + 1]] for name, array in outputs.items()} for i in range(len(sizes))
    ]


# ------------------------------------------------------------------------------------------- the queue


class BatchObserver(Protocol):
    def on_batch(self, requests: int, rows: int, busy_seconds: float) -> None: ...


@dataclass(eq=False)
class _Pending:
    inputs: Tensors
    future: asyncio.Future[Tensors]
    deadline: float
    timer: asyncio.TimerHandle | None = field(default=None)


Runner = Callable[[Tensors], Tensors]
Forwarder = Callable[[Tensors], Awaitable[Tensors]]


class Batcher:
    """Feeds `run` (blocking; executed in a worker thread, or inline when it is very fast) with batches.

    `forward`, when given, is awaited on each batch's local outputs after the runtime is released
    (a pipeline stage calling the next one), so the next batch computes while this one travels.
    """

    def __init__(
        self,
        run: Runner,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_size: int,
        observer: BatchObserver,
        forward: Forwarder | None = None,
        inline_below_s: float = 0.0,
        expected_run_s: float = 1.0,
    ) -> None:
        self._run = run
        # Batches expected to run faster than this execute on the event loop itself: for a tiny model
        # the hand-off to a worker thread and back costs more than the model.
        self._inline_below_s = inline_below_s
        self._typical_run_s = expected_run_s
        self._forward = forward
        self._max_batch = max(1, max_batch_size)
        self._max_delay = max(0.0, max_delay_s)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max(1, max_queue_size))
        self._observer = observer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frugal-infer")
        self._runtime_free = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._last_batch = 1
        self._closing = False
        self.pending = 0  # submitted, not yet answered

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def submit(self, inputs: Tensors, timeout_s: float) -> Tensors:
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        loop = asyncio.get_running_loop()
        item = _Pending(inputs, loop.create_future(), loop.time() + timeout_s)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull(
                f"the batch queue is full ({self._queue.maxsize} requests waiting); retry shortly"
            ) from None
        item.timer = loop.call_at(item.deadline, _expire, item, timeout_s)
        self.pending += 1
        try:
            return await item.future
        finally:
            self.pending -= 1
            item.timer.cancel()

    async def close(self) -> None:
        """Refuse new work, finish everything queued and running, then stop."""
        self._closing = True
        while self.pending or self._tasks:
            await asyncio.sleep(0.005)
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        self._pool.shutdown(wait=True)

    # ---------------------------------------------------------------------------------- internals

    async def _collect(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._drain(batch)
            if len(batch) < self._max_batch and self._max_delay and (len(batch) > 1 or self._last_batch > 1):
                await self._fill(batch, asyncio.get_running_loop().time() + self._max_delay)
            await self._runtime_free.acquire()
            self._drain(batch)
            live = [item for item in batch if not item.future.done()]
            if not live:
                self._runtime_free.release()
                continue
            self._last_batch = len(live)
            task = asyncio.get_running_loop().create_task(self._execute(live))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _drain(self, batch: list[_Pending]) -> None:
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _fill(self, batch: list[_Pending], until: float) -> None:
        loop = asyncio.get_running_loop()
        while len(batch) < self._max_batch:
            remaining = until - loop.time()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return
            self._drain(batch)

    async def _execute(self, items: list[_Pending]) -> None:
        """Run every stackable group while holding the runtime, then forward and answer each request."""
        loop = asyncio.get_running_loop()
        results: list[tuple[list[_Pending], list[int], Tensors | BaseException]] = []
        try:
            for group in group_compatible([item.inputs for item in items]):
                members = [items[i] for i in group]
                try:
                    merged, sizes = merge([m.inputs for m in members])
                    started = time.perf_counter()
                    outputs: Tensors | BaseException
                    if self._typical_run_s < self._inline_below_s:
                        outputs = self._run(merged)  # cheaper than two thread hops
                    else:
                        outputs = await loop.run_in_executor(self._pool, self._run, merged)
                    elapsed = time.perf_counter() - started
                    self._typical_run_s += 0.2 * (elapsed - self._typical_run_s)
                    self._observer.on_batch(len(members), sum(sizes), elapsed)
                except Exception as exc:
                    outputs, sizes = exc, []
                results.append((members, sizes, outputs))
        finally:
            self._runtime_free.release()
        await asyncio.gather(*(self._answer(members, sizes, outputs) for members, sizes, outputs in results))

    async def _answer(
        self, members: list[_Pending], sizes: list[int], outputs: Tensors | BaseException
    ) -> None:
        try:
            if isinstance(outputs, BaseException):
                raise outputs
            if self._forward is not None:
                outputs = await self._forward(outputs)
            parts = split(outputs, sizes)
        except Exception as exc:
            for member in members:
                if not member.future.done():
                    member.future.set_exception(exc)
            return
        for member, part in zip(members, parts, strict=True):
            if not member.future.done():
                member.future.set_result(part)


def _expire(item: _Pending, timeout_s: float) -> None:
    if not item.future.done():
        item.future.set_exception(
            DeadlineExceeded(f"no result within the request deadline of {timeout_s * 1000:.0f} ms")
        )
