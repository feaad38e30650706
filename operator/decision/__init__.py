"""Every decision the operator makes, as pure functions: no I/O, no clock, no cluster.

What lives here: what objects a ModelDeployment should have (:mod:`.decide`), its conditions, the
planner, the autoscaling policy and the autoscaler's tick (:mod:`.tick`), re-planning, BatchInference
placement, and the parsing of what the loops observe (metrics samples, artifact files, pod
problems). State goes in and decisions come out; the control loops do the reading and writing.
"""
