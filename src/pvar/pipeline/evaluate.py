"""eval: a trained policy against a baseline on held-out prompts, judged by a held-out scorer.

One greedy answer per prompt and side; the judge scores both; the win rate of the policy over
the baseline is reported hard (ties 1/2), soft (Bradley-Terry on the score gap) and length
controlled (AlpacaEval 2.0's GLM without its per-instruction difficulty term; "LC (GLM, no difficulty
term)" in reports), each with a paired bootstrap interval over prompts
(`pvar.core.winrate`). The judge must not be the reward that selected the training prompts, or
the evaluation rewards the selection for agreeing with itself.

Outputs in ``out_dir`` (all written atomically):

- ``outputs_policy.jsonl`` / ``outputs_baseline.jsonl``: the generations, reused by a rerun whose
  generation settings hash to the key in the ``.key.json`` file beside them;
- ``judgements.jsonl``: per prompt, both scores and lengths (for paired arm-vs-arm comparisons);
- ``eval.json`` (every number, the config, judge and estimator names), ``eval.md`` (a table);
- ``alpaca_eval_policy.json`` / ``alpaca_eval_baseline.json``: alpaca_eval's model-outputs format
  ({"instruction", "output", "generator"}), for users with an API judge.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pvar.backends.adapters import tokenizer_source
from pvar.backends.base import Prompt, prompt_text
from pvar.config import Device, Dtype, Seed, StageConfig, like
from pvar.core import winrate
from pvar.errors import ConfigError
from pvar.fingerprint import json_digest
from pvar.io.paths import check_output
from pvar.io.rows import read_rows
from pvar.io.writers import atomic_write_text
from pvar.pipeline.eval_answers import side_outputs
from pvar.pipeline.generate import GenerateConfig
from pvar.version import __version__

SIDES = ("policy", "baseline")
LC_NAME = "LC (GLM, no difficulty term)"  # AlpacaEval 2.0's GLM without its per-instruction difficulty term
_JUDGE_CHUNK = 512  # prompts per judge call: bounds the judge's memory on large eval sets


class EvalConfig(StageConfig):
    policy: str = Field(description="Trained policy: a folder (full model or LoRA adapter), a hub name or 'smollm2'.")
    baseline: str = Field("smollm2", description="What the policy is compared against (usually its base model).")
    prompts: str = Field(description="Held-out prompts: rows with prompt_id, prompt and (for *-ref judges) reference.")
    judge: str = Field("mpnet-ref", description="Judge spec; must differ from the selection reward (minilm-ref).")
    selection_reward: str | None = Field(None, description="The reward that selected prompts; refused as judge.")
    max_new_tokens: int = like(GenerateConfig, "max_new_tokens", description="Cap on generated tokens per answer.")
    batch_size: int = like(GenerateConfig, "batch_size", default=32,
                           description="Sequences per generate call (a speed knob, not in the cache key).")
    seed: Seed = Field(0, description="Bootstrap seed (decoding is greedy and needs none).")
    n_boot: int = Field(2000, ge=10, le=1_000_000, description="Bootstrap resamples for the hard and soft win rates.")
    lc_boot: int = Field(1000, ge=10, le=1_000_000,
                         description="Bootstrap resamples for the LC win rate (each refits the GLM).")
    confidence: float = Field(0.95, gt=0, lt=1, description="Interval coverage.")
    soft_scale: float = Field(
        10.0, gt=0,
        description="Soft win rate sigmoid(scale * (a - b)): cosine-judge gaps are ~0.01-0.2, so 10 maps them "
                    "to preferences of ~0.52-0.88; use ~1 for reward models with logit-scale outputs.",
    )
    lc_length: Literal["tokens", "words", "chars"] = Field(
        "tokens", description="Length unit of the LC regression: policy-tokenizer tokens (words if none loads).")
    device: Device = like(GenerateConfig, "device", description="torch device for generation and the judge.")
    dtype: Dtype = like(GenerateConfig, "dtype", default="float32", description="torch dtype of generation; float32 "
                        "keeps greedy answers independent of which prompts share a batch (bf16 kernels are not).")
    backend: Literal["hf", "vllm"] = Field("hf", description="Generation backend: hf (transformers) or vllm "
                                           "(GPU; greedy, the same token-id prompts).")
    tensor_parallel_size: int = like(GenerateConfig, "tensor_parallel_size")
    gpu_memory_utilization: float = like(GenerateConfig, "gpu_memory_utilization")

    omit_at_default = ("backend", "tensor_parallel_size", "gpu_memory_utilization")

    def fingerprint(self) -> str:
        """The settings' hash; for a gold judge, also the task rules' version (judged under other
        rules is judged differently, so an eval step keyed by it is recomputed)."""
        from pvar.backends.gold_reward import rules_version
        from pvar.fingerprint import digest

        base, version = super().fingerprint(), rules_version(self.judge)
        return digest(base, version) if version else base


@dataclasses.dataclass(frozen=True)
class SideSummary:
    """One side's mean judge score and mean answer lengths (tokens NaN when no tokenizer loaded)."""

    model: str
    mean_score: float
    mean_chars: float
    mean_words: float
    mean_tokens: float
    stopped_at_eos: float
    cached: bool


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """The three win rates of policy over baseline, each side's summary, and where files went."""

    hard: winrate.WinRate
    soft: winrate.WinRate
    length_controlled: winrate.WinRate
    policy: SideSummary
    baseline: SideSummary
    n_prompts: int
    lc_length: str
    out_dir: Path


