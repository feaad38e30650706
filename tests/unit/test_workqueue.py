"""The reconciler's work queue: each key once, never two workers on one key, no event lost."""

from __future__ import annotations

import threading

from frugal.operator.control.workqueue import WorkQueue


def test_a_key_that_already_waits_is_queued_once_in_the_order_first_added() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    taken = [queue.get(timeout=0) for _ in range(3)]
    assert taken == ["a", "b", "c"] and queue.get(timeout=0) is None


def test_a_key_added_while_a_worker_is_on_it_waits_until_that_pass_is_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("md")
    assert queue.get(timeout=0) == "md"
    queue.add("md")  # an event after the worker read the object: it must be passed over again
    assert queue.get(timeout=0) is None  # ... but not by a second worker at the same time
    queue.done("md")
    assert queue.get(timeout=0) == "md"
    queue.done("md")
    assert queue.get(timeout=0) is None  # and only once


def test_a_waiting_worker_wakes_for_a_key_added_by_another_thread() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=10.0)))
    worker.start()
    queue.add("md")
    worker.join()
    assert got == ["md"]
