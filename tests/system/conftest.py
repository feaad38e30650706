"""System tier: `frugal up` end to end, as a user runs it.

Real: the `frugal` CLI in a subprocess, the compression Job's command (torch + ONNX Runtime on the
digits model), the profiling Job, real `frugal serve` processes on loopback and real HTTP load.
Nothing is mocked; a failure to start any part fails the test.
"""
