"""Win rates of one model's answers against another's on the same prompts, with honest intervals.

A judge gives each prompt's two answers a score each: ``a`` (the policy) and ``b`` (the
baseline). Three estimators of P(a beats b) over prompts:

- **hard**: 1 if a > b, 1/2 on an exact tie, 0 otherwise; averaged over prompts.
- **soft**: sigmoid(soft_scale * (a - b)) averaged over prompts: a Bradley-Terry reading of the
  score gap, less noisy than the hard rate when many gaps are tiny.
- **length-controlled (LC)**: AlpacaEval 2.0's counterfactual "what would the win rate be if
  both answers had the same length" (Dubois et al. 2024, arXiv 2404.04475), in the simplified
  form that fits two models on one prompt set (see `length_controlled_win_rate`).

Every interval is a paired percentile bootstrap over prompts: a resample draws prompt indices
with replacement and keeps each prompt's two answers together, so the prompt-to-prompt variation
shared by both models cancels. Resamples are one ``(rows x n)`` index matrix per chunk; chunk
rows depend only on n, so a seed fixes the resamples and the same seed gives every estimator
(hard, soft, LC, differences) the same resamples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

HARD = "winrate/hard-paired-bootstrap-v1"
SOFT = "winrate/soft-paired-bootstrap-v1"
LENGTH_CONTROLLED = "winrate/lc-glm-tanh-len-v1"
PAIRED_DIFFERENCE = "winrate/paired-difference-bootstrap-v1"

# Ridge penalties on the summed log-likelihood, i.e. Gaussian priors N(0, 1 / lambda): weak enough to
# vanish against n prompts of data, strong enough to keep the fit finite when the data separate.
LC_L2_LENGTH = 1e-2  # theta1 (length coefficient): prior sd 10 on the logit scale
LC_L2_INTERCEPT = 1e-4  # theta0 (the quality gap): prior sd 100, only there for finiteness
_CELLS = 1 << 20  # resample cells (rows x n) per chunk: bounds memory at ~8 MB per float array
_NEWTON_ITERS = 100
_NEWTON_TOL = 1e-9  # on theta: LC = sigmoid(theta0) moves by < 3e-10


@dataclass(frozen=True)
class WinRate:
    """A win rate of a over b in [0, 1] with its bootstrap interval and the hard tallies.

    ``wins``/``losses``/``n_ties`` count prompts with a > b, a < b and a == b (exact), whatever
    the estimator, so a reader always sees how many prompts the judge could not separate.
    """

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    n_ties: int
    wins: int
    losses: int
    method: str = HARD
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval over ``n`` prompts."""

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    method: str = PAIRED_DIFFERENCE
    confidence: float = 0.95

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


# -- checks and helpers ---------------------------------------------------------------------------


def _paired(a: np.ndarray, b: np.ndarray, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate two per-prompt arrays: 1-D, same length, at least one prompt, all finite."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one value per prompt), got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"{what} of a and b differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError(f"no prompts: {what} are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{what} must be finite (no NaN or inf)")
    return a, b


def _check_boot(n_boot: int, confidence: float) -> None:
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"soft_scale must be a finite number > 0, got {scale}")
    return scale


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, accurate in both tails (no overflow, no 1 - tiny cancellation)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap prompt indices, ``(rows x n)`` int64 per chunk, ``n_boot`` rows in all."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CELLS // n)
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n))


def _interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the bootstrap replicates ``boot`` (shape ``(n_boot,)``)."""
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _boot_mean(y: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Paired percentile bootstrap interval of ``y.mean()``; ``y`` has shape ``(n,)``."""
    boot = np.concatenate([y[idx].sum(axis=1) / y.size for idx in _resamples(y.size, n_boot, seed)])
    return _interval(boot, confidence)


