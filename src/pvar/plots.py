"""Figures (matplotlib, imported lazily: the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pvar.errors import ConfigError
from pvar.io.writers import atomic_file


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); a one-line error without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'pvar[plot]'") from None
    return plt


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def check_figure_path(path: str | Path) -> Path:
    """Refuse a figure path matplotlib cannot write, before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ConfigError(f"plot: {str(path)!r} must end in {', '.join(FIGURE_SUFFIXES)}")
    return path


def pvar_overview(pvar: np.ndarray, reward_std: np.ndarray, path: str | Path) -> Path:
    """PVar histogram beside PVar vs reward std (the closest baseline), saved as PNG (or PDF, SVG)."""
    path = check_figure_path(path)
    plt = pyplot()
    ok = np.isfinite(pvar)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax1.hist(pvar[ok], bins=30, color="#4C72B0")
    ax1.set(xlabel="PVar", ylabel="prompts", title=f"PVar over {int(ok.sum()):,} prompts")
    both = ok & np.isfinite(reward_std)
    ax2.scatter(reward_std[both], pvar[both], s=6, alpha=0.5, color="#DD8452")
    ax2.set(xlabel="reward std", ylabel="PVar", title="PVar vs reward std")
    return _save(fig, path, dpi=120)


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure atomically (format from the suffix) and free it."""
    plt = pyplot()
    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix[1:].lower() or "png")
    finally:
        plt.close(fig)
    return path


def pvar_selection(pvar: np.ndarray, reward_std: np.ndarray, chosen: dict[str, np.ndarray], path: str | Path) -> Path:
    """PVar histogram, and PVar vs reward std with each selection's prompts marked.

    ``chosen`` maps a label (e.g. 'top-pvar') to a boolean mask over the pool, shape (n,).
    """
    plt = pyplot()
    ok = np.isfinite(pvar)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax1.hist(pvar[ok], bins=30, color="#4C72B0")
    for (label, mask), color in zip(chosen.items(), ("#C44E52", "#55A868", "#8172B2"), strict=False):
        if mask.any():
            edge = np.nanmax(pvar[mask]) if label.startswith("bottom") else np.nanmin(pvar[mask])
            ax1.axvline(edge, color=color, ls="--", lw=1, label=f"{label} cut-off")
    ax1.set(xlabel="PVar", ylabel="prompts", title=f"PVar over {int(ok.sum()):,} prompts")
    both = ok & np.isfinite(reward_std)
    ax2.scatter(reward_std[both], pvar[both], s=7, alpha=0.35, color="#999999", label="pool")
    for (label, mask), marker, color in zip(chosen.items(), ("o", "x", "+"), ("#C44E52", "#55A868", "#8172B2"),
                                            strict=False):
        m = mask & both
        ax2.scatter(reward_std[m], pvar[m], s=16, marker=marker, color=color, label=label,
                    facecolors="none" if marker == "o" else None)
    ax2.set(xlabel="reward std", ylabel="PVar", title="PVar vs reward std")
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def interval_rows(rows: list[tuple[str, float, float, float]], path: str | Path, *, xlabel: str, ref: float,
                  title: str, extra: list[tuple[str, float]] | None = None) -> Path:
    """A forest plot: one row per (label, estimate, low, high), a reference line at ``ref``.

    ``extra`` adds a second marker per row (same order), e.g. the LC win rate beside the raw one.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4), constrained_layout=True)
    y = np.arange(len(rows))[::-1]
    est = np.array([r[1] for r in rows])
    lo = np.array([r[2] for r in rows])
    hi = np.array([r[3] for r in rows])
    ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="o", color="#4C72B0", capsize=3, label="estimate, 95% CI")
    if extra:
        ax.scatter([e[1] for e in extra], y, marker="D", color="#DD8452", s=22, zorder=3, label=extra[0][0])
    ax.axvline(ref, color="#555555", lw=1, ls="--")
    ax.set_yticks(y, [r[0] for r in rows])
    ax.set(xlabel=xlabel, title=title)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def training_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                    ylabel: str = "training loss") -> Path:
    """One line per arm: (steps, values)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, marker=".", lw=1.2, label=name, alpha=0.85)
    ax.set(xlabel="optimizer step", ylabel=ylabel, title=f"{ylabel} per arm")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def signal_scatter(dot: np.ndarray, pvar: np.ndarray, std: np.ndarray, path: str | Path, *,
                   fits: tuple[dict, dict]) -> Path:
    """The gradient signal (dot product of two independent DPO-gradient estimates) against PVar and
    against the reward std, with each least-squares line and its R²."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True, sharey=True)
    for ax, x, fit, label in ((axes[0], pvar, fits[0], "PVar (pool samples)"),
                              (axes[1], std, fits[1], "reward std (pool samples)")):
        ax.scatter(x, dot, s=18, color="#4C72B0", alpha=0.8)
        ok = np.isfinite(x) & np.isfinite(dot)
        slope = fit.get("slope")
        if ok.sum() >= 3 and slope is not None and np.isfinite(slope):
            xs = np.linspace(x[ok].min(), x[ok].max(), 50)
            ax.plot(xs, dot[ok].mean() + slope * (xs - x[ok].mean()), color="#DD8452", lw=1.5)
        ax.axhline(0, color="#555555", lw=0.8, ls="--")
        r2, rho = (fit.get(k) for k in ("r2", "spearman"))
        ax.set(xlabel=label, title=f"R² {'n/a' if r2 is None else f'{r2:.2f}'}, Spearman "
                                   f"{'n/a' if rho is None else f'{rho:.2f}'}")
    axes[0].set_ylabel("G_A · G_B (unbiased for ‖E G‖²)")
    return _save(fig, path)


def plot_theory(pvar: np.ndarray, grad_norm: np.ndarray, bound: np.ndarray, trf: list[float], beta: float,
                path: str | Path, title: str = "") -> Path:
    """||G|| against PVar (log-log over positive values), with each prompt's bound and the median-tr F curve.

    Saved to a temporary name and renamed, so a failed save never leaves a half-written PNG.
    """
    plt = pyplot()
    pvar, grad_norm, bound = (np.asarray(x, dtype=np.float64) for x in (pvar, grad_norm, bound))
    pos = (pvar > 0) & (grad_norm > 0)
    log = int(pos.sum()) >= 2
    show = pos if log else np.ones(pvar.size, dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    ax.scatter(pvar[show], grad_norm[show], s=18, color="#4C72B0", label="||G|| (expected DPO gradient at init)")
    ax.scatter(pvar[show], bound[show], s=22, marker="_", color="#C44E52", label="β·sqrt(PVar)·sqrt(mean ||g_i−g_j||²)")
    trf_arr = np.asarray(trf, dtype=np.float64)
    if show.any() and np.isfinite(trf_arr).any():
        grid = np.linspace(pvar[show].min(), pvar[show].max(), 200)
        if log and grid[0] > 0:
            grid = np.geomspace(grid[0], grid[-1], 200)
        med = float(np.nanmedian(trf_arr))
        ax.plot(grid, beta * np.sqrt(2 * med * grid), "--", color="#C44E52", lw=1,
                label="β·sqrt(2·median tr F·PVar)")
    if log:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short decade overlap
    dropped = int((~show).sum())
    note = f" ({dropped} with PVar or ||G|| = 0 not shown)" if dropped else ""
    ax.set(xlabel="PVar", ylabel="||G||", title=(title + note) if title else note.strip())
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path, dpi=120)

