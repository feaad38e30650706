"""The Kubernetes operator: kopf handlers (``handlers``) over a pure reconcile decision (``pipeline``).

Layers, outermost first: ``cli`` (flags, starts kopf and the metrics server) → ``handlers`` (2–5 line
kopf handlers) → ``reconciler`` (observe, decide, apply, write status) → ``pipeline`` (pure decision)
→ builders (``jobs``, ``serving``) and ``conditions``. Only ``cli``, ``handlers``, ``reconciler``
and ``apply`` import kopf or the kubernetes client, and only when they run.
"""
