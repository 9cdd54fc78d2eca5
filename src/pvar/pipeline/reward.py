"""reward: score every response with a reward spec; adds ``rewards`` (raw scores, never sigmoid-ed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pvar.config import StageConfig
from pvar.errors import InputError
from pvar.io.arrow import list_lengths


class RewardConfig(StageConfig):
    reward: str = Field("minilm-ref", description=(
        "minilm-ref | mpnet-ref (cosine to the row's reference answer), hf:NAME_OR_PATH (sequence-"
        "classification reward model, raw logit), column:NAME, or module:function."))
    batch_size: int = Field(64, ge=1, description="Texts per model call.")
    max_length: int = Field(1024, ge=8, description="Token cap for hf reward models; longer inputs are truncated.")
    device: str = Field("cpu", description="torch device.")


class RewardStage:
    """Adds ``rewards`` (one raw score per response) to rows that have ``responses``."""

    name = "reward"

    def __init__(self, config: RewardConfig) -> None:
        from pvar.backends.spec import ColumnReward, parse_reward_spec

        self.config = config
        self.chunk_rows = max(1, config.batch_size)
        self.scorer = parse_reward_spec(config.reward, batch_size=config.batch_size, device=config.device,
                                        max_length=config.max_length)
        self._column = self.scorer.column if isinstance(self.scorer, ColumnReward) else None
        self._truncated = 0
        self._scored = 0

    def setup(self) -> None:
        if self._column is None:
            self.scorer.setup()

    def counters(self) -> dict[str, int]:
        return {"responses": self._scored, "truncated": self._truncated}

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
