"""pvar.pipeline.train: every algorithm trains through TRL on a tiny model; cached reference log-probs; weighted DPO."""

import json
import math

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from pvar.errors import ConfigError, InputError
from pvar.pipeline.train import ALGOS, TrainConfig, train

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see tests/conftest.py

TOPICS = ["cats", "dogs", "rain", "tea", "bread", "trains", "maps", "stars", "rivers", "clocks", "boats", "bees"]


def make_rows(n: int, chat: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = f"tell me about {topic} please number {i}"
        chosen = f"here is a clear helpful answer about {topic} with detail {i}"
        rejected = f"no idea sorry {i}"
        if chat:
            row = {"prompt": [{"role": "user", "content": prompt}],
                   "chosen": [{"role": "assistant", "content": chosen}],
                   "rejected": [{"role": "assistant", "content": rejected}]}
        else:
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        rows.append({"prompt_id": f"p{i:03d}", **row, "pvar": 0.05 * (i + 1), "chosen_reward": 1.0,
                     "rejected_reward": 0.0})
    return rows


def write_pairs(path, rows):
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_log(out_dir):
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def losses(out_dir):
    return [row["loss"] for row in read_log(out_dir) if "loss" in row]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pvar.testing import tiny_causal_lm

    texts = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in make_rows(len(TOPICS))]
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny"), texts)


