"""The autoscaling benchmark's code; ``benchmarks/autoscaling.py`` is its command (and describes it).

By concern, each module importing only those above it:

* :mod:`.measure`: the examples, and their replicas measured on this machine (compression,
  profiling, the planner, the latency-versus-load curve, the pod start); the stored measurements;
* :mod:`.replica`: the simulated replica built from a measurement;
* :mod:`.traces`: reading traces, and generating the shipped ones;
* :mod:`.peers`: what an autoscaler reads at a tick (``View``), and the peers frugal is compared with:
  static, HPA-style, KEDA-style and the reference limit;
* :mod:`.options`: what re-planning chooses among (the options, as status.variants has them);
* :mod:`.policy`: frugal: the operator's tick (``frugal.operator.decision.tick.run_tick``) driven
  as the operator drives it, with re-planning in the same tick;
* :mod:`.simulate`: the fleet under one autoscaler, step by step; the scenarios of a (model, trace),
  every policy's run and the re-planning runs;
* :mod:`.report`: the tables, the verdicts against the targets;
* :mod:`.cli`: the command line.
"""
