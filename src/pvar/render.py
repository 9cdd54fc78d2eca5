"""Terminal rendering (rich): summaries to stdout, progress to stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pvar.core.summary import PoolSummary, histogram

out = Console(emoji=False)  # ":top:" in "pairs:top: done" is an arm name, not an emoji
err = Console(stderr=True, emoji=False)


class RateColumn(ProgressColumn):
    """Prompts per second, and tokens per second when the stage counts tokens."""

    def render(self, task: Any) -> Text:
        elapsed = task.elapsed or 0.0
        parts = [f"{task.speed:,.2f} {task.fields.get('unit', 'prompts')}/s"] if task.speed else []
        tokens = task.fields.get("tokens", 0)
        if tokens and elapsed > 0:
            parts.append(f"{tokens / elapsed:,.0f} tokens/s")
        return Text("  ".join(parts), style="progress.data.speed")


@contextmanager
def progress(label: str, source: str | Path | None = None, total: int | None = None,
             unit: str = "prompts") -> Iterator[Any]:
    """A rich progress bar on stderr (prompts done, rates, ETA); yields ``tick(rows, counters)``."""
    if total is None and source is not None:
        from pvar.io.readers import count_rows

        try:
            total = count_rows(source)
        except Exception:  # a bad source is reported by the stage itself, with file and line
            total = None
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
        disable=not err.is_terminal,
    )
    with bar:
        task = bar.add_task(label, total=total, tokens=0, unit=unit)

        def tick(rows: int, counters: dict[str, int] | None = None) -> None:
            bar.update(task, advance=rows, **({"tokens": counters["tokens"]} if counters and "tokens" in counters
                                              else {}))

        yield tick


def _fmt(x: float, digits: int = 4) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def pool_summary(s: PoolSummary, title: str = "PVar over the pool") -> None:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("statistic")
    t.add_column("value", justify="right")
    t.add_row("prompts", f"{s.n_prompts:,}")
    t.add_row("with PVar", f"{s.n_with_pvar:,}")
    t.add_row("lacking PVar (< 2 valid rewards)", f"{s.n_lacking:,}")
    names = {0.0: "min", 0.1: "p10", 0.25: "p25", 0.5: "median", 0.75: "p75", 0.9: "p90", 1.0: "max"}
    for q, v in s.quantiles.items():
        t.add_row(f"PVar {names.get(q, q)}", _fmt(v))
    t.add_row("PVar mean", _fmt(s.mean_pvar))
    t.add_row("Spearman(PVar, reward std)", _fmt(s.spearman_pvar_std, 3))
    if np.isfinite(s.median_interval_width):
        t.add_row("median width of PVar 95% interval", _fmt(s.median_interval_width))
    out.print(t)


def text_histogram(values: np.ndarray, title: str = "PVar histogram", width: int = 40) -> None:
    counts, edges = histogram(values)
    if counts.size == 0:
        return
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("PVar bin")
    t.add_column("count", justify="right")
    t.add_column("")
    top = max(int(counts.max()), 1)
    for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        t.add_row(f"{lo:.4f}-{hi:.4f}", f"{int(c):,}", "█" * round(width * c / top))
    out.print(t)


def key_values(title: str, rows: dict[str, Any]) -> None:
    t = Table(title=title, show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", justify="right")
    for k, v in rows.items():
        t.add_row(k, _fmt(v) if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
    out.print(t)


def run_report(stage: str, report: Any) -> None:
    """Summary of a sharded stage run (what was computed now vs resumed)."""
    rows = {
        "prompts": report.rows,
        "shards": report.shards,
        "shards computed now": report.shards_run,
        "shards already done (resumed)": report.shards - report.shards_run,
        "seconds": round(report.seconds, 1),
    }
    for k, v in report.counters.items():
        rows[k] = v
    if report.counters.get("tokens") and report.seconds > 0:
        rows["tokens/s"] = round(report.counters["tokens"] / report.seconds, 1)
    key_values(f"{stage} -> {report.output}", rows)


def run_headline(report_dir: Path) -> None:
    """A run's outcome on the terminal: each arm's win rate (or pairs), the comparisons, time and memory."""
    import json

    data = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    rows = {}
    for arm in data["arms"]:
        hard = arm["eval"].get("hard")
        rows[arm["name"]] = (f"{100 * hard['estimate']:.1f}% [{100 * hard['ci_low']:.1f}, {100 * hard['ci_high']:.1f}]"
                             if hard else f"{arm['pairs'] if arm['pairs'] is not None else '-'} pairs")
    key_values(f"{data['name']}: win rate vs base policy (95% CI)" if data["until"] == "eval"
                      else f"{data['name']}: arms", rows)
    for c in data["comparisons"]:
        d = c["difference"]
        out.print(f"{c['a']} vs {c['b']}: score diff {d['estimate']:+.4f} [{d['ci_low']:+.4f}, "
                         f"{d['ci_high']:+.4f}]{'  (within noise)' if c['within_noise'] else ''}")
    last = data["runs"][-1] if data["runs"] else {}
    if last.get("seconds") is not None:
        out.print(f"last invocation: {last['seconds'] / 60:.1f} min, peak RSS "
                         f"{last['peak_rss_mb'] / 1024:.2f} GB ({len(data['runs'])} invocation(s) of this folder)")
    out.print(f"report: {report_dir / 'report.html'}")
