"""reward: score every response with a reward spec; adds ``rewards`` (raw scores, never sigmoid-ed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pvar.config import Device, Dtype, StageConfig
from pvar.errors import InputError
from pvar.io.arrow import combine, list_lengths
from pvar.io.readers import Batch


class RewardConfig(StageConfig):
    reward: str = Field("minilm-ref", description=(
        "minilm-ref | mpnet-ref (cosine to the row's reference answer), hf:NAME_OR_PATH (sequence-"
        "classification reward model, raw logit), column:NAME, or module:function."))
    batch_size: int = Field(64, ge=1, le=65_536, description="Texts per model call.")
    max_length: int = Field(1024, ge=8, le=1_048_576,
                            description="Token cap for hf reward models; longer inputs are truncated.")
    device: Device = Field("cpu", description="torch device.")
    dtype: Dtype = Field(
        "auto", description="hf/vllm reward models: auto = float32 on CPU, bfloat16 on GPUs.")
    max_batch_tokens: int = Field(32_768, ge=1, le=16_777_216, description="hf reward models: padded tokens per "
                                  "batch; texts are sorted by length and batched within this budget.")
    tensor_parallel_size: int = Field(1, ge=1, le=1024, description="vllm: reward engine's GPUs.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm: share of each GPU's memory.")

    omit_at_default = ("dtype", "max_batch_tokens", "tensor_parallel_size", "gpu_memory_utilization")

    def fingerprint(self) -> str:
        """The settings' hash; for a gold reward, also the task rules' version: rewards scored under
        other rules are other rewards, so the step is recomputed rather than reused."""
        from pvar.backends.gold_reward import rules_version
        from pvar.fingerprint import digest

        base, version = super().fingerprint(), rules_version(self.reward)
        return digest(base, version) if version else base


class RewardStage:
    """Adds ``rewards`` (one raw score per response) to rows that have ``responses``."""

    name = "reward"

    def __init__(self, config: RewardConfig) -> None:
        from pvar.backends.gold_reward import rules_version
        from pvar.backends.spec import ColumnReward, parse_reward_spec

        self.config = config
        self.chunk_rows = max(1, config.batch_size)
        self.rules_version = rules_version(config.reward)  # in the manifest: shards of older rules are not resumed
        self.scorer = parse_reward_spec(config.reward, batch_size=config.batch_size, device=config.device,
                                        max_length=config.max_length, dtype=config.dtype,
                                        max_batch_tokens=config.max_batch_tokens,
                                        tensor_parallel_size=config.tensor_parallel_size,
                                        gpu_memory_utilization=config.gpu_memory_utilization)
        self._column = self.scorer.column if isinstance(self.scorer, ColumnReward) else None
        needs_reference = getattr(self.scorer, "needs_reference", False)
        self.require = ("prompt_id", "prompt", "responses", *(("reference",) if needs_reference else ()))
        self._truncated = 0
        self._scored = 0

    def setup(self) -> None:
        if self._column is None:
            self.scorer.setup()

    def counters(self) -> dict[str, int]:
        return {"responses": self._scored, "truncated": self._truncated}

    def check_batch(self, batch: Batch) -> None:
        """Checks of the input rows this reward needs, run before anything is scored or written."""
        data = batch.data
        if self._column is not None:
            if self._column not in data.schema.names:
                raise batch.error(0, self._column, f"missing (the reward {self.config.reward!r} reads it)")
            typ = data.schema.field(self._column).type
            if not (pa.types.is_list(typ) and (pa.types.is_floating(typ.value_type)
                                               or pa.types.is_integer(typ.value_type))):
                raise batch.error(0, self._column, f"expected a list of numbers per row, got {typ}")
            col = combine(data.column(self._column))
            bad = np.flatnonzero(list_lengths(col) != list_lengths(data.column("responses")))
            if bad.size:
                raise batch.error(int(bad[0]), self._column, "needs one score per response")
            values = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(float)
            if not np.isfinite(values[~np.isnan(values)]).all():
                raise batch.error(0, self._column, "holds an infinite score")
        check = getattr(self.scorer, "check_reference", None)
        if check is not None and "reference" in data.schema.names:
            for i, ref in enumerate(data.column("reference").to_pylist()):
                problem = check(ref)
                if problem:
                    raise batch.error(i, "reference", problem)

    def _from_column(self, table: pa.Table) -> pa.Array:
        if self._column not in table.column_names:
            raise InputError(self.config.reward, "no such column in the input", field=self._column)
        col = table.column(self._column).combine_chunks()
        bad = np.flatnonzero(list_lengths(col) != list_lengths(table.column("responses").combine_chunks()))
        if bad.size:
            raise InputError(self.config.reward, f"row {int(bad[0]) + 1} of this batch: one score per response "
                             "needed", field=self._column)
        return pc.cast(col, pa.list_(pa.float64()))

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._column is not None:
            rewards = self._from_column(table)
        else:
            prompts = table.column("prompt").to_pylist()
            responses = table.column("responses").to_pylist()
            refs = table.column("reference").to_pylist() if "reference" in table.column_names else [None] * len(prompts)
            scores = self.scorer.score(prompts, responses, refs)
            self._truncated += scores.truncated
            rewards = pa.array([[float(x) for x in r] for r in scores.rewards], type=pa.list_(pa.float64()))
        self._scored += sum(len(r) for r in table.column("responses").to_pylist())
        if "rewards" in table.column_names:
            table = table.drop_columns(["rewards"])
        return table.append_column("rewards", rewards)


REQUIRE = ("prompt_id", "prompt", "responses")  # the input columns the stage reads


def run(source: str | Path, output: str | Path, cfg: RewardConfig, **engine: Any) -> Any:
    """The verb's uniform entry (source, output, cfg): sharded and resumable on an engine (``engine``:
    the keywords of :func:`pvar.engines.run_shown`: engine, shard_size, force, ray_address, show_progress, ...)."""
    from pvar.engines import run_shown

    return run_shown(RewardStage(cfg), source, output, require=REQUIRE, **engine)
