"""A run's sections are built from the stage configs' own fields, and one function stamps the run's."""

from __future__ import annotations

import pytest

from pvar.config import RUN, Section
from pvar.errors import ConfigError
from pvar.experiment import config as ec
from pvar.experiment.presets import load_config
from pvar.pipeline.evaluate import EvalConfig
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.train import TrainConfig

SECTIONS = [ec.ScoringConfig, ec.AdaptiveSection, ec.TrainSection, ec.EvalSection, ec.TheorySection]
# Section fields that extend their stage field on purpose: 'run' defers to the run, 0 skips a check.
EXTENDED = {("EvalSection", "dtype"), ("EvalSection", "backend"), ("TheorySection", "prompts")}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_section_fields_are_the_stage_fields(section: type[Section]) -> None:
    assert section.stage_fields, "a section of stage fields maps them"
    for field, (stage, name) in section.stage_fields.items():
        mine, theirs = section.model_fields[field], stage.model_fields[name]
        if (section.__name__, field) in EXTENDED:
            continue
        assert mine.description == theirs.description and mine.description, (field, name)
        assert mine.annotation == theirs.annotation
        assert [str(m) for m in mine.metadata] == [str(m) for m in theirs.metadata]


def test_section_constraints_come_from_the_stage() -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        ec.validate({"train": {"batch_size": 0}})
    assert ec.TrainSection().max_steps == 32 and TrainConfig().max_steps == -1  # a run-level default


def test_stage_stamps_run_wide_then_section_then_given() -> None:
    cfg = load_config(overrides={"policy": "tiny", "seed": 7, "device": "cpu", "dtype": "float32",
                                 "scoring": {"n": 6, "reward_max_length": 99, "scale": 3.0},
                                 "eval": {"dtype": "bfloat16"}})
    gen = cfg.stage(GenerateConfig, cfg.scoring, seed=11)
    assert (gen.model, gen.seed, gen.n, gen.dtype, gen.device) == ("tiny", 11, 6, "float32", "cpu")
    rew = cfg.stage(RewardConfig, cfg.scoring)
    assert rew.max_length == 99 and rew.dtype == RewardConfig().dtype  # the reward keeps its own dtype rule
    assert cfg.stage(MeasureConfig, cfg.scoring) == MeasureConfig(scale=3.0, seed=7)
    ev = cfg.stage(EvalConfig, cfg.eval, policy="arm", prompts="p.jsonl")
    assert (ev.baseline, ev.dtype, ev.seed) == ("tiny", "bfloat16", 7)
    run_dtype = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"dtype": RUN})})
    assert run_dtype.stage(EvalConfig, run_dtype.eval, policy="arm", prompts="p").dtype == "float32"


def test_section_of_refuses_defaults_for_fields_it_lacks() -> None:
    with pytest.raises(TypeError, match="nope"):
        ec.section_of((MeasureConfig, ("scale",)), defaults={"nope": 1})
