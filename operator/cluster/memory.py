"""Giving memory the operator freed back to the system (glibc's allocator; elsewhere nothing happens).

The operator parses pages of API objects and watch events on its main thread. glibc serves a large
buffer from the heap once a buffer of that size was freed (its mmap threshold rises with each), and
the heap returns only free memory at its very top: at 5,000 ModelDeployments an operator restart
left 441 MiB of the main heap's 472 MiB free but resident (`mallinfo2`; BENCHMARKS.md, operator
memory). Two calls of glibc's own fix that: a fixed mmap threshold (large buffers are mapped and
unmapped, never left in the heap) and `malloc_trim`, which hands back every free page of the heaps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default, kept fixed instead of rising
TRIM_SECONDS = 30.0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """Looked up once: `find_library` runs `ldconfig` in a subprocess."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def keep_large_buffers_out_of_the_heap() -> bool:
    """Fix glibc's mmap threshold (call before the heavy work starts); False where there is no glibc."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Hand every free page of the allocator's heaps back to the system (milliseconds)."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


def trim_periodically(stop: threading.Event, seconds: float = TRIM_SECONDS) -> threading.Thread:
    """A daemon thread that calls `release_free_memory` every `seconds` until `stop`."""

    def run() -> None:
        while not stop.wait(seconds):
            release_free_memory()

    thread = threading.Thread(target=run, name="memory-trim", daemon=True)
    thread.start()
    return thread
