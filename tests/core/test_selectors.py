"""Selectors of the literature: each against a hand-computed example from its paper's definition."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvar.core.pairs import best_worst, sweet_spot
from pvar.core.scores import alignment_potential, reward_margin, rip_keep, zscore
from tests.conftest import write_jsonl


def test_reward_margin_is_best_minus_worst():
    """arXiv 2502.14560: margin = r(best) - r(worst); NaN rewards ignored, < 2 valid -> NaN."""
    got = reward_margin([[0.2, 0.9, 0.5], [1.0, np.nan, 4.0], [3.0]])
    assert got[:2].tolist() == pytest.approx([0.7, 3.0]) and np.isnan(got[2])


def test_alignment_potential_by_hand():
    """z(margin) - z(|logp margin|): margins 1, 2, 3 (z = -1.2247, 0, 1.2247); |logp| 3, 2, 1 reversed."""
    margin = np.array([1.0, 2.0, 3.0])
    logp = np.array([-3.0, 2.0, 1.0])  # |.| = 3, 2, 1
    z = np.sqrt(1.5)  # (x - 2) / std with population std sqrt(2/3)
    assert alignment_potential(margin, logp).tolist() == pytest.approx([-2 * z, 0.0, 2 * z])
    # the pair the policy already separates (|logp| large) ranks below one it cannot tell apart
    assert np.argmax(alignment_potential(np.array([1.0, 1.0]), np.array([5.0, 0.1]))) == 1


def test_zscore_constant_and_nan():
    assert zscore(np.array([2.0, 2.0, np.nan])).tolist()[:2] == [0.0, 0.0]
    assert np.isnan(zscore(np.array([1.0, np.nan, 3.0]))[1])


def test_rip_by_hand():
    """RIP (arXiv 2501.18578) keeps rejected reward >= q_r, rejected length >= q_l, and gap <= q_g."""
    rejected_reward = np.array([0.0, 5.0, 5.0, 5.0, 6.0])
    rejected_length = np.array([9.0, 9.0, 1.0, 9.0, 9.0])
    gap = np.array([1.0, 1.0, 1.0, 9.0, 2.0])
    # quantiles: reward 25 % -> 5.0, length 25 % -> 9.0, gap 75 % -> 2.0
    keep = rip_keep(rejected_reward, rejected_length, gap)
    assert keep.tolist() == [False, True, False, False, True]
    assert rip_keep(rejected_reward, rejected_length, gap, reward_quantile=0, length_quantile=0,
                    gap_quantile=1).tolist() == [True] * 5
    with pytest.raises(ValueError, match="gap_quantile"):
        rip_keep(rejected_reward, rejected_length, gap, gap_quantile=1.5)


def test_sweet_spot_by_hand():
    """arXiv 2502.16825: rejected = the response nearest mu - 2 sigma, not the minimum."""
    rewards = [0.0, 4.0] + [5.0] * 13 + [6.0]  # mu = 5, sigma = sqrt(27/16) = 1.299, mu - 2 sigma = 2.40
    idx = sweet_spot([rewards])
    assert idx.chosen.tolist() == [15] and idx.rejected.tolist() == [1]  # 4.0 (|1.60|) beats 0.0 (|2.40|)
    assert best_worst([rewards]).rejected.tolist() == [0]
    tied = sweet_spot([[1.0, 1.0, 1.0], [2.0, np.nan, 1.0]])
    assert tied.prompt.tolist() == [1] and tied.rejected.tolist() == [2]


@given(st.lists(st.lists(st.floats(-5, 5), min_size=2, max_size=9), min_size=1, max_size=6))
def test_sweet_spot_properties(rows):
    width = max(map(len, rows))
    x = np.array([r + [np.nan] * (width - len(r)) for r in rows])
    idx = sweet_spot(x)
    bw = best_worst(x)
    assert idx.prompt.tolist() == bw.prompt.tolist()  # a pair exactly where best-worst has one
    chosen, rejected = x[idx.prompt, idx.chosen], x[idx.prompt, idx.rejected]
    assert (rejected < chosen).all() and (chosen == np.nanmax(x[idx.prompt], axis=1)).all()


# -- through the verbs -------------------------------------------------------------------------------

def _pool(tmp_path):
    rows = []
    for i in range(8):
        rewards = [0.1 * i, 0.5, 1.0 - 0.05 * i, 0.3]
        rows.append({"prompt_id": f"p{i}", "prompt": f"Q{i}?", "rewards": rewards,
                     "responses": [" ".join(["w"] * (k + 1 + i % 3)) for k in range(4)]})
    return write_jsonl(tmp_path / "pool.jsonl", rows)


def test_select_rip_and_pairs_sweet_spot_cli(tmp_path, cli):
    src = _pool(tmp_path)
    code, _out, err = cli("select", src, "-o", tmp_path / "rip.jsonl", "--rip")
    assert code == 0, err
    kept = [json.loads(x)["prompt_id"] for x in (tmp_path / "rip.jsonl").read_text().splitlines()]
    assert 0 < len(kept) < 8
    code, _, err = cli("pairs", src, "-o", tmp_path / "pairs.jsonl", "--rule", "sweet-spot")
    assert code == 0, err
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 8 and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)


def test_select_rip_matches_the_core_filter(tmp_path):
    from pvar.pipeline import select

    src = _pool(tmp_path)
    rows = [json.loads(x) for x in src.read_text().splitlines()]
    x = np.array([r["rewards"] for r in rows])
    bw = best_worst(x)
    rr = x[bw.prompt, bw.rejected]
    rl = np.array([len(rows[p]["responses"][r].split()) for p, r in zip(bw.prompt, bw.rejected, strict=True)])
    expected = {rows[i]["prompt_id"] for i in np.flatnonzero(rip_keep(rr, rl, x.max(1) - x.min(1)))}
    s = select.run(src, tmp_path / "o.jsonl", select.SelectConfig.make(mode="rip"))
    got = {json.loads(x)["prompt_id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()}
    assert got == expected and s.n_kept == len(expected)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    tmp = tmp_path_factory.mktemp("ap")
    return tiny_causal_lm(tmp / "model", [f"Q{i}? w w w w" for i in range(8)] + ["yes no maybe"])


def test_potential_stage_adds_the_columns(tmp_path, cli, tiny_policy, torch_one_thread):
    """logp_margin = log pi(best) - log pi(worst) with the policy; AP = z(margin) - z(|logp_margin|)."""
    from pvar.pipeline.potential import PotentialConfig, logp_margins

    src = _pool(tmp_path)
    code, _, err = cli("potential", src, "-o", tmp_path / "ap.jsonl", "--model", tiny_policy, "--max-length", "64")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "ap.jsonl").read_text().splitlines()]
    src_rows = [json.loads(x) for x in src.read_text().splitlines()]
    x = np.array([r["rewards"] for r in src_rows])
    bw = best_worst(x)
    pairs = [(src_rows[p]["prompt"], src_rows[p]["responses"][c], src_rows[p]["responses"][r])
             for p, c, r in zip(bw.prompt, bw.chosen, bw.rejected, strict=True)]
    lp = logp_margins(pairs, PotentialConfig.make(model=str(tiny_policy), max_length=64))
    assert [r["logp_margin"] for r in rows] == pytest.approx(lp.tolist())
    expected = alignment_potential(x.max(1) - x.min(1), lp)
    assert [r["alignment_potential"] for r in rows] == pytest.approx(expected.tolist())


def test_run_arms_of_the_literature(tmp_path, cli, tiny_policy, torch_one_thread):
    """`pvar run` (until pairs) with a reward-margin, an AP, a RIP and a sweet-spot arm."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
policy: {tiny_policy}
backend: fake
until: pairs
budget: 0.5
prompts: {{pool: 8, eval: 4}}
scoring: {{n: 4, reward: fake, max_new_tokens: 8}}
theory: {{prompts: 0}}
train: {{max_length: 64}}
arms:
  - {{name: top-margin, select: top, by: reward_range}}
  - {{name: top-ap, select: top, by: alignment_potential}}
  - {{name: rip, select: rip}}
  - {{name: sweet, select: top, by: pvar, rule: sweet-spot}}
""")
    code, _, err = cli("run", cfg, "-o", tmp_path / "run")
    assert code == 0, err
    run = tmp_path / "run"
    assert (run / "scoring" / "potential.parquet").is_file()
    state = json.loads((run / "state.json").read_text())["steps"]
    assert {"potential", "pairs:top-margin", "pairs:top-ap", "pairs:rip", "pairs:sweet"} <= set(state)
    assert state["potential"]["pairs"] == 8 and all(state[f"pairs:{a}"]["pairs"] > 0 for a in ("top-ap", "rip"))
    code, _, err = cli("run", cfg, "-o", tmp_path / "run")  # resumes: nothing recomputed
    assert code == 0 and "potential: done earlier" in err.replace("- ", ""), err
