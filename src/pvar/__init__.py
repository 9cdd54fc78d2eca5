"""pvar: find the prompts worth paying for in preference optimization, by preference variance.

The top-level API is numpy-only (importing pvar never imports torch).
"""

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

__version__ = "0.1.0"

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
    "preference_variance",
    "pvar_interval",
    "reward_mean",
    "reward_range",
    "reward_stats",
    "reward_std",
    "select_bottom",
    "select_random",
    "select_threshold",
    "select_top",
    "spearman",
    "summarize",
]
