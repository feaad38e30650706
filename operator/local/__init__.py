"""`frugal up` and the other commands that run on one machine, without a cluster.

What lives here: the in-memory API store (:mod:`.store`, the control loops' port without an API
server), the local runner of Jobs and replicas as processes behind local balancers, the metrics read
from the replicas' own ``/metrics``, the load generator, the served model's evaluation and the
commands' console output. Never the cluster side (an import contract holds it), and never a control
loop of its own: `frugal up` and `frugal batch` run the operator's (``frugal.operator.control``) against
the store (a layout test holds it).
"""