# -- inputs and cache keys ------------------------------------------------------------------------


def _load_prompts(path: str, judge: str) -> tuple[list[str], list[Prompt], list[str | None]]:
    """Prompt ids, prompts and references; a reference-based judge needs a reference on every row
    (checked here so the error names the file and line)."""
    from pvar.backends.spec import is_exact

    key = judge.strip().lower()
    need = ("prompt_id", "prompt", "reference") if key.endswith("-ref") or is_exact(key) else ("prompt_id", "prompt")
    ids: list[str] = []
    prompts: list[Prompt] = []
    refs: list[str | None] = []
    check = None
    if is_exact(key):  # a gold judge reads each row's task spec: a bad one is named before any answer
        from pvar.backends.spec import parse_reward_spec

        check = getattr(parse_reward_spec(judge), "check_reference", None)
    for batch in read_rows(path, require=need):
        data = batch.data
        ids += [str(x) for x in data.column("prompt_id").to_pylist()]
        prompts += data.column("prompt").to_pylist()
        names = data.schema.names
        batch_refs = data.column("reference").to_pylist() if "reference" in names else [None] * data.num_rows
        for i, ref in enumerate(batch_refs if check is not None else []):
            problem = check(ref)
            if problem:
                raise batch.error(i, "reference", problem)
        refs += batch_refs
    return ids, prompts, refs


# -- judging and lengths --------------------------------------------------------------------------


def load_judge(cfg: EvalConfig) -> Any:
    """The judge, parsed and loaded: done before any answer is generated, so a bad judge costs nothing."""
    from pvar.backends.callable_reward import ColumnReward
    from pvar.backends.spec import parse_reward_spec

    judge = parse_reward_spec(cfg.judge, device=cfg.device)
    if isinstance(judge, ColumnReward):
        raise ConfigError(f"judge: {cfg.judge!r} reads stored rewards; a judge must score the generated answers")
    judge.setup()
    return judge


def _judge(judge: Any, prompts: list[Prompt], refs: list[str | None], a: list[str],
           b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Judge scores of both sides, shape (n,) each. Identical answers are scored once, so they tie
    exactly (a judge batched differently could otherwise split them by an ulp)."""
    sa, sb = np.empty(len(a)), np.empty(len(a))
    for start in range(0, len(a), _JUDGE_CHUNK):
        part = slice(start, start + _JUDGE_CHUNK)
        pairs = [[x] if x == y else [x, y] for x, y in zip(a[part], b[part], strict=True)]
        got = judge.score(prompts[part], pairs, refs[part]).rewards
        sa[part] = [r[0] for r in got]
        sb[part] = [r[-1] for r in got]
    return sa, sb


def _token_counter(model: str) -> Any:
    """``texts -> token counts`` with the policy's tokenizer, or None if none can be loaded."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_source(model))
    except (OSError, ValueError, ImportError, KeyError):
        return None
    return lambda texts: np.array([len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]], float)


def lengths(texts: list[str], count_tokens: Any) -> dict[str, np.ndarray]:
    """Characters, whitespace words and (if a counter is given) tokens of each text, shape (n,)."""
    out = {"chars": np.array([len(t) for t in texts], float), "words": np.array([len(t.split()) for t in texts], float)}
    out["tokens"] = count_tokens(texts) if count_tokens is not None and texts else np.full(len(texts), np.nan)
    return out


