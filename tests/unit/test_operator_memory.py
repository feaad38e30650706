"""The operator gives freed memory back (glibc): holes in the heap stay resident until trimmed."""

from __future__ import annotations

import subprocess
import sys

HOLES = """
from frugal.operator.cluster import memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

chunks, pins = [], []
for _ in range(2000):
    chunks.append(bytes(60_000))  # below the mmap threshold: served from the heap
    pins.append(bytes(1000))  # live between each two, so the freed chunks are holes, not the top
del chunks
held = rss_mib()
assert memory.release_free_memory()
print(held, rss_mib())
"""


def test_release_free_memory_hands_back_the_holes_a_free_leaves_in_the_heap() -> None:
    # A process of its own: the test runner's heap would blur the numbers.
    ran = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, check=True)
    held, trimmed = map(float, ran.stdout.split())
    assert held - trimmed > 50  # about 80 of the ~115 MiB freed were still resident before the trim


def test_the_mmap_threshold_is_fixed_where_glibc_is() -> None:
    from frugal.operator.cluster import memory

    assert memory.keep_large_buffers_out_of_the_heap()
