"""The Kubernetes objects the operator creates, built as plain dicts by pure functions.

What lives here: names and labels, pod specs and container commands, Jobs, serving Deployments,
Services, PodDisruptionBudgets, NetworkPolicies, Events, storage locations and image choice. Built
from typed specs; nothing here reads the cluster or decides what should exist (that is
:mod:`frugal.operator.decision`).
"""
