r"""Two checks that can fail, unlike the Cauchy–Schwarz bound of :mod:`pvar.pipeline.theory`.

**Gradient signal.** For a prompt x, the expected DPO gradient at initialisation is
E G = E[Σ_i a_i g_i] (see :mod:`pvar.pipeline.theory`). Its squared norm ‖E G‖² is the size of the step a
prompt contributes before noise, which the theory says grows with PVar. Two independent sets of
samples A and B give two independent estimates G_A and G_B, so E[G_A · G_B] = ‖E G‖² exactly: the
dot product is an *unbiased* estimate of the signal, while ‖G_A‖² is biased upwards by the noise.
PVar and the reward std are measured on a third, independent set (the pool's own samples, which
drove the selection). The check regresses G_A · G_B on PVar and on the reward std, prompt by
prompt: if PVar ranks prompts by learning signal, its fit is the better one.

**Held-out gold pairs.** On prompts no arm trained on, pairs labelled by the gold scorer (best
against worst sample of the base policy) measure what each trained policy prefers: the DPO loss
−log σ(β·(h_c − h_r)) and the accuracy [h_c > h_r], with h = log π_θ − log π_ref. Unlike greedy
eval answers, these need no decoding, so they carry no decoding noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from pvar.config import Device, Dtype, Seed, StageConfig, like
from pvar.core.stats import reward_stats, spearman
from pvar.io.writers import atomic_write_text
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.train import TrainConfig

SIGNAL_SALT = 7_919  # offsets the sampling seed: fresh samples, independent of the pool's


class _Sampling(StageConfig):
    """Fresh samples of the base policy, scored by the gold (selection) reward; the sampling fields
    are the generate stage's, the reward the reward stage's."""

    policy: str = like(GenerateConfig, "model", description="The base policy: hub name, folder, or 'smollm2'.")
    reward: str = like(RewardConfig, "reward", description="Reward spec scoring the fresh samples.")
    samples: int = Field(4, ge=2, le=1024, description="Fresh samples per set (the signal draws two sets per "
                         "prompt).")
    max_new_tokens: int = like(GenerateConfig, "max_new_tokens", default=48)
    temperature: float = like(GenerateConfig, "temperature")
    top_p: float = like(GenerateConfig, "top_p")
    seed: Seed = like(GenerateConfig, "seed", description="Run seed (offset, so the samples are fresh).")
    dtype: Dtype = like(GenerateConfig, "dtype", default="float32", description="torch dtype of the sampling.")
    device: Device = like(GenerateConfig, "device", description="torch device.")


class SignalConfig(_Sampling):
    """The gradient-signal check (:func:`gradient_signal`)."""

    scale: float = like(MeasureConfig, "scale", description="Reward scale of PVar.")
    beta: float = like(TrainConfig, "beta", description="DPO beta of the gradient.")
    prompts: int = Field(24, ge=1, description="Pool prompts, spread over PVar.")
    params: str = Field("all", description="Parameter subset: all | last-layers | last-layers:K | re:PATTERN.")
    max_length: int = like(TrainConfig, "max_length", default=320, description="Token cap on prompt + response.")


class GoldPairsConfig(_Sampling):
    """Held-out gold pairs (:func:`gold_pairs`)."""

    count: int = Field(64, ge=1, description="Held-out prompts to pair.")
    samples: int = Field(4, ge=2, le=1024, description="Fresh samples per held-out prompt (best vs worst).")


def fit(y: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """Least-squares fit y ≈ a + b·x: slope, R², Pearson and Spearman correlations (NaN-safe)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return {"n": int(x.size), "slope": math.nan, "r2": math.nan, "pearson": math.nan, "spearman": math.nan}
    r = float(np.corrcoef(x, y)[0, 1])
    slope = float(np.cov(x, y, bias=True)[0, 1] / x.var())
    return {"n": int(x.size), "slope": slope, "r2": r * r, "pearson": r, "spearman": spearman(x, y)}


def _pick(pvar: np.ndarray, k: int) -> np.ndarray:
    from pvar.core.theory import spread_pick

    finite = np.flatnonzero(np.isfinite(pvar))
    return finite[spread_pick(pvar[finite], k)]