def perturb(model, seed=1, scale=0.05):
    """Move the policy away from its reference, so DPO losses differ from log 2 and between pairs."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def test_dpo_lowers_the_loss(tmp_path, tiny):
    pairs = write_pairs(tmp_path / "pairs.jsonl", make_rows(4))
    cfg = TrainConfig.make(model=str(tiny), lora=False, lr=0.05, max_steps=20, batch_size=4)
    result = train(pairs, tmp_path / "out", cfg)
    seen = losses(tmp_path / "out")
    assert result.steps == 20 and len(seen) == 20
    assert result.first_loss == pytest.approx(seen[0]) and result.final_loss == pytest.approx(seen[-1])
    assert sum(seen[-3:]) / 3 < 0.5 * seen[0]
    assert result.n_pairs == 4 and result.seconds > 0 and result.peak_rss_mb > 0
    log = read_log(tmp_path / "out")
    assert [row["step"] for row in log if "loss" in row] == list(range(1, 21))
    for key in ("rewards/margins", "rewards/accuracies", "grad_norm", "learning_rate"):
        assert key in log[0]


@pytest.mark.parametrize(
    "algo,lora,chat,ext",
    [("dpo", True, False, "jsonl"), ("ipo", False, True, "parquet"), ("simpo", True, True, "jsonl"),
     ("orpo", False, False, "parquet"), ("kto", True, True, "parquet")],
)
def test_every_algo_trains_and_saves(tmp_path, tiny, algo, lora, chat, ext):
    pairs = write_pairs(tmp_path / f"pairs.{ext}", make_rows(6, chat=chat))
    out = tmp_path / "out"
    cfg = TrainConfig.make(model=str(tiny), algo=algo, lora=lora, lr=1e-3, max_steps=2, batch_size=2)
    result = train(pairs, out, cfg)
    assert result.steps == 2
    assert len(losses(out)) >= 1 and all(x == x for x in losses(out))
    manifest = json.loads((out / "train_config.json").read_text())
    assert manifest["config"]["algo"] == algo and manifest["n_pairs"] == 6
    assert (out / "tokenizer_config.json").is_file()
    if lora:
        from peft import PeftConfig

        assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
        assert PeftConfig.from_pretrained(str(out)).r == 16
    else:
        from transformers import AutoModelForCausalLM

        assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
        AutoModelForCausalLM.from_pretrained(str(out))


def test_rerun_in_same_folder_replaces_the_checkpoint_kind(tmp_path, tiny):
    pairs = write_pairs(tmp_path / "p.jsonl", make_rows(4))
    out = tmp_path / "out"
    base = {"model": str(tiny), "max_steps": 1, "batch_size": 2}
    train(pairs, out, TrainConfig.make(**base, lora=True))
    assert (out / "adapter_config.json").is_file()
    train(pairs, out, TrainConfig.make(**base, lora=False))
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert len(losses(out)) == 1  # the log is rewritten, not appended to
    with pytest.raises(ConfigError, match="out_dir"):
        train(pairs, tiny, TrainConfig.make(**base))


def test_ref_cache_computes_each_pair_once_and_matches_trl(tmp_path, tiny, monkeypatch):
    from pvar.training.dpo_trainer import pvar_dpo_trainer_class

    cls = pvar_dpo_trainer_class()
    computed = []
    original = cls.compute_ref_log_probs

    def counting(self, model, inputs):
        computed.append(inputs["input_ids"].size(0) // 2)  # a DPO batch is [chosen..., rejected...]
        return original(self, model, inputs)

    monkeypatch.setattr(cls, "compute_ref_log_probs", counting)
    rows = make_rows(10)
    arm_a = write_pairs(tmp_path / "a.jsonl", rows[:6])
    arm_b = write_pairs(tmp_path / "b.jsonl", rows[3:])  # pairs 3-5 are shared with arm A
    cache = tmp_path / "ref_logps"
    cfg = TrainConfig.make(model=str(tiny), lora=False, lr=1e-2, max_steps=3, batch_size=2)

    a = train(arm_a, tmp_path / "A", cfg, ref_cache=cache)
    assert sum(computed) == 6 and (a.ref_computed, a.ref_reused) == (6, 0)
    computed.clear()
    b = train(arm_b, tmp_path / "B", cfg, ref_cache=cache)
    assert sum(computed) == 4 and (b.ref_computed, b.ref_reused) == (4, 3)
    computed.clear()
    again = train(arm_b, tmp_path / "B2", cfg, ref_cache=cache)
    assert sum(computed) == 0 and (again.ref_computed, again.ref_reused) == (0, 7)

    # Same losses as TRL's own precompute, and as TRL's default (reference model run every step).
    trl_pre = train(arm_b, tmp_path / "B_trl", cfg)
    live_cfg = TrainConfig.make(**{**cfg.model_dump(), "trl_args": {"precompute_ref_log_probs": False}})
    trl_live = train(arm_b, tmp_path / "B_live", live_cfg)
    assert trl_pre.ref_computed is None
    ours = losses(tmp_path / "B")
    assert len(ours) == 3
    assert ours == pytest.approx(losses(tmp_path / "B_trl"), abs=1e-5)
    assert ours == pytest.approx(losses(tmp_path / "B_live"), abs=1e-5)
    assert ours == pytest.approx(losses(tmp_path / "B2"), abs=1e-5)
    margins = [r["rewards/margins"] for r in read_log(tmp_path / "B") if "loss" in r]
    assert margins == pytest.approx([r["rewards/margins"] for r in read_log(tmp_path / "B_live") if "loss" in r],
                                    abs=1e-5)
    assert trl_live.steps == 3


def test_cached_ref_logps_equal_trls_own(tmp_path, tiny):
    """The attached columns match TRL's precompute, and so does the loss of a moved policy on the first batch."""
    from pvar.training.trainers import build_trainer

    rows = make_rows(8)
    cfg = TrainConfig.make(model=str(tiny), lora=False, max_steps=1, batch_size=4)
    cache = tmp_path / "ref"
    build_trainer(write_pairs(tmp_path / "part.jsonl", rows[2:5]), tmp_path / "x", cfg, ref_cache=cache)
    pairs = write_pairs(tmp_path / "all.jsonl", rows)  # 3 pairs cached, 5 computed, in other batches than TRL's
    ours = build_trainer(pairs, tmp_path / "ours", cfg, ref_cache=cache).trainer
    theirs = build_trainer(pairs, tmp_path / "theirs", cfg).trainer
    assert (ours.pvar_ref_computed, ours.pvar_ref_reused) == (5, 3)
    for col in ("ref_chosen_logps", "ref_rejected_logps"):
        assert ours.train_dataset[col] == pytest.approx(theirs.train_dataset[col], abs=1e-5)
    for trainer in (ours, theirs):
        perturb(trainer.model)
    loss_ours, _ = _loss_and_grads(ours, 4)
    loss_theirs, _ = _loss_and_grads(theirs, 4)
    assert abs(loss_ours - 0.6931) > 1e-3  # a moved policy: the reference matters
    assert loss_ours == pytest.approx(loss_theirs, abs=1e-5)


