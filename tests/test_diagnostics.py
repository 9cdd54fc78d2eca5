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
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(str(tmp_path / "adapter"))  # LoRA B starts at zero: policy == reference
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp_path / "adapter"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "say hi to the cat", "chosen": "hi cat", "rejected": "no dog here"}) + "\n")
    res = pair_preferences(tmp_path / "adapter", pairs, beta=0.1, max_length=32)
    assert res["n_pairs"] == 1 and res["loss"] == pytest.approx(math.log(2)) and res["accuracy"] == 0.0