def _pool_rows(measured: Path) -> list[dict[str, Any]]:
    from pvar.io.rows import read_rows

    rows: list[dict[str, Any]] = []
    for batch in read_rows(str(measured), require=("prompt_id", "prompt", "rewards")):
        rows += batch.data.to_pylist()
    return rows


def _fresh(cfg: _Sampling, rows: list[dict[str, Any]], n: int, out: Path,
           engine: dict[str, Any] | None) -> tuple[list[list[str]], list[np.ndarray]]:
    """``n`` fresh base-policy samples per row (a salted seed: independent of the pool's) and their rewards,
    through the pool's own scoring chain into ``out`` (sharded and resumable, on the run's engine and device)."""
    import pyarrow as pa

    from pvar.io.readers import iter_shards
    from pvar.io.writers import atomic_rows
    from pvar.pipeline.scoring import ScoredPaths, score

    paths = ScoredPaths(out)
    prompts = out / "prompts.parquet"
    refs = all(isinstance(r.get("reference"), str) for r in rows)  # a prompt set with references, or none
    table = pa.Table.from_pylist([{"prompt_id": str(r["prompt_id"]), "prompt": r["prompt"],
                                   **({"reference": r["reference"]} if refs else {})} for r in rows])
    out.mkdir(parents=True, exist_ok=True)
    with atomic_rows(prompts) as writer:
        for batch in table.to_batches():
            writer.write(batch)
    gen = GenerateConfig.make(model=cfg.policy, n=n, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, seed=cfg.seed + SIGNAL_SALT, dtype=cfg.dtype, device=cfg.device)
    rew = RewardConfig.make(reward=cfg.reward, device=cfg.device)
    score(prompts, paths, gen, rew, parts=("generate", "reward"), restart_changed=True, **(engine or {}))
    scored = {r["prompt_id"]: r for b in iter_shards(paths.rewarded) for r in b.data.to_pylist()}
    got = [scored[str(r["prompt_id"])] for r in rows]
    return [g["responses"] for g in got], [np.asarray(g["rewards"], float) for g in got]


