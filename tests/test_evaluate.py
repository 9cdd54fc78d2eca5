"""eval: self-comparison ties exactly, every output file, cached generations, LoRA adapters, judge guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pvar.backends.hf_policy import HFPolicy  # noqa: E402
from pvar.errors import ConfigError, InputError  # noqa: E402
from pvar.pipeline.evaluate import EvalConfig, evaluate  # noqa: E402
from pvar.testing import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see tests/conftest.py

TEXTS = [
    "the cat sat on the mat and looked at the dog",
    "a quick brown fox jumps over the lazy dog today",
    "why is the sky blue in the morning and red at night",
    "tell me a story about a robot who learns to paint",
    "how do plants turn light into sugar and air",
]
FILES = ("eval.json", "eval.md", "judgements.jsonl", "outputs_policy.jsonl", "outputs_baseline.jsonl",
         "alpaca_eval_policy.json", "alpaca_eval_baseline.json")


def scrambled(src: Path, dst: Path, scale: float = 0.5) -> str:
    """``src`` with noise on every weight: a random tiny GPT-2 repeats one token, this one varies."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    model.save_pretrained(str(dst))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    return str(dst)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    base = tiny_causal_lm(root / "base", TEXTS)
    return {"base": str(base), "other": scrambled(base, root / "other")}