# -- statistics and reports -----------------------------------------------------------------------


def _summary(model: str, scores: np.ndarray, lens: dict[str, np.ndarray], rows: list[dict],
             cached: bool) -> SideSummary:
    tokens = lens["tokens"]
    return SideSummary(model, float(scores.mean()), float(lens["chars"].mean()), float(lens["words"].mean()),
                       float(tokens.mean()) if np.isfinite(tokens).all() else float("nan"),
                       float(np.mean([bool(r["stopped_at_eos"]) for r in rows])), cached)


def _generator_names(cfg: EvalConfig) -> tuple[str, str]:
    """Short names for alpaca_eval's ``generator`` field; full strings when the short ones clash."""
    short = (Path(cfg.policy).name or cfg.policy, Path(cfg.baseline).name or cfg.baseline)
    return short if short[0] != short[1] else (cfg.policy, cfg.baseline)


def _pct(w: winrate.WinRate) -> str:
    return f"{100 * w.estimate:.1f}% | [{100 * w.ci_low:.1f}, {100 * w.ci_high:.1f}]"


def render_markdown(res: EvalResult, cfg: EvalConfig) -> str:
    """The eval table: three win rates with intervals, then each side's score and lengths."""
    conf = f"{100 * cfg.confidence:g}%"
    h = res.hard
    lines = [
        f"# Evaluation: {cfg.policy} vs {cfg.baseline}", "",
        f"Judge `{cfg.judge}`, {res.n_prompts} prompts, greedy decoding, max {cfg.max_new_tokens} new tokens. "
        f"Policy wins {h.wins}, loses {h.losses}, ties {h.n_ties}.", "",
        f"| win rate of policy over baseline | estimate | {conf} CI (paired bootstrap) |", "|---|---|---|",
        f"| hard (ties count 1/2) | {_pct(res.hard)} |",
        f"| soft (sigmoid({cfg.soft_scale:g} x score gap)) | {_pct(res.soft)} |",
        f"| {LC_NAME} on tanh of the {res.lc_length} gap | {_pct(res.length_controlled)} |", "",
        "| | policy | baseline |", "|---|---|---|",
    ]
    p, b = res.policy, res.baseline
    table = [("mean judge score", "mean_score", ".4f"), ("mean length (chars)", "mean_chars", ".1f"),
             ("mean length (words)", "mean_words", ".1f"), ("mean length (tokens)", "mean_tokens", ".1f"),
             ("ended with EOS", "stopped_at_eos", ".0%")]
    for label, attr, fmt in table:
        lines.append(f"| {label} | {getattr(p, attr):{fmt}} | {getattr(b, attr):{fmt}} |")
    lines += [f"\n> Warning: {w}" for w in _warnings(res)]
    return "\n".join(lines) + "\n"


def _warnings(res: EvalResult) -> list[str]:
    out = []
    if winrate.is_extreme_change(res.hard.estimate, res.length_controlled.estimate):
        out.append(f"the {LC_NAME} win rate ({100 * res.length_controlled.estimate:.1f}%) is far from the raw "
                   f"one ({100 * res.hard.estimate:.1f}%): the length GLM may be degenerate (few prompts, or length "
                   "and outcome separating them); trust the hard and soft rates first")
    return out


def _eval_json(res: EvalResult, cfg: EvalConfig) -> dict[str, Any]:
    def side(s: SideSummary) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in dataclasses.asdict(s).items()}

    return {
        "pvar_version": __version__, "judge": cfg.judge, "n_prompts": res.n_prompts,
        "win_rate": {"hard": res.hard.as_dict(), "soft": res.soft.as_dict(),
                     "length_controlled": res.length_controlled.as_dict()},
        "estimators": {"hard": winrate.HARD, "soft": winrate.SOFT, "length_controlled": winrate.LENGTH_CONTROLLED},
        "soft_scale": cfg.soft_scale, "lc_length_unit": res.lc_length,
        "lc_penalties": {"theta1_l2": winrate.LC_L2_LENGTH, "theta0_l2": winrate.LC_L2_INTERCEPT},
        "policy": side(res.policy), "baseline": side(res.baseline), "warnings": _warnings(res),
        "config": cfg.model_dump(), "config_fingerprint": cfg.fingerprint(),
    }


