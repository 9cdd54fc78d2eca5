"""The numbers of a run's report, read back from its folder (numpy only; no plotting, no torch).

Separate win rates against the base policy are noisy (each arm's interval is about ±0.1 at 64
prompts), so arms are also compared *pairwise on the same eval prompts*: the per-prompt judge-score
difference and the head-to-head win rate, each with a paired bootstrap interval. The prompt
difficulty both arms share cancels, which is what lets real differences show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pvar.core import winrate
from pvar.core.stats import reward_stats, spearman

SCALES = (1.0, 3.0, 10.0, 30.0, 100.0)  # reward scales of the PVar-vs-std sweep


@dataclass(frozen=True)
class Pool:
    """The scored pool: per-prompt ids, PVar, reward std and the rewards themselves."""

    ids: np.ndarray
    pvar: np.ndarray
    reward_std: np.ndarray
    rewards: np.ndarray  # padded (n_prompts, max_n), NaN where missing


def read_pool(path: Path) -> Pool:
    from pvar.io.arrow import list_to_padded, to_numpy_float
    from pvar.io.rows import read_rows

    ids: list[np.ndarray] = []
    pv: list[np.ndarray] = []
    sd: list[np.ndarray] = []
    rw: list[np.ndarray] = []
    for batch in read_rows(path):
        data = batch.data
        ids.append(np.asarray(data.column("prompt_id").to_pylist(), dtype=object))
        pv.append(to_numpy_float(data.column("pvar")))
        sd.append(to_numpy_float(data.column("reward_std")))
        rw.append(list_to_padded(data.column("rewards")))
    width = max((r.shape[1] for r in rw), default=0)
    padded = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=np.nan) for r in rw]) \
        if rw else np.empty((0, 0))
    return Pool(np.concatenate(ids) if ids else np.empty(0, object), np.concatenate(pv) if pv else np.empty(0),
                np.concatenate(sd) if sd else np.empty(0), padded)


def top_ids(ids: np.ndarray, score: np.ndarray, k: int) -> set[str]:
    """The k highest-scoring ids, ties broken by id (as the selectors do)."""
    ok = np.isfinite(score)
    order = sorted(np.flatnonzero(ok), key=lambda i: (-score[i], ids[i]))
    return {str(ids[i]) for i in order[:k]}


def overlap(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a|: the share of one selection the other also picks (NaN when a is empty)."""
    return len(a & b) / len(a) if a else float("nan")


def scale_sweep(pool: Pool, k: int, scales: tuple[float, ...] = SCALES) -> list[dict[str, float]]:
    """At each reward scale: Spearman(PVar, std) and the share of top-k by PVar also top-k by std.

    PVar ranks like the reward std when s·Δ is small (tanh² ≈ (sΔ/2)²) and departs from it as the
    scale grows and large gaps saturate; this shows where the two selections actually differ.
    """
    std_top = top_ids(pool.ids, pool.reward_std, k)
    out = []
    for s in scales:
        pv = reward_stats(pool.rewards, scale=s).pvar
        out.append({"scale": s, "spearman": spearman(pv, pool.reward_std), "top_overlap": overlap(
            top_ids(pool.ids, pv, k), std_top)})
    return out


@dataclass(frozen=True)
class Judged:
    """One arm's eval: per-prompt judge scores of the arm and of the base policy, by prompt id.

    ``texts`` (the arm's answers, same order) lets two arms that gave the same answer tie exactly.
    """

    ids: np.ndarray
    policy: np.ndarray
    baseline: np.ndarray
    texts: np.ndarray | None = None