def write_prompts(path: Path, chat: bool = False) -> str:
    rows = [{"prompt_id": f"e{i}", "prompt": [{"role": "user", "content": t}] if chat else t,
             "reference": TEXTS[(i + 1) % len(TEXTS)]} for i, t in enumerate([*TEXTS, "why is the sky blue"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def prompts(tmp_path: Path) -> str:
    return write_prompts(tmp_path / "eval_prompts.jsonl")


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = HFPolicy.generate

    def counting(self, prompts, n, seeds):
        calls.append(self.model_name)
        return original(self, prompts, n, seeds)

    monkeypatch.setattr(HFPolicy, "generate", counting)
    return calls


def config(policy: str, baseline: str, prompts: str, **kw) -> EvalConfig:
    opts = dict(judge="fake", max_new_tokens=6, batch_size=4, n_boot=200, lc_boot=50) | kw
    return EvalConfig.make(policy=policy, baseline=baseline, prompts=prompts, **opts)


def test_a_policy_against_itself_ties_on_every_prompt(models, prompts, tmp_path, generate_calls):
    res = evaluate(config(models["base"], models["base"], prompts), tmp_path / "out")
    assert len(generate_calls) == 1  # same model, same settings: generated once, used for both sides
    assert res.n_prompts == 6
    for w in (res.hard, res.soft, res.length_controlled):
        assert w.estimate == 0.5 and w.ci_low <= 0.5 <= w.ci_high
    assert res.hard.n_ties == 6 and res.hard.wins == res.hard.losses == 0
    assert res.policy.mean_score == res.baseline.mean_score
    assert res.lc_length == "tokens" and res.policy.mean_tokens > 0


def test_swapping_policy_and_baseline_mirrors_the_win_rates(models, prompts, tmp_path):
    # Different models but symmetric roles: swapping them mirrors every number around 1/2.
    ab = evaluate(config(models["base"], models["other"], prompts), tmp_path / "ab")
    ba = evaluate(config(models["other"], models["base"], prompts), tmp_path / "ba")
    for x, y in ((ab.hard, ba.hard), (ab.soft, ba.soft), (ab.length_controlled, ba.length_controlled)):
        assert x.estimate == pytest.approx(1 - y.estimate, abs=1e-7)


def test_every_output_file_is_written(models, tmp_path):
    prompts = write_prompts(tmp_path / "chat_prompts.jsonl", chat=True)
    out = tmp_path / "out"
    res = evaluate(config(models["base"], models["other"], prompts), out)
    for name in FILES:
        assert (out / name).is_file(), name
    for side in ("policy", "baseline"):
        alpaca = json.loads((out / f"alpaca_eval_{side}.json").read_text())
        assert len(alpaca) == 6 and all(set(r) == {"instruction", "output", "generator"} for r in alpaca)
        assert alpaca[-1]["instruction"] == "why is the sky blue"  # chat prompts: the user's message
    assert {r["generator"] for r in json.loads((out / "alpaca_eval_policy.json").read_text())} == {"base"}
    report = json.loads((out / "eval.json").read_text())
    assert report["judge"] == "fake" and report["n_prompts"] == 6
    assert report["estimators"]["hard"] == "winrate/hard-paired-bootstrap-v1"
    assert report["win_rate"]["hard"]["estimate"] == res.hard.estimate
    assert report["config"]["soft_scale"] == 10.0 and report["lc_length_unit"] == "tokens"
    judgements = [json.loads(line) for line in (out / "judgements.jsonl").read_text().splitlines()]
    assert [j["prompt_id"] for j in judgements] == [f"e{i}" for i in range(6)]
    assert {"policy_score", "baseline_score", "policy_chars", "baseline_words", "policy_tokens"} <= set(judgements[0])
    assert "| hard (ties count 1/2) |" in (out / "eval.md").read_text()
    for w in (res.hard, res.soft, res.length_controlled):
        assert 0 <= w.ci_low <= w.ci_high <= 1
    assert res.hard.wins + res.hard.losses + res.hard.n_ties == 6 and res.hard.n_ties < 6  # answers differ
    wins = sum(j["policy_score"] > j["baseline_score"] for j in judgements)
    assert wins == res.hard.wins
    assert res.policy.mean_chars == pytest.approx(sum(j["policy_chars"] for j in judgements) / 6)


def test_rerun_reuses_cached_generations(models, prompts, tmp_path, generate_calls):
    out = tmp_path / "out"
    first = evaluate(config(models["base"], models["other"], prompts), out)
    assert len(generate_calls) == 2 and not first.policy.cached
    again = evaluate(config(models["base"], models["other"], prompts), out)
    assert len(generate_calls) == 2 and again.policy.cached and again.baseline.cached
    assert again.hard == first.hard and again.length_controlled == first.length_controlled
    evaluate(config(models["base"], models["other"], prompts, seed=3, n_boot=100), out)  # stats only
    assert len(generate_calls) == 2
    evaluate(config(models["base"], models["other"], prompts, max_new_tokens=5), out)  # new generations
    assert len(generate_calls) == 4


def test_a_torn_cache_is_regenerated(models, prompts, tmp_path, generate_calls):
    out = tmp_path / "out"
    evaluate(config(models["base"], models["other"], prompts), out)
    (out / "outputs_policy.key.json").unlink()  # as if killed between writing outputs and key
    res = evaluate(config(models["base"], models["other"], prompts), out)
    assert generate_calls == [models["base"], models["other"], models["base"]]
    assert not res.policy.cached and res.baseline.cached


def test_a_lora_adapter_policy_is_merged_once(models, prompts, tmp_path, generate_calls):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(models["base"])
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=True)
    get_peft_model(base, lora).save_pretrained(str(adapter))  # B = 0: merged weights equal the base
    assert (adapter / "adapter_config.json").is_file()
    out = tmp_path / "out"
    res = evaluate(config(str(adapter), models["base"], prompts), out)
    merged = out / "merged-policy"
    assert (merged / "config.json").is_file() and (merged / ".pvar-merged-from").is_file()
    assert generate_calls == [str(merged), models["base"]]
    assert res.hard.n_ties == 6 and res.hard.estimate == 0.5  # a zero adapter changes nothing
    stamp = (merged / ".pvar-merged-from").stat().st_mtime_ns
    evaluate(config(str(adapter), models["base"], prompts), out)
    assert len(generate_calls) == 2 and (merged / ".pvar-merged-from").stat().st_mtime_ns == stamp


def test_the_selection_reward_is_refused_as_judge(models, prompts, tmp_path):
    cfg = config(models["base"], models["base"], prompts, judge="minilm-ref", selection_reward="minilm-ref")
    with pytest.raises(ConfigError, match="selection reward"):
        evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "eval.json").exists()


def test_config_defaults_and_validation():
    cfg = EvalConfig.make(policy="p", prompts="x.jsonl")
    assert (cfg.judge, cfg.baseline, cfg.max_new_tokens, cfg.batch_size, cfg.n_boot, cfg.soft_scale) == (
        "mpnet-ref", "smollm2", 128, 32, 2000, 10.0)
    with pytest.raises(ConfigError, match="soft_scale"):
        EvalConfig.make(policy="p", prompts="x.jsonl", soft_scale=0)
    with pytest.raises(ConfigError, match="judges: Extra inputs"):
        EvalConfig.make(policy="p", prompts="x.jsonl", judges="fake")


def test_a_reference_judge_needs_references_before_anything_is_generated(models, tmp_path, generate_calls):
    path = tmp_path / "no_refs.jsonl"
    path.write_text(json.dumps({"prompt_id": "a", "prompt": "hi", "reference": "hello"}) + "\n"
                    + json.dumps({"prompt_id": "b", "prompt": "why"}) + "\n")
    with pytest.raises(InputError, match="reference") as err:
        evaluate(config(models["base"], models["base"], str(path), judge="mpnet-ref"), tmp_path / "out")
    assert "no_refs.jsonl" in str(err.value)
    assert generate_calls == []


def test_each_side_shows_one_display_that_reaches_its_prompt_count(models, prompts, tmp_path):
    """Answer generation reports its progress per batch: one display per side, ticks summing to the prompts."""
    from contextlib import contextmanager

    from pvar import status

    seen: dict[str, list] = {}

    @contextmanager
    def bars(label, source=None, total=None, unit="prompts"):
        seen[label] = [total]
        yield lambda rows, counters=None: seen[label].append(rows)

    status.set_reporter(bars)
    try:
        evaluate(config(models["base"], models["other"], prompts, batch_size=2), tmp_path / "out")
    finally:
        status.set_reporter()
    assert set(seen) == {"eval answers of policy", "eval answers of baseline"}
    for ticks in seen.values():
        total, *steps = ticks
        assert total == 6 and sum(steps) == 6 and len([s for s in steps if s]) == 3  # batches of 2
