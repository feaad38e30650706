"""Keys waiting for a reconcile pass, each at most once: client-go's workqueue, without rate limits.

The watch handlers only name what changed and return, so no object's body waits in memory for a
worker: at thousands of ModelDeployments an operator start lists every one of them and their
children at once, and a queue of bodies would hold them all. Here an event for a key that already
waits adds nothing, no two workers pass over the same key at once, and a key added while a worker is
on it is passed over again after that pass (the event may have come after its read).
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Key = TypeVar("Key")


class WorkQueue(Generic[Key]):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: dict[Key, None] = {}  # an ordered set: first added, first passed over
        self._active: set[Key] = set()
        self._again: set[Key] = set()

    def add(self, key: Key) -> None:
        with self._changed:
            if key in self._active:
                self._again.add(key)
            elif key not in self._waiting:
                self._waiting[key] = None
                self._changed.notify()

    def get(self, timeout: float) -> Key | None:
        """The next key to pass over (now the caller's until `done`), or None after `timeout` s."""
        with self._changed:
            if not self._waiting:
                self._changed.wait(timeout)
            if not self._waiting:
                return None
            key = next(iter(self._waiting))
            del self._waiting[key]
            self._active.add(key)
            return key

    def done(self, key: Key) -> None:
        """The pass over `key` ended; a key added meanwhile waits again."""
        with self._changed:
            self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._waiting[key] = None
                self._changed.notify()

    def __len__(self) -> int:
        with self._changed:
            return len(self._waiting)
