"""The verbs on rows in memory: ``datasets.Dataset`` or ``pyarrow.Table`` in, the same type out.

    import pvar
    scored = datasets.load_dataset("json", data_files="rewarded.jsonl")["train"]
    measured = pvar.measure(scored, scale=4.0)          # a Dataset with pvar, pvar_low, ...
    top = pvar.select(measured, by="pvar", top=0.25)
    pairs = pvar.pairs(top)                              # TRL's prompt / chosen / rejected rows
    pvar.save_pairs(pairs, "pvar-pairs", pool=measured, reward="hf:Skywork/...", scale=4.0)

Each function runs the verb's own ``run`` (pipeline/measure.py, select.py, pairs.py) with the
same validation and the same one-line errors as the files path, naming the source ``<Dataset>``
or ``<pyarrow.Table>`` and a 1-based row. ``save_pairs`` writes a folder ``datasets`` loads as
is (``train.parquet`` + a ``README.md`` dataset card); ``push_to_hub`` publishes it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pvar.io.writers import MemorySink


def _rows(data: Any, split: str | None = None) -> Any:
    """What the verbs read, by the type of ``data``: a path (str or Path), a pyarrow Table or RecordBatch,
    a ``datasets.Dataset``, one split of a ``DatasetDict`` (``split=``; the only split when there is one),
    or a pandas DataFrame. Anything else is a one-line ``ConfigError``."""
    from pvar.errors import ConfigError
    from pvar.io.readers import in_memory

    kind = type(data).__name__
    if split is not None and kind not in ("DatasetDict", "IterableDatasetDict"):
        raise ConfigError(f"split: {split!r} picks a split of a DatasetDict, but data is a {kind}")
    if isinstance(data, (str, Path)) or in_memory(data):
        return data
    if kind in ("DatasetDict", "IterableDatasetDict"):
        names = list(data)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in names:
            listed = ", ".join(repr(n) for n in names) or "none"
            want = f"split {split!r} is not one of its splits" if split is not None else "pass split="
            raise ConfigError(f"data: a DatasetDict with splits {listed}: {want}")
        return data[split]
    if kind == "DataFrame" and hasattr(data, "to_dict"):  # by rows: pandas' own Arrow types may be large_*
        return pa.Table.from_pylist(data.to_dict("records"))
    raise ConfigError(f"data: expected a file path, a datasets.Dataset or DatasetDict (with split=), a pandas "
                      f"DataFrame or a pyarrow.Table, not a {kind}")


def _returned(table: pa.Table, like: Any) -> Any:
    """``table`` as the caller's type: a Dataset for a Dataset (or a DatasetDict's split), a DataFrame for a
    DataFrame, a pyarrow.Table otherwise."""
    kind = type(like).__name__
    if kind in ("Dataset", "DatasetDict"):
        from datasets import Dataset

        return Dataset(table)
    if kind == "DataFrame":
        return table.to_pandas()
    return table


def measure(data: Any, *, scale: float = 1.0, n_boot: int = 200, confidence: float = 0.95, seed: int = 0,
            format: str = "auto", rating: str = "overall", split: str | None = None) -> Any:
    """``pvar measure`` on rows in memory: adds pvar, pvar_low/high, reward_mean/std/range, n_valid."""
    from pvar.pipeline.measure import MeasureConfig, run

    sink = MemorySink()
    run(_rows(data, split), sink, MeasureConfig.make(scale=scale, n_boot=n_boot, confidence=confidence, seed=seed,
                                       format=format, rating=rating))
    return _returned(sink.table(), data)


def select(data: Any, *, by: str = "pvar", top: float | None = None, bottom: float | None = None,
           random: float | None = None, stratified: float | None = None, minimum: float | None = None,
           count: int | None = None, rip: bool = False, stratum: str | None = None, seed: int = 0,
           split: str | None = None) -> Any:
    """``pvar select`` on rows in memory: one of top / bottom / random / stratified (fractions), minimum,
    or rip; ``stratum`` names the stratified mode's column."""
    from pvar.pipeline.select import SelectConfig, chosen_mode, run

    mode = chosen_mode(top=top, bottom=bottom, random=random, stratified=stratified, minimum=minimum, rip=rip,
                       spell=lambda name: "rip=True" if name == "rip" else name)
    cfg = SelectConfig.make(by=by, seed=seed, count=count, **mode, **({"stratum": stratum} if stratum else {}))
    sink = MemorySink()
    run(_rows(data, split), sink, cfg)
    return _returned(sink.table(), data)


def pairs(data: Any, *, rule: str = "best-worst", max_pairs: int = 8, seed: int = 0, scale: float = 1.0,
          format: str = "auto", rating: str = "overall", split: str | None = None) -> Any:
    """``pvar pairs`` on rows in memory: TRL preference rows (prompt, chosen, rejected, ...)."""
    from pvar.pipeline.pairs import PairsConfig, run

    sink = MemorySink()
    cfg = PairsConfig.make(rule=rule, max_pairs=max_pairs, seed=seed, scale=scale, format=format, rating=rating)
    run(_rows(data, split), sink, cfg)
    return _returned(sink.table(), data)