def read_jsonl(path: Path, *, missing_ok: bool = False, require: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows of a JSONL file a run wrote, each an object holding ``require``; ``missing_ok``: [] for a
    file a run has not written yet. A damaged file is an `InputError` naming its line and field."""
    from pvar.errors import InputError
    from pvar.io.readers import parse_line

    if missing_ok and not path.is_file():
        return []
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            row = parse_line(raw, str(path), lineno)
            if not isinstance(row, dict):
                raise InputError(str(path), f"expected a JSON object, got {type(row).__name__}", line=lineno)
            for key in require:
                if key not in row:
                    raise InputError(str(path), "missing", line=lineno, field=key)
            rows.append(row)
    return rows


def read_judgements(eval_dir: Path) -> Judged:
    """``judgements.jsonl`` of an eval folder, with the answers from ``outputs_policy.jsonl`` if present."""
    rows = read_jsonl(eval_dir / "judgements.jsonl", require=("prompt_id", "policy_score", "baseline_score"))
    ids = np.array([r["prompt_id"] for r in rows], dtype=object)
    texts = None
    if (eval_dir / "outputs_policy.jsonl").is_file():
        answer = {r["prompt_id"]: r["output"] for r in read_jsonl(eval_dir / "outputs_policy.jsonl",
                                                                   require=("prompt_id", "output"))}
        if all(pid in answer for pid in ids):
            texts = np.array([answer[pid] for pid in ids], dtype=object)
    return Judged(ids, np.array([r["policy_score"] for r in rows], float),
                  np.array([r["baseline_score"] for r in rows], float), texts)


@dataclass(frozen=True)
class Comparison:
    """Arm a against arm b on the prompts both were judged on."""

    a: str
    b: str
    n: int
    difference: dict[str, Any]  # mean judge-score difference a - b, paired bootstrap
    head_to_head: dict[str, Any]  # hard win rate of a over b, paired bootstrap
    within_noise: bool  # the difference's interval contains 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(a_name: str, a: np.ndarray, b_name: str, b: np.ndarray, *, n_boot: int, confidence: float,
            seed: int) -> Comparison:
    """Paired comparison of two arms' per-prompt scores (aligned arrays, shape (n,))."""
    diff = winrate.paired_difference(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
    h2h = winrate.win_rate(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
    noise = diff.ci_low <= 0.0 <= diff.ci_high
    return Comparison(a_name, b_name, diff.n, diff.as_dict(), h2h.as_dict(), bool(noise))


def aligned(judged: dict[str, Judged]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Prompt ids judged in every arm, and each arm's policy scores on them in that order.

    Where arms gave the very same answer, they get the very same score (that of the first such
    arm): the judge may have scored the text in different batches, and a last-bit difference must
    not count as a win.
    """
    if not judged:
        return np.empty(0, object), {}
    common = set.intersection(*(set(j.ids.tolist()) for j in judged.values()))
    ids = np.array(sorted(common), dtype=object)
    out: dict[str, np.ndarray] = {}
    seen: list[dict[str, float]] = [{} for _ in ids]  # per prompt: answer text -> score
    for name, j in judged.items():
        pos = [{pid: i for i, pid in enumerate(j.ids.tolist())}[pid] for pid in ids]
        scores = j.policy[pos].copy()
        if j.texts is not None:
            for k, text in enumerate(j.texts[pos]):
                scores[k] = seen[k].setdefault(text, scores[k])
        out[name] = scores
    return ids, out


def paired_comparisons(judged: dict[str, Judged], focus: str, groups: dict[str, list[str]], *, n_boot: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> list[Comparison]:
    """``focus`` against every other arm, and against each group of arms pooled per prompt.

    A group (the random seeds) is compared through the per-prompt mean of its members' scores:
    the seeds' own disagreement then counts as part of the baseline, not as extra noise.
    """
    ids, scores = aligned(judged)
    if focus not in scores or ids.size < 2:
        return []
    common = dict(n_boot=n_boot, confidence=confidence, seed=seed)
    out = [compare(focus, scores[focus], name, s, **common) for name, s in scores.items() if name != focus]
    for label, members in groups.items():
        present = [m for m in members if m in scores and m != focus]
        if len(present) > 1:
            pooled = np.mean([scores[m] for m in present], axis=0)
            out.append(compare(focus, scores[focus], f"{label} (mean of {len(present)})", pooled, **common))
    return out


@dataclass
class ArmSummary:
    """One arm's row of the headline table."""

    name: str
    group: str
    prompts: int | None = None
    pairs: int | None = None
    mean_pvar: float | None = None
    final_loss: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    eval: dict[str, Any] = field(default_factory=dict)  # eval.json's win_rate block, plus mean scores

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_finite(values: np.ndarray) -> float | None:
    ok = np.isfinite(values)
    return float(values[ok].mean()) if ok.any() else None


# -- rank reliability of the selection ----------------------------------------------------------


def rank_reliability(rewards: np.ndarray, k: int, *, scale: float, sizes: list[int] | None = None) -> list[dict]:
    """Test-retest overlap of the top-k by PVar between two disjoint sets of m samples per prompt.

    ``rewards`` (prompts, n) holds i.i.d. samples per prompt, so columns [0, m) and [m, 2m) are two
    independent measurements. Returns, per m, the overlap |top_A ∩ top_B| / k and chance (k / prompts).
    A selection made from all n samples is at least as reliable as the largest m shown.
    """
    n_prompts, n = rewards.shape
    out = []
    for m in sizes or list(range(2, n // 2 + 1)):
        a = reward_stats(rewards[:, :m], scale=scale).pvar
        b = reward_stats(rewards[:, m:2 * m], scale=scale).pvar
        ids = np.arange(n_prompts)
        out.append({"samples": m, "overlap": _top_overlap(a, b, ids, k), "chance": k / n_prompts if n_prompts else 0})
    return out


def resampled_reliability(rewards: np.ndarray, k: int, *, scale: float, sizes: list[int], draws: int = 50,
                          seed: int = 0) -> list[dict]:
    """Test-retest overlap of the top-k at sample sizes beyond what split halves reach: two sets of m rewards
    per prompt are drawn with replacement from the prompt's own observed rewards (a plug-in bootstrap of
    each prompt's reward distribution), ``draws`` times. Read it beside `rank_reliability` at the same m,
    which it should roughly reproduce (plug-in draws understate the spread of rare outcomes a little).
    """
    rng = np.random.default_rng(seed)
    valid = [r[np.isfinite(r)] for r in rewards]
    ids = np.arange(len(valid))
    out = []
    for m in sizes:
        got = []
        for _ in range(draws):
            sets = [np.stack([rng.choice(v, m) if v.size else np.full(m, np.nan) for v in valid]) for _ in (0, 1)]
            a, b = (reward_stats(x, scale=scale).pvar for x in sets)
            got.append(_top_overlap(a, b, ids, k))
        out.append({"samples": m, "overlap": float(np.mean(got)), "chance": k / len(valid) if valid else 0})
    return out


def _top_overlap(a: np.ndarray, b: np.ndarray, ids: np.ndarray, k: int) -> float:
    """Top-k overlap; ties at the cut are shared out by expectation (a random tie-break would add noise)."""
    def members(score: np.ndarray) -> np.ndarray:
        s = np.where(np.isfinite(score), score, -np.inf)
        cut = np.sort(s)[::-1][k - 1]
        above, at = s > cut, s == cut
        w = above.astype(float)
        w[at] = (k - above.sum()) / at.sum()
        return w

    return float((members(a) * members(b)).sum() / k) if k else math.nan
