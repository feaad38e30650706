"""The operator in a cluster: the only package that imports kopf and the kubernetes client.

What lives here: the control loops' port on the API server (:mod:`.apply`), the autoscaler's metrics
source on Prometheus (:mod:`.prometheus`), the kopf handlers that turn watch events into passes of
the control loops (:mod:`.handlers`) and the ``frugal operator`` command with its flags. No decision
and no loop logic: those live in :mod:`frugal.operator.decision` and :mod:`frugal.operator.control`.
"""