def _write_outputs(out: Path, cfg: EvalConfig, res: EvalResult, ids: list[str], prompts: list[Prompt],
                   outputs: dict[str, list[str]], scores: dict[str, np.ndarray],
                   lens: dict[str, dict[str, np.ndarray]]) -> None:
    rows = []
    for i, pid in enumerate(ids):
        row: dict[str, Any] = {"prompt_id": pid}
        for s in SIDES:
            row[f"{s}_score"] = float(scores[s][i])
            row.update({f"{s}_{unit}": (None if np.isnan(v[i]) else int(v[i])) for unit, v in lens[s].items()})
        rows.append(row)
    atomic_write_text(out / "judgements.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    for s, name in zip(SIDES, _generator_names(cfg), strict=True):
        alpaca = [{"instruction": prompt_text(p), "output": o, "generator": name}
                  for p, o in zip(prompts, outputs[s], strict=True)]
        atomic_write_text(out / f"alpaca_eval_{s}.json", json.dumps(alpaca, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(out / "eval.md", render_markdown(res, cfg))
    atomic_write_text(out / "eval.json", json.dumps(_eval_json(res, cfg), indent=2, ensure_ascii=False) + "\n")


def _check_policy(model: str, side: str) -> None:
    """A policy that is a folder must be a model or adapter; a missing one is named now, not after
    the other side's answers have been generated."""
    if (Path(model) / "adapter_config.json").is_file():
        return
    from pvar.backends.assets import check_policy_ref

    check_policy_ref(model, side)


def check_judge(cfg: EvalConfig) -> None:
    """A learned judge must not be the selection reward (it would grade its own picks)."""
    from pvar.backends.spec import is_exact

    if is_exact(cfg.judge):
        return  # a task's gold program is the objective itself, not a learned twin of the selection reward
    if cfg.selection_reward is not None and cfg.judge.strip().lower() == cfg.selection_reward.strip().lower():
        raise ConfigError(f"judge: {cfg.judge!r} is the selection reward; judge with a held-out scorer "
                          "(e.g. mpnet-ref when selecting with minilm-ref)")


def evaluate(cfg: EvalConfig, out_dir: str | Path) -> EvalResult:
    """Generate (or reuse) both sides' answers, judge them, and write the win-rate report.

    Only generation is cached: judging and the bootstrap rerun every time (seconds), so a new
    judge, seed or number of resamples never needs new generations.
    """
    check_judge(cfg)
    ids, prompts, refs = _load_prompts(cfg.prompts, cfg.judge)
    for side in SIDES:
        _check_policy(getattr(cfg, side), side)
    judge = load_judge(cfg)
    out = Path(out_dir)
    check_output(cfg.prompts, out)
    out.mkdir(parents=True, exist_ok=True)
    digest = json_digest([ids, prompts])
    rows, cached, known = {}, {}, {}
    for s in SIDES:
        rows[s], cached[s] = side_outputs(cfg, s, out, ids, prompts, digest, known)
    outputs = {s: [str(r["output"]) for r in rows[s]] for s in SIDES}
    scores = dict(zip(SIDES, _judge(judge, prompts, refs, outputs["policy"], outputs["baseline"]), strict=True))
    counter = _token_counter(cfg.policy)  # cheap; tokens are reported whatever unit LC uses
    lens = {s: lengths(outputs[s], counter) for s in SIDES}
    unit = "words" if cfg.lc_length == "tokens" and counter is None else cfg.lc_length
    a, b = scores["policy"], scores["baseline"]
    common = dict(confidence=cfg.confidence, seed=cfg.seed)
    res = EvalResult(
        hard=winrate.win_rate(a, b, n_boot=cfg.n_boot, **common),
        soft=winrate.win_rate(a, b, n_boot=cfg.n_boot, soft_scale=cfg.soft_scale, **common),
        length_controlled=winrate.length_controlled_win_rate(
            a, b, lens["policy"][unit], lens["baseline"][unit], n_boot=cfg.lc_boot, **common),
        policy=_summary(cfg.policy, a, lens["policy"], rows["policy"], cached["policy"]),
        baseline=_summary(cfg.baseline, b, lens["baseline"], rows["baseline"], cached["baseline"]),
        n_prompts=len(ids), lc_length=unit, out_dir=out,
    )
    _write_outputs(out, cfg, res, ids, prompts, outputs, scores, lens)
    return res


def run(source: str | Path, output: str | Path, cfg: EvalConfig) -> EvalResult:
    """The verb's uniform entry (source, output, cfg): :func:`evaluate` on the held-out prompts ``source``."""
    return evaluate(cfg.model_copy(update={"prompts": str(source)}), output)