def _tallies(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    return {"n": int(a.size), "n_ties": int((a == b).sum()), "wins": int((a > b).sum()),
            "losses": int((a < b).sum())}


def hard_judgements(a_scores: np.ndarray, b_scores: np.ndarray) -> np.ndarray:
    """Per-prompt hard judgement, shape ``(n,)``: 1.0 if a > b, 0.5 on an exact tie, else 0.0."""
    a, b = _paired(a_scores, b_scores)
    return (a > b) + 0.5 * (a == b)


def soft_judgements(a_scores: np.ndarray, b_scores: np.ndarray, soft_scale: float) -> np.ndarray:
    """Per-prompt Bradley-Terry judgement sigmoid(soft_scale * (a - b)), shape ``(n,)``."""
    a, b = _paired(a_scores, b_scores)
    return sigmoid(_check_scale(soft_scale) * (a - b))


# -- win rates and differences --------------------------------------------------------------------


def win_rate(
    a_scores: np.ndarray,
    b_scores: np.ndarray,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    soft_scale: float | None = None,
) -> WinRate:
    """Win rate of a over b with a paired percentile bootstrap interval over prompts.

    Parameters
    ----------
    a_scores, b_scores : array, shape (n,)
        The judge's score of each prompt's a answer and b answer (finite).
    soft_scale : float, optional
        None gives the hard rate (ties count 1/2); a value s gives the soft rate
        mean(sigmoid(s * (a - b))), which tends to the hard rate as s grows.

    Swapping a and b gives 1 - estimate (and the mirrored interval); identical scores give
    exactly 0.5 with every prompt a tie.
    """
    _check_boot(n_boot, confidence)
    a, b = _paired(a_scores, b_scores)
    y = hard_judgements(a, b) if soft_scale is None else soft_judgements(a, b, soft_scale)
    low, high = _boot_mean(y, n_boot, confidence, seed)
    method = HARD if soft_scale is None else SOFT
    return WinRate(float(y.sum() / y.size), low, high, method=method, confidence=confidence, **_tallies(a, b))


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean per-prompt difference mean(a - b) with a paired bootstrap interval over prompts.

    For comparing two arms (e.g. top-PVar vs random) scored on the same prompts: pairing removes
    the prompt difficulty both arms share, so the interval is much narrower than for two
    independent means. ``a`` and ``b`` have shape (n,).
    """
    _check_boot(n_boot, confidence)
    a, b = _paired(a, b)
    d = a - b
    low, high = _boot_mean(d, n_boot, confidence, seed)
    return Estimate(float(d.sum() / d.size), low, high, int(d.size), confidence=confidence)


def is_extreme_change(raw: float, adjusted: float, *, abs_diff: float = 0.10, rel_diff: float = 4.0) -> bool:
    """Whether an adjusted win rate moved suspiciously far from the raw one (AlpacaEval's warning rule).

    Too far: below min(raw - raw / rel_diff, raw - abs_diff) or above
    max(raw + (1 - raw) / rel_diff, raw + abs_diff). Usually a sign the GLM fit is degenerate
    (few prompts, or length and outcome separating the data), not that length explains it all.
    """
    low = min(raw - raw / rel_diff, raw - abs_diff)
    high = max(raw + (1 - raw) / rel_diff, raw + abs_diff)
    return adjusted < low or adjusted > high


# -- length-controlled win rate -------------------------------------------------------------------


def length_feature(a_lengths: np.ndarray, b_lengths: np.ndarray) -> np.ndarray:
    """tanh((len_a - len_b) / std), the GLM's length term; shape ``(..., n)``, rows independent.

    As in AlpacaEval the difference is scaled by its sample std (ddof=1) over prompts but not
    centred: zero still means "same length". All zeros where the std is 0 or n < 2.
    """
    d = np.asarray(a_lengths, dtype=np.float64) - np.asarray(b_lengths, dtype=np.float64)
    n = d.shape[-1]
    std = d.std(axis=-1, ddof=1, keepdims=True) if n > 1 else np.zeros((*d.shape[:-1], 1))
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, np.tanh(d / safe), 0.0)


def _objective(y: np.ndarray, x: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Penalised Bernoulli log-likelihood per row divided by n, shape ``(rows,)``."""
    n = y.shape[1]
    eta = t0[:, None] + t1[:, None] * x
    ll = (y * eta - np.logaddexp(0.0, eta)).mean(axis=1)
    return ll - 0.5 * (LC_L2_INTERCEPT * t0 * t0 + LC_L2_LENGTH * t1 * t1) / n


def _newton_step(y: np.ndarray, x: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton direction for every row: the 2 x 2 system solved in closed form."""
    n = y.shape[1]
    with np.errstate(over="ignore"):  # exp overflow gives p = 0 exactly, which is what we want
        p = 1.0 / (1.0 + np.exp(-(t0[:, None] + t1[:, None] * x)))
    r = y - p
    w = p - p * p
    wx = w * x
    g0 = r.mean(axis=1) - LC_L2_INTERCEPT * t0 / n
    g1 = np.einsum("ij,ij->i", r, x) / n - LC_L2_LENGTH * t1 / n
    h00 = w.mean(axis=1) + LC_L2_INTERCEPT / n
    h01 = wx.mean(axis=1)
    h11 = np.einsum("ij,ij->i", wx, x) / n + LC_L2_LENGTH / n
    det = h00 * h11 - h01 * h01
    return (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det


def fit_length_glm(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit logit P(a beats b) = theta0 + theta1 * x for every row at once by damped Newton (IRLS).

    Parameters
    ----------
    y : array, shape (rows, n)
        Judgements in [0, 1] (fractional targets: the Bernoulli log-likelihood is concave in
        theta for any y in [0, 1], and the ridge makes it strictly concave).
    x : array, shape (rows, n)
        The length feature of each prompt.

    Returns ``(theta0, theta1)``, each of shape (rows,). A step that lowers a row's objective is
    halved until it does not, so rows whose data separate (length or the winner decides every
    judgement) still converge; converged rows drop out of later iterations.
    """
    rows = y.shape[0]
    t0, t1 = np.zeros(rows), np.zeros(rows)
    f = _objective(y, x, t0, t1)
    live = np.arange(rows)
    for _ in range(_NEWTON_ITERS):
        yl, xl, a0, a1, fl = y[live], x[live], t0[live], t1[live], f[live]
        s0, s1 = _newton_step(yl, xl, a0, a1)
        step = np.ones(live.size)
        new = _objective(yl, xl, a0 + s0, a1 + s1)
        for _ in range(40):  # backtracking: only rows whose objective fell halve their step again
            worse = np.flatnonzero(new < fl)
            if worse.size == 0:
                break
            step[worse] /= 2
            new[worse] = _objective(yl[worse], xl[worse], a0[worse] + step[worse] * s0[worse],
                                    a1[worse] + step[worse] * s1[worse])
        t0[live], t1[live], f[live] = a0 + step * s0, a1 + step * s1, np.maximum(new, fl)
        live = live[np.maximum(np.abs(step * s0), np.abs(step * s1)) >= _NEWTON_TOL]
        if live.size == 0:
            break
    return t0, t1


def length_controlled_win_rate(
    a_scores: np.ndarray,
    b_scores: np.ndarray,
    a_lengths: np.ndarray,
    b_lengths: np.ndarray,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> WinRate:
    """AlpacaEval-2.0-style length-controlled win rate of a over b, with a bootstrap interval.

    Fits logit y_i = theta0 + theta1 * tanh((len_a - len_b)_i / std) to the hard judgements y_i
    (ties 1/2) by maximising the Bernoulli log-likelihood with fractional targets, plus ridge
    penalties ``LC_L2_LENGTH`` = 1e-2 on theta1 and ``LC_L2_INTERCEPT`` = 1e-4 on theta0 (on the
    summed log-likelihood: Gaussian priors with sd 10 and 100, negligible against n prompts but
    finite estimates when the data separate). LC = sigmoid(theta0): the prediction with the
    length difference set to zero.

    AlpacaEval's GLM also has a per-instruction difficulty term fitted across many models; with
    two models on one prompt set it is not identified and drops out, so the mean over prompts
    of the prediction is just sigmoid(theta0). The fit is symmetric: swapping a and b negates
    theta and gives 1 - LC. Each bootstrap resample refits the whole model (std included), all
    resamples of a chunk at once.

    Caveat: when length decides *every* judgement (a wins exactly when longer) the data are
    separable and the unpenalised fit has no maximum; a logistic curve cannot be a step, so
    the intercept only moves part of the way to 1/2 (with equal |length gaps| and a share q of
    longer answers, the ridge limit is sigmoid(logit(q) / 2): 2/3 for q = 0.8). With judge
    noise (any real judge) the GLM is identified and LC recovers 1/2.

    Parameters
    ----------
    a_scores, b_scores : array, shape (n,)
        Judge scores (finite).
    a_lengths, b_lengths : array, shape (n,)
        Answer lengths, both in the same unit (characters, words or tokens).
    """
    _check_boot(n_boot, confidence)
    a, b = _paired(a_scores, b_scores)
    la, lb = _paired(a_lengths, b_lengths, "lengths")
    if la.size != a.size:
        raise ValueError(f"lengths cover {la.size} prompts but scores cover {a.size}")
    y = hard_judgements(a, b)
    t0, _ = fit_length_glm(y[None], length_feature(la, lb)[None])
    boot = np.concatenate([
        sigmoid(fit_length_glm(y[idx], length_feature(la[idx], lb[idx]))[0])
        for idx in _resamples(y.size, n_boot, seed)
    ])
    low, high = _interval(boot, confidence)
    return WinRate(float(sigmoid(t0)[0]), low, high, method=LENGTH_CONTROLLED, confidence=confidence,
                   **_tallies(a, b))