def test_ref_cache_is_keyed_by_max_length(tmp_path, tiny):
    pairs = write_pairs(tmp_path / "p.jsonl", make_rows(4))
    cache = tmp_path / "ref"
    base = {"model": str(tiny), "lora": True, "max_steps": 1, "batch_size": 2}
    assert train(pairs, tmp_path / "a", TrainConfig.make(**base), ref_cache=cache).ref_computed == 4
    # 20 tokens hold each chat-templated prompt (about 13 here) but cut the completions: new reference log-probs
    assert train(pairs, tmp_path / "b", TrainConfig.make(**base, max_length=20), ref_cache=cache).ref_computed == 4
    # LoRA and full fine-tunes share the reference (the base model), and dpo and ipo share it too.
    full_ipo = TrainConfig.make(**{**base, "lora": False}, algo="ipo")
    assert train(pairs, tmp_path / "c", full_ipo, ref_cache=cache).ref_computed == 0


def _trainer(tmp_path, name, rows, **settings):
    from pvar.training.trainers import build_trainer

    pairs = write_pairs(tmp_path / f"{name}.jsonl", rows)
    cfg = TrainConfig.make(lora=False, max_steps=1, **settings)
    trainer = build_trainer(pairs, tmp_path / name, cfg).trainer
    perturb(trainer.model)
    trainer.model.train()
    return trainer


def _loss_and_grads(trainer, n):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def test_zero_weight_pair_adds_no_gradient(tmp_path, tiny):
    import torch

    rows = make_rows(2)
    rows[0]["w"], rows[1]["w"] = 1.0, 0.0
    weighted = _trainer(tmp_path, "ab", rows, model=str(tiny), batch_size=2, weight_by="w")
    alone = _trainer(tmp_path, "a", rows[:1], model=str(tiny), batch_size=1)
    loss_ab, grads_ab = _loss_and_grads(weighted, 2)
    loss_a, grads_a = _loss_and_grads(alone, 1)
    # Weights [1, 0] normalise to [2, 0], so sum_i w_i loss_i / B = loss_a: no 1/B rescaling is needed.
    assert loss_ab == pytest.approx(loss_a, abs=1e-6)
    assert grads_ab.keys() == grads_a.keys() and any(g.abs().sum() > 0 for g in grads_a.values())
    for key in grads_a:
        torch.testing.assert_close(grads_ab[key], grads_a[key], atol=1e-6, rtol=1e-5)


def test_weights_scale_each_pair(tmp_path, tiny):
    rows = make_rows(4)
    for row in rows:
        row["w"] = 2.5  # normalised to 1 each
    flat = _trainer(tmp_path, "flat", rows, model=str(tiny), batch_size=4, weight_by="w")
    plain = _trainer(tmp_path, "plain", rows, model=str(tiny), batch_size=4)
    flat_loss, _ = _loss_and_grads(flat, 4)
    plain_loss, _ = _loss_and_grads(plain, 4)
    assert flat_loss == pytest.approx(plain_loss, abs=1e-6)

    for row, w in zip(rows, [1.0, 2.0, 3.0, 0.0], strict=True):
        row["w"] = w
    skewed = _trainer(tmp_path, "skewed", rows, model=str(tiny), batch_size=4, weight_by="w")
    skewed_loss, _ = _loss_and_grads(skewed, 4)
    per_pair = []
    for i in range(4):
        batch = plain.data_collator([plain.train_dataset[i]])
        per_pair.append(plain.compute_loss(plain.model, batch).item())
    assert sum(per_pair) / 4 == pytest.approx(plain_loss, abs=1e-6)
    expected = sum(w / 1.5 * x for w, x in zip([1, 2, 3, 0], per_pair, strict=True)) / 4
    assert skewed_loss == pytest.approx(expected, abs=1e-6)


