"""Experiment planning: target spacing, topology, patch and batch size, network, loss (SPEC §3).

The plan model is plain data and imports no torch; the planner (which measures networks) loads lazily,
so preprocessing workers that only read a plan stay light.
"""

from __future__ import annotations

from typing import Any

from clinix.plan.model import ChannelNormalization, OptimizerSettings, Plan, ResamplingSettings, load_plan

_PLANNER_NAMES = ("DEFAULT_ARCH", "PROFILES", "make_plan", "plan_experiment")

__all__ = [
    "ChannelNormalization",
    "OptimizerSettings",
    "Plan",
    "ResamplingSettings",
    "load_plan",
    *_PLANNER_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _PLANNER_NAMES:
        from clinix.plan import planner

        return getattr(planner, name)
    raise AttributeError(f"module 'clinix.plan' has no attribute {name!r}")
