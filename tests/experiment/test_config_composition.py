"""A run's sections are built from the stage configs' own fields, and one function stamps the run's."""

from __future__ import annotations

import pytest

from pvar.config import RUN, Section
from pvar.errors import ConfigError
from pvar.experiment import config as ec
from pvar.experiment import sections as sc
from pvar.experiment.presets import load_config
from pvar.experiment.sections import AdaptiveSection
from pvar.pipeline.evaluate import EvalConfig
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.train import TrainConfig

SECTIONS = [sc.ScoringConfig, sc.AdaptiveSection, sc.TrainSection, sc.EvalSection, sc.TheorySection]
# Section fields that extend their stage field on purpose: 'run' defers to the run, 0 skips a check.
EXTENDED = {("EvalSection", "dtype"), ("EvalSection", "backend"), ("TheorySection", "prompts"),
            ("TheorySection", "signal_prompts"), ("TheorySection", "heldout_pairs")}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_section_fields_are_the_stage_fields(section: type[Section]) -> None:
    assert section.stage_fields, "a section of stage fields maps them"
    for field, targets in section.stage_fields.items():
        (stage, name), *others = targets
        mine, theirs = section.model_fields[field], stage.model_fields[name]
        for other, other_name in others:  # a field feeding several stages fits each of them
            kinds = {theirs.annotation, theirs.annotation | None}
            assert other.model_fields[other_name].annotation in kinds, (field, other.__name__)
        if (section.__name__, field) in EXTENDED:
            continue
        assert mine.description == theirs.description and mine.description, (field, name)
        assert mine.annotation == theirs.annotation
        assert [str(m) for m in mine.metadata] == [str(m) for m in theirs.metadata]


def test_section_constraints_come_from_the_stage() -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        ec.validate({"train": {"batch_size": 0}})
    assert sc.TrainSection().max_steps == 32 and TrainConfig().max_steps == -1  # a run-level default


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
        sc.section_of((MeasureConfig, ("scale",)), defaults={"nope": 1})


def test_stage_configs_keep_the_fingerprints_of_the_hand_mappings(monkeypatch) -> None:
    """Every stage config a preset's run builds has the fingerprint the runner's former hand mappings
    gave it (pinned in data/stage_fingerprints.json), so run folders made before still resume. The gold
    presets' reward and eval pins move on purpose with ``pvar.tasks.VERSION`` (other rules, other scores),
    and quick's training pins moved with its ``sft_weight`` (another objective, other models)."""
    import json
    from pathlib import Path

    from pvar.experiment.presets import PRESETS
    from pvar.experiment.runner import Experiment
    from pvar.fingerprint import digest
    from pvar.pipeline.adaptive import AdaptiveConfig
    from pvar.pipeline.diagnostics import GoldPairsConfig, SignalConfig
    from pvar.pipeline.pairs import PairsConfig
    from pvar.pipeline.potential import PotentialConfig
    from pvar.pipeline.theory import TheoryConfig

    monkeypatch.setattr(ec, "auto_dtype", lambda d: "bfloat16" if d.startswith("cuda") else "float32")
    pinned = json.loads((Path(__file__).parent / "data" / "stage_fingerprints.json").read_text())
    assert set(pinned) <= set(PRESETS)
    for name, want in pinned.items():
        c = load_config(preset=name)
        ex = Experiment(c, Path("/nonexistent/run")).ctx
        gen, rew = ex.sampling(c.policy, c.seed)
        s, t = c.scoring, c.theory
        some = {"signal_prompts": max(1, t.signal_prompts), "heldout_pairs": max(1, t.heldout_pairs),
                "prompts": max(1, t.prompts)}
        t1 = t.model_copy(update=some)  # a check the preset skips still has its key
        adaptive = AdaptiveSection(n0=3, step=2, n_max=16, confidence=0.8)
        got = {"generate": gen.fingerprint(), "reward": rew.fingerprint(),
               "engine": json.dumps(ex.engine_opts(), sort_keys=True),
               "measure": c.stage(MeasureConfig, s).fingerprint(),
               "eval": ex.eval_config(c.policy).fingerprint(),
               "potential": c.stage(PotentialConfig, c.train).fingerprint(),
               "pairs": c.stage(PairsConfig, s, rule=c.train.pair_rule).fingerprint(),
               "adaptive": c.stage(AdaptiveConfig, s, adaptive, fraction=0.25).fingerprint(),
               "signal": digest(c.stage(SignalConfig, s, c.train, t1, policy=c.policy).model_dump()),
               "heldout": digest(c.stage(GoldPairsConfig, s, t1, policy=c.policy).model_dump()),
               "theory": c.stage(TheoryConfig, s, c.train, t1,
                                 device="auto" if c.device == "cpu" else c.device).fingerprint()}
        got.update({f"train:{run}": ex.train_config(run, arm).fingerprint() for run, arm, _ in c.arm_runs()})
        assert got == want, name


def preset_ledger_keys(name: str) -> dict[str, str]:
    """The ledger key of every step of preset ``name`` that needs no file of the run folder to key it:
    the run-wide steps up to the base eval, each arm's pairs and training (arms drawing among usable
    prompts read the measured pool, so they are left out)."""
    from pathlib import Path

    from pvar.experiment.runner import TABLE, Experiment
    from pvar.experiment.step import UNTIL, EachArm, Step, Target, key_of

    ctx = Experiment(load_config(preset=name), Path("/nonexistent/run")).ctx
    for entry in TABLE:
        steps = [(s, Target(n, arm, seed)) for n, arm, seed in ctx.cfg.arm_runs() if not arm.usable
                 for s in entry.steps if isinstance(s, Step) and s.name in ("pairs", "train")] \
            if isinstance(entry, EachArm) else [(entry, Target())]
        for step, t in steps:
            if UNTIL.index(ctx.cfg.until) >= UNTIL.index(step.until) and step.when(ctx, t) \
                    and all(i in ctx.keys for i in step.inputs(ctx, t)):
                ctx.keys[step.ledger_name(t)] = key_of(ctx, step, t)
    return dict(ctx.keys)


def test_ledger_keys_are_pinned(monkeypatch) -> None:
    """The step table keys every step as the runner before it did, so run folders made before resume
    without recomputing anything. data/ledger_keys.json holds the former runner's keys, rewritten only
    where an output changes on purpose (the task rules' second version re-keys the gold presets' reward
    and every step after it; quick's sft_weight re-keys its training). Presets that read a prompt file
    are left out: a file's key holds its path and mtime."""
    import json
    from pathlib import Path

    monkeypatch.setattr(ec, "auto_dtype", lambda d: "bfloat16" if d.startswith("cuda") else "float32")
    pinned = json.loads((Path(__file__).parent / "data" / "ledger_keys.json").read_text())
    for name, want in pinned.items():
        assert preset_ledger_keys(name) == want, name
