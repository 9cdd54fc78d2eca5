"""Per-prompt data of a run, in two flat JSONL files beside its report, so anyone can re-score it.

- ``pool.jsonl``: one row per pool prompt: prompt, reference (a task's spec for verifiable tasks),
  the sampled responses, their rewards, PVar, the reward baselines, and which arms selected it;
- ``eval_answers.jsonl``: one row per (run, eval prompt): the greedy answer and its judge score; for
  an exact gold judge also the content guard and each constraint's verdict. ``run`` is an arm's run
  name, ``base`` (the base policy) or ``base-aa`` (the base policy's A/A re-generation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pvar.experiment.quality import judged_answers
from pvar.io.writers import atomic_write_text

POOL_COLUMNS = ("prompt_id", "prompt", "reference", "responses", "rewards", "pvar", "pvar_low", "pvar_high",
                "reward_mean", "reward_std", "reward_range", "n_valid")


def export_per_prompt(run_dir: str | Path, out_dir: str | Path, cfg: Any) -> dict[str, int]:
    """Write ``pool.jsonl`` and ``eval_answers.jsonl`` to ``out_dir``; returns their row counts."""
    from pvar.io.rows import read_rows

    root, out = Path(run_dir), Path(out_dir)
    names = [n for n, _, _ in cfg.arm_runs()]
    selected: dict[str, list[str]] = {}
    for name in names:
        sel = root / "arms" / name / "selected.parquet"
        if sel.is_file():
            import pyarrow.parquet as pq

            for pid in pq.read_table(sel, columns=["prompt_id"]).column("prompt_id").to_pylist():
                selected.setdefault(str(pid), []).append(name)
    counts = {"pool": 0, "eval_answers": 0}
    measured = root / "scoring" / "measured.parquet"
    if measured.is_file():
        lines = []
        for batch in read_rows(str(measured)):
            for row in batch.data.to_pylist():
                keep = {k: row[k] for k in POOL_COLUMNS if k in row}
                lines.append(json.dumps({**keep, "selected_by": selected.get(str(row["prompt_id"]), [])},
                                        ensure_ascii=False) + "\n")
        atomic_write_text(out / "pool.jsonl", "".join(lines))
        counts["pool"] = len(lines)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in judged_answers(root, cfg)]
    if lines:
        atomic_write_text(out / "eval_answers.jsonl", "".join(lines))
    counts["eval_answers"] = len(lines)
    return counts
