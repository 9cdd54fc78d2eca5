"""Figures (matplotlib, imported lazily: the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pvar.errors import ConfigError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'pvar[plot]'") from None
    return plt


def pvar_overview(pvar: np.ndarray, reward_std: np.ndarray, path: str | Path) -> Path:
    """PVar histogram beside PVar vs reward std (the closest baseline), saved as PNG."""
    plt = _pyplot()
    ok = np.isfinite(pvar)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax1.hist(pvar[ok], bins=30, color="#4C72B0")
    ax1.set(xlabel="PVar", ylabel="prompts", title=f"PVar over {int(ok.sum()):,} prompts")
    both = ok & np.isfinite(reward_std)
    ax2.scatter(reward_std[both], pvar[both], s=6, alpha=0.5, color="#DD8452")
    ax2.set(xlabel="reward std", ylabel="PVar", title="PVar vs reward std")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