def test_weighted_training_carries_weights_through_trainer(tmp_path, tiny, monkeypatch):
    import pvar.training.dpo_trainer as dpo_trainer

    calls = []
    original = dpo_trainer.one_pair
    monkeypatch.setattr(dpo_trainer, "one_pair", lambda inputs, i, b: calls.append(b) or original(inputs, i, b))
    pairs = write_pairs(tmp_path / "p.parquet", make_rows(6))
    cfg = TrainConfig.make(model=str(tiny), max_steps=2, batch_size=3, weight_by="pvar", algo="ipo")
    result = train(pairs, tmp_path / "out", cfg, ref_cache=tmp_path / "ref")
    assert result.steps == 2 and calls == [3] * 6
    assert len(losses(tmp_path / "out")) == 2


def _one_line(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_bad_settings_give_one_line_errors(tmp_path, tiny):
    with pytest.raises(ConfigError) as err:
        TrainConfig.make(algo="sft")
    assert "algo" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        TrainConfig.make(algo="kto", weight_by="pvar")
    assert "weight_by" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        TrainConfig.make(algo="kto", batch_size=1)
    assert "batch_size" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        TrainConfig.make(trl_args={"learning_rate": 1.0})
    assert "lr" in _one_line(err)

    pairs = write_pairs(tmp_path / "p.jsonl", make_rows(4))
    with pytest.raises(ConfigError) as err:
        train(pairs, tmp_path / "o", TrainConfig.make(model=str(tiny), trl_args={"no_such_knob": 1}))
    assert "no_such_knob" in _one_line(err)
    with pytest.raises(InputError) as err:
        train(pairs, tmp_path / "o", TrainConfig.make(model=str(tiny), weight_by="margin"))
    assert "margin" in _one_line(err) and "p.jsonl" in str(err.value)
    with pytest.raises(InputError) as err:
        train(tmp_path / "missing.jsonl", tmp_path / "o", TrainConfig.make(model=str(tiny)))
    assert "missing.jsonl" in _one_line(err)
    bad = write_pairs(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(InputError) as err:
        train(bad, tmp_path / "o", TrainConfig.make(model=str(tiny)))
    assert "rejected" in _one_line(err)
    mixed = make_rows(2)
    mixed[1]["chosen"] = [{"role": "assistant", "content": "hi"}]
    with pytest.raises(InputError) as err:
        train(write_pairs(tmp_path / "mixed.jsonl", mixed), tmp_path / "o", TrainConfig.make(model=str(tiny)))
    assert "mixed.jsonl:2" in _one_line(err) and "chosen" in str(err.value)
    rows = make_rows(3)
    rows[1]["pvar"] = -1.0
    neg = write_pairs(tmp_path / "neg.jsonl", rows)
    with pytest.raises(InputError) as err:
        train(neg, tmp_path / "o", TrainConfig.make(model=str(tiny), weight_by="pvar"))
    assert "neg.jsonl:2" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        train(pairs, tmp_path / "o", TrainConfig.make(model=str(tmp_path / "nowhere")))
    assert "model" in _one_line(err)


def test_config_defaults_are_documented():
    assert set(ALGOS) == {"dpo", "ipo", "simpo", "orpo", "kto"}
    cfg = TrainConfig()
    assert (cfg.model, cfg.algo, cfg.beta, cfg.lr, cfg.epochs, cfg.max_steps, cfg.batch_size) == (
        "smollm2", "dpo", 0.1, 5e-5, 1.0, -1, 4)
    assert (cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.max_length, cfg.seed, cfg.weight_by) == (
        True, 16, 32, 512, 0, None)
    for name, info in TrainConfig.model_fields.items():
        assert info.description, name


def test_lora_layers_adapts_only_the_top_blocks(tmp_path, tiny):
    pairs = write_pairs(tmp_path / "pairs.jsonl", make_rows(4))
    out = tmp_path / "out"
    cfg = TrainConfig.make(model=str(tiny), lora_layers=1, max_steps=2, batch_size=2, lr=1e-3)
    train(pairs, out, cfg)
    from safetensors.torch import load_file

    names = list(load_file(str(out / "adapter_model.safetensors")))
    assert names and all(".h.1." in n for n in names)  # the tiny GPT-2 has blocks h.0 and h.1
    assert json.loads((out / "adapter_config.json").read_text())["layers_to_transform"] == [1]


def test_pairs_whose_prompt_fills_max_length_give_a_one_line_error(tmp_path, tiny):
    pairs = write_pairs(tmp_path / "p.jsonl", make_rows(4))
    with pytest.raises(ConfigError, match="max_length 8: the prompt alone fills it for every pair"):
        train(pairs, tmp_path / "out", TrainConfig.make(model=str(tiny), max_steps=1, batch_size=2, max_length=8))


def test_lora_on_conv1d_blocks_is_told_their_layout(tiny):
    """GPT-2's Conv1D stores (fan_in, fan_out): the LoRA config says so, and peft has nothing to correct."""
    import warnings

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from pvar.training.trainers import lora_config

    model = AutoModelForCausalLM.from_pretrained(str(tiny))
    cfg = TrainConfig.make(model=str(tiny))
    conf = lora_config(cfg, model)
    assert conf.fan_in_fan_out is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_peft_model(model, conf)
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]
    assert lora_config(cfg, None).fan_in_fan_out is False


def test_pairs_cut_at_max_length_are_counted(tmp_path, tiny):
    """The collator cuts a pair longer than max_length: the run counts those pairs (and logs them)."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", make_rows(4))
    base = {"model": str(tiny), "max_steps": 1, "batch_size": 2}
    cut = train(pairs, tmp_path / "a", TrainConfig.make(**base, max_length=20))
    whole = train(pairs, tmp_path / "b", TrainConfig.make(**base, max_length=512))
    assert cut.truncated_pairs == 4 and whole.truncated_pairs == 0


def test_sft_weight_adds_the_chosen_nll(tmp_path, tiny):
    """sft_weight > 0: TRL combines the preference loss with the chosen responses' NLL (RPO); the first
    step's loss is log 2 (policy = reference) plus that NLL times the weight. Left out of dumps at 0."""
    from pvar.training.trainers import trl_config

    cfg = TrainConfig.make(model=str(tiny), sft_weight=0.5)
    args = trl_config(cfg, tmp_path / "x", cuda=False, ref_cache=True)
    assert list(args.loss_type) == ["sigmoid", "sft"] and list(args.loss_weights) == [1.0, 0.5]
    assert list(trl_config(TrainConfig.make(model=str(tiny)), tmp_path / "y", cuda=False,
                           ref_cache=True).loss_type) == ["sigmoid"]
    assert "sft_weight" not in TrainConfig().model_dump() and cfg.model_dump()["sft_weight"] == 0.5

    pairs = write_pairs(tmp_path / "pairs.jsonl", make_rows(4))
    plain = train(pairs, tmp_path / "plain", TrainConfig.make(model=str(tiny), max_steps=1, batch_size=4))
    rpo = train(pairs, tmp_path / "rpo", TrainConfig.make(model=str(tiny), max_steps=1, batch_size=4, sft_weight=1.0))
    assert plain.first_loss == pytest.approx(math.log(2), rel=1e-5)
    assert rpo.first_loss > plain.first_loss + 0.1  # + the chosen answers' mean token NLL


def test_sft_weight_is_refused_where_it_has_no_meaning(tiny):
    with pytest.raises(ConfigError, match="dpo and ipo only"):
        TrainConfig.make(model=str(tiny), algo="simpo", sft_weight=1.0)
