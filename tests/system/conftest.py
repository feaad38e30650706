"""System tier: `frugal up` end to end, as a user runs it.

Real: the `frugal` CLI in a subprocess, the compression Job's command (torch + ONNX Runtime on the
digits model), the profiling Job, real `frugal serve` processes on loopback and real HTTP load, and
a real Prometheus scraping them (the control-plane tier's harness: `prometheus_harness`,
`chart_queries`). Nothing is mocked; a failure to start any part fails the test.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controlplane"))
