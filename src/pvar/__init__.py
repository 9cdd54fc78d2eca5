"""pvar: find the prompts worth paying for in preference optimization, by preference variance.

The top-level API is numpy-only (importing pvar never imports torch). ``pvar.measure``,
``pvar.select``, ``pvar.pairs``, ``pvar.save_pairs`` and ``pvar.push_to_hub`` work on rows in
memory (``datasets.Dataset`` or ``pyarrow.Table``; see pvar/notebook.py) and load on first use.
"""

from typing import Any

from pvar.core.pairs import PairIndex, all_pairs, best_random, best_worst
from pvar.core.select import budget, select_bottom, select_random, select_threshold, select_top
from pvar.core.stats import (
    ESTIMATOR,
    RewardStats,
    preference_variance,
    pvar_interval,
    reward_mean,
    reward_range,
    reward_stats,
    reward_std,
    spearman,
)
from pvar.core.summary import PoolSummary, summarize
from pvar.errors import ConfigError, InputError, PvarError
from pvar.version import __version__

_NOTEBOOK = ("measure", "select", "pairs", "save_pairs", "push_to_hub", "dataset_card")


def __getattr__(name: str) -> Any:
    if name in _NOTEBOOK:
        from pvar import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'pvar' has no attribute {name!r}")

__all__ = [
    "ESTIMATOR",
    "ConfigError",
    "InputError",
    "PairIndex",
    "PoolSummary",
    "PvarError",
    "RewardStats",
    "__version__",
    "all_pairs",
    "best_random",
    "best_worst",
    "budget",
    "dataset_card",
    "measure",
    "pairs",
    "preference_variance",
    "push_to_hub",
    "pvar_interval",
    "reward_mean",
    "reward_range",
    "reward_stats",
    "reward_std",
    "save_pairs",
    "select",
    "select_bottom",
    "select_random",
    "select_threshold",
    "select_top",
    "spearman",
    "summarize",
]
