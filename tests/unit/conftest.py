"""Unit tier: pure functions only — validators, builders, the planner, the seed's formulas.

Real: the CRD files themselves and the installed package. No servers, no torch training, no network.
"""
