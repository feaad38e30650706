"""Benchmarks tier: every script in ``benchmarks/`` run in its smoke mode, so that none of them rots.

``--smoke`` is each script's own flag: the code path of a real run at sizes that take seconds, ending
with the table it prints. Real: the script as a subprocess of this venv's Python, and whatever it
starts (``frugal serve``, ``frugal compress``, batch workers, KServe in its own cached venv, etcd,
kube-apiserver, the operator and Prometheus from the control-plane tier's harness). Nothing is mocked;
the numbers are not judged, only that the script finished and printed its table with numbers in it.
`smoke_harness.run_smoke` runs one and reads its tables.
"""