# -- dataset card -----------------------------------------------------------------------------------


def _arrow(data: Any) -> pa.Table:
    from pvar.io.readers import in_memory, memory_table

    data = _rows(data)
    if in_memory(data):
        return memory_table(data)
    from pvar.io.rows import read_rows

    return pa.Table.from_batches([b.data for b in read_rows(data, require=(), unique_ids=False)])


def card_data(pairs: Any, *, pool: Any = None, reward: str | None = None, scale: float | None = None,
              selection: str | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the dataset card states: the pairs, the pool they came from, the reward, the PVar summary,
    the versions and the settings."""
    import importlib.metadata as md

    table = _arrow(pairs)
    info: dict[str, Any] = {"pairs": table.num_rows, "prompts": len(set(table.column("prompt_id").to_pylist()))
                            if "prompt_id" in table.column_names else None,
                            "columns": table.column_names, "reward": reward, "scale": scale,
                            "selection": selection, "config": config or {}}
    if "pvar" in table.column_names:
        values = np.asarray(table.column("pvar").to_numpy(zero_copy_only=False), dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            info["pvar"] = {"mean": float(values.mean()), "median": float(np.median(values)),
                            "min": float(values.min()), "max": float(values.max())}
    if pool is not None:
        pool_table = _arrow(pool)
        info["pool"] = {"prompts": pool_table.num_rows}
        if "pvar" in pool_table.column_names:
            values = np.asarray(pool_table.column("pvar").to_numpy(zero_copy_only=False), dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                info["pool"]["pvar_mean"] = float(values.mean())
                info["pool"]["pvar_median"] = float(np.median(values))
    versions = {}
    for pkg in ("pvar", "datasets", "pyarrow", "numpy", "transformers", "trl"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    info["versions"] = versions
    return info


def dataset_card(info: dict[str, Any]) -> str:
    """A Hugging Face dataset card (YAML header + Markdown) for selected preference pairs."""
    pv = info.get("pvar") or {}
    pool = info.get("pool") or {}
    lines = [
        "---",
        "tags:", "- dpo", "- preference", "- pvar",
        "task_categories:", "- text-generation",
        "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: train.parquet",
        "---",
        "",
        "# Preference pairs selected by preference variance (PVar)",
        "",
        "Pairs for DPO-style training (TRL's `prompt` / `chosen` / `rejected` columns), built by "
        "[pvar](https://arxiv.org/abs/2510.13022) from the prompts whose sampled responses the reward "
        "model disagrees about most.",
        "",
        "| | |", "|---|---|",
        f"| pairs | {info['pairs']:,} |",
        f"| prompts | {info['prompts']:,} |" if info.get("prompts") is not None else "| prompts | - |",
        f"| pool | {pool['prompts']:,} prompts |" if pool else "| pool | - |",
        f"| selection | {info.get('selection') or '-'} |",
        f"| reward | `{info.get('reward') or '-'}` |",
        f"| reward scale | {info.get('scale') if info.get('scale') is not None else '-'} |",
    ]
    if pv:
        lines.append(f"| PVar of the pairs' prompts | mean {pv['mean']:.4g}, median {pv['median']:.4g}, "
                     f"range [{pv['min']:.4g}, {pv['max']:.4g}] |")
    if pool.get("pvar_mean") is not None:
        lines.append(f"| PVar over the pool | mean {pool['pvar_mean']:.4g}, median {pool['pvar_median']:.4g} |")
    lines += ["", f"Columns: {', '.join(f'`{c}`' for c in info['columns'])}.", "", "## Settings", "",
              "```json", json.dumps(info.get("config") or {}, indent=2, sort_keys=True), "```", "",
              "## Versions", "", ", ".join(f"{k} {v}" for k, v in info["versions"].items()), ""]
    return "\n".join(lines)


def save_pairs(pairs: Any, folder: str | Path, *, pool: Any = None, reward: str | None = None,
               scale: float | None = None, selection: str | None = None,
               config: dict[str, Any] | None = None) -> Path:
    """Write ``folder/train.parquet`` and ``folder/README.md`` (the dataset card); both atomic."""
    import pyarrow.parquet as pq

    from pvar.io.writers import atomic_file, atomic_write_text

    folder = Path(folder)
    table = _arrow(pairs)
    with atomic_file(folder / "train.parquet") as tmp:
        pq.write_table(table, tmp)
    info = card_data(table, pool=pool, reward=reward, scale=scale, selection=selection, config=config)
    atomic_write_text(folder / "README.md", dataset_card(info))
    return folder


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Publish a `save_pairs` folder: the rows through ``datasets`` and the card through
    ``huggingface_hub`` (``DatasetCard.push_to_hub``). Returns the repo id."""
    from datasets import Dataset
    from huggingface_hub import DatasetCard

    folder = Path(folder)
    ds = Dataset.from_parquet(str(folder / "train.parquet"))
    ds.push_to_hub(repo_id, private=private, token=token)
    DatasetCard((folder / "README.md").read_text(encoding="utf-8")).push_to_hub(repo_id, token=token)
    return repo_id
