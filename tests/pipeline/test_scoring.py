"""pipeline.scoring: generate -> reward -> measure as one chain, or part by part with equal results."""

import pyarrow.parquet as pq
import pytest

from pvar.errors import ResumeMismatch
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.scoring import ScoredPaths, score
from tests.conftest import write_jsonl

PROMPTS = [{"prompt_id": f"q{i:02d}", "prompt": f"Tell me about topic {i}.", "reference": "maybe"} for i in range(9)]


def _configs(n: int = 3) -> tuple[GenerateConfig, RewardConfig, MeasureConfig]:
    return GenerateConfig.make(backend="fake", n=n), RewardConfig.make(reward="fake"), MeasureConfig.make(scale=2.0)


def test_the_chain_equals_its_parts_run_one_at_a_time(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    gen, rew, mcfg = _configs()
    whole = score(src, tmp_path / "whole", gen, rew, mcfg, shard_size=4, show_progress=False)
    assert whole["generate"]["rows"] == whole["reward"]["rows"] == whole["measure"]["prompts"] == 9
    parts = ScoredPaths(tmp_path / "parts", "pool.parquet")
    score(src, parts, gen, rew, parts=("generate",), shard_size=4, show_progress=False)
    score(parts.generated, parts, gen, rew, parts=("reward",), shard_size=4, show_progress=False)
    score(parts.rewarded, parts, mcfg=mcfg, parts=("measure",))
    whole_rows = pq.read_table(tmp_path / "whole" / "measured.parquet").to_pylist()
    assert pq.read_table(parts.measured).to_pylist() == whole_rows


def test_other_settings_are_refused_unless_restarting_is_asked_for(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    gen, rew, _ = _configs(3)
    score(src, tmp_path / "s", gen, rew, parts=("generate", "reward"), show_progress=False)
    more, _, _ = _configs(4)
    with pytest.raises(ResumeMismatch, match="different"):
        score(src, tmp_path / "s", more, rew, parts=("generate", "reward"), show_progress=False)
    done = score(src, tmp_path / "s", more, rew, parts=("generate", "reward"), restart_changed=True,
                 show_progress=False)
    assert done["generate"]["shards_run"] == done["generate"]["shards"]  # started over
    rows = pq.read_table(tmp_path / "s" / "reward").to_pylist()
    assert all(len(r["responses"]) == len(r["rewards"]) == 4 for r in rows)


def test_a_part_without_its_config_or_an_unknown_part_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    with pytest.raises(ValueError, match="measure part needs a MeasureConfig"):
        score(src, tmp_path / "s", parts=("measure",))
    with pytest.raises(ValueError, match="unknown part"):
        score(src, tmp_path / "s", parts=("judge",))