def gradient_signal(measured: str | Path, out_dir: str | Path, cfg: SignalConfig, *,
                    engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The gradient-signal check (module docstring) on ``cfg.prompts`` pool prompts spread over PVar.

    Draws ``2·samples`` fresh responses per prompt (sets A and B) into ``out_dir/fresh``, scores them
    with ``cfg.reward``, and writes ``signal.json`` (fits) and ``signal.jsonl`` (per prompt) to ``out_dir``.
    ``engine``: where the sampling runs (:meth:`pvar.pipeline.sharded.EngineConfig.options`).
    """
    import torch

    from pvar.backends.gradients import load_policy, response_gradients
    from pvar.core.theory import dpo_coefficients, preference_gaps
    from pvar.io.jsonable import jsonable

    out = Path(out_dir)
    rows = _pool_rows(Path(measured))
    pvar = np.array([np.nan if r.get("pvar") is None else r["pvar"] for r in rows], float)
    chosen = [rows[i] for i in _pick(pvar, cfg.prompts)]
    samples, scale, beta = cfg.samples, cfg.scale, cfg.beta
    fresh, rewards = _fresh(cfg, chosen, 2 * samples, out / "fresh", engine)
    model, tok, plist, _ = load_policy(cfg.policy, device=cfg.device, params=cfg.params)
    per_prompt = []
    for row, resp, rew in zip(chosen, fresh, rewards, strict=True):
        grads, _ = response_gradients(model, tok, plist, row["prompt"], resp, max_length=cfg.max_length)
        g = []
        for part in (slice(0, samples), slice(samples, 2 * samples)):
            a = torch.tensor(dpo_coefficients(preference_gaps(rew[part], scale), beta), dtype=torch.float64,
                             device=grads.device)
            g.append(a @ grads[part].double())
        pool_r = np.array([x for x in row["rewards"] if x is not None], float)
        st = reward_stats(pool_r[None, :], scale=scale)
        per_prompt.append({"prompt_id": str(row["prompt_id"]), "pool_pvar": float(st.pvar[0]),
                           "pool_reward_std": float(st.reward_std[0]), "dot": float(g[0] @ g[1]),
                           "norm_a": float(g[0].norm()), "norm_b": float(g[1].norm()),
                           "pvar_a": float(reward_stats(rew[None, :samples], scale=scale).pvar[0]),
                           "pvar_b": float(reward_stats(rew[None, samples:], scale=scale).pvar[0])})
        del grads
    dots = np.array([p["dot"] for p in per_prompt])
    result = {"n_prompts": len(per_prompt), "samples_per_set": samples, "beta": beta, "scale": scale,
              "params": cfg.params, "fit_pvar": fit(dots, np.array([p["pool_pvar"] for p in per_prompt])),
              "fit_reward_std": fit(dots, np.array([p["pool_reward_std"] for p in per_prompt])),
              "mean_dot": float(dots.mean()) if dots.size else math.nan}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "signal.jsonl", "".join(json.dumps(p) + "\n" for p in per_prompt))
    atomic_write_text(out / "signal.json", json.dumps(jsonable(result), indent=2) + "\n")
    return result


def gold_pairs(prompts_file: str | Path, out_file: str | Path, cfg: GoldPairsConfig, *,
               engine: dict[str, Any] | None = None) -> int:
    """Best-vs-worst pairs of fresh base-policy samples on held-out prompts, labelled by ``cfg.reward``
    (ties skipped); written as JSONL rows (prompt_id, prompt, chosen, rejected). Returns the count. The
    fresh samples are scored beside ``out_file``, in ``fresh/``."""
    from pvar.io.rows import read_rows

    rows: list[dict[str, Any]] = []
    for batch in read_rows(str(prompts_file), require=("prompt_id", "prompt")):
        rows += batch.data.to_pylist()
    rows = rows[:cfg.count]
    fresh, rewards = _fresh(cfg, rows, cfg.samples, Path(out_file).parent / "fresh", engine)
    out = []
    for row, resp, rew in zip(rows, fresh, rewards, strict=True):
        pid, text = str(row["prompt_id"]), row["prompt"]
        best, worst = int(np.argmax(rew)), int(np.argmin(rew))
        if rew[best] > rew[worst]:
            out.append({"prompt_id": pid, "prompt": text, "chosen": resp[best], "rejected": resp[worst],
                        "chosen_reward": float(rew[best]), "rejected_reward": float(rew[worst])})
    atomic_write_text(Path(out_file), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    return len(out)


def pair_preferences(adapter: str | Path, pairs_file: str | Path, *, beta: float, max_length: int = 320,
                     device: str = "cpu") -> dict[str, Any]:
    """DPO loss and accuracy of a trained LoRA policy on labelled pairs, against its base as reference.

    The reference is the same model with the adapter disabled, so one model serves both sides.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pvar.backends.adapters import adapter_base, tokenizer_source
    from pvar.backends.gradients import batched_logprobs, sequence_ids

    pairs = [json.loads(x) for x in Path(pairs_file).read_text(encoding="utf-8").splitlines() if x.strip()]
    base = AutoModelForCausalLM.from_pretrained(adapter_base(Path(adapter)), dtype=torch.float32)
    from pvar.backends import onednn

    if str(device).startswith("cpu"):  # the base is still on the CPU here, whatever the device
        onednn.enable(base)  # float32 CPU products through oneDNN (backends/onednn.py)
    model = PeftModel.from_pretrained(base, str(adapter)).to(device).eval()
    tok = AutoTokenizer.from_pretrained(tokenizer_source(str(adapter)))
    seqs = [sequence_ids(tok, p["prompt"], p[side], max_length=max_length) for p in pairs
            for side in ("chosen", "rejected")]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    policy = batched_logprobs(model, seqs, pad_id=pad)
    with model.disable_adapter():  # the reference: the same model without its adapter
        ref = batched_logprobs(model, seqs, pad_id=pad)
    h = np.array(policy) - np.array(ref)  # chosen, rejected, chosen, ...
    margins = list(beta * (h[0::2] - h[1::2]))
    m = np.array(margins)
    loss = np.logaddexp(0.0, -m)  # −log σ(m), stable
    return {"n_pairs": int(m.size), "loss": float(loss.mean()) if m.size else math.nan,
            "accuracy": float((m > 0).mean()) if m.size else math.nan,
            "mean_margin": float(m.mean()) if m.size else math.nan}
