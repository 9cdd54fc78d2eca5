"""pvar.pipeline.diagnostics: the signal fit, and held-out pair preferences of an untrained adapter are
exactly neutral."""

import json
import math

import numpy as np
import pytest

from pvar.pipeline.diagnostics import fit


def test_fit_recovers_a_line_and_is_nan_safe():
    x = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    y = np.array([1.0, 3.0, 5.0, 7.0, 100.0])
    f = fit(y, x)
    assert f["n"] == 4 and f["slope"] == pytest.approx(2.0) and f["r2"] == pytest.approx(1.0)
    assert f["spearman"] == pytest.approx(1.0)
    assert math.isnan(fit(np.ones(4), np.arange(4.0))["r2"])  # constant y: no fit


@pytest.mark.usefixtures("torch_one_thread")
def test_untrained_adapter_prefers_nothing(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pvar.pipeline.diagnostics import pair_preferences
    from pvar.testing import tiny_causal_lm

    texts = ["say hi to the cat", "hi cat", "no dog here"]
    base = tiny_causal_lm(tmp_path / "base", texts)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                                      fan_in_fan_out=True))  # the tiny model is GPT-2: Conv1D layers
    model.save_pretrained(str(tmp_path / "adapter"))  # LoRA B starts at zero: policy == reference
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp_path / "adapter"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "say hi to the cat", "chosen": "hi cat", "rejected": "no dog here"}) + "\n")
    res = pair_preferences(tmp_path / "adapter", pairs, beta=0.1, max_length=32)
    assert res["n_pairs"] == 1 and res["loss"] == pytest.approx(math.log(2)) and res["accuracy"] == 0.0


def test_batched_logprobs_equal_one_at_a_time(tmp_path):
    """Right-padded batches of sequences of unlike length give each sequence's own log-prob."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pvar.backends.gradients import batched_logprobs, sequence_ids, sequence_logprob
    from pvar.testing import tiny_causal_lm

    texts = ["the cat sat on the mat", "why is the sky blue", "a quick brown fox jumps over the lazy dog"]
    folder = tiny_causal_lm(tmp_path / "tiny", texts)
    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    seqs = [sequence_ids(tok, p, r, max_length=64) for p in texts for r in ("the cat", "a quick brown fox jumps")]
    with torch.no_grad():
        one = [float(sequence_logprob(model, ids, n)) for ids, n in seqs]
    batched = batched_logprobs(model, seqs, batch_size=4, pad_id=tok.pad_token_id)
    assert len({len(ids) for ids, _ in seqs}) > 1  # padding happens
    assert batched == pytest.approx(one, rel=1e-5, abs=1e-5)
