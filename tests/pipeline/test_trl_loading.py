"""Pairs written by ``pvar pairs`` load unchanged into TRL's DPOTrainer and train."""

import pytest

from tests.conftest import scored_rows, write_jsonl

pytest.importorskip("trl")


@pytest.mark.parametrize("ext,chat", [("jsonl", False), ("parquet", False), ("parquet", True)])
def test_pairs_train_with_dpo_trainer(tmp_path, cli, ext, chat):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pvar.testing import tiny_causal_lm

    rows = scored_rows(16)
    texts = [r["prompt"] for r in rows] + [x for r in rows for x in r["responses"]]
    if chat:  # conversational rows: TRL applies the tokenizer's chat template
        for r in rows:
            r["prompt"] = [{"role": "user", "content": r["prompt"]}]
    pairs = tmp_path / f"pairs.{ext}"
    assert cli("pairs", write_jsonl(tmp_path / "in.jsonl", rows), "-o", pairs)[0] == 0
    model_dir = tiny_causal_lm(tmp_path / "tiny", texts)

    data = load_dataset("json" if ext == "jsonl" else "parquet", data_files=str(pairs), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(data.column_names)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ckpt = "activation_checkpointing" if "activation_checkpointing" in DPOConfig.__dataclass_fields__ \
        else "gradient_checkpointing"  # transformers 5 renamed it (the old name warns)
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=3,
                     learning_rate=1e-2, bf16=False, report_to=[], logging_steps=1, save_strategy="no",
                     use_cpu=True, **{ckpt: False})
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    result = trainer.train()
    assert result.global_step == 3
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(loss == loss for loss in losses)
