"""The experiment config: presets, YAML files, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvar.errors import ConfigError, InputError
from pvar.experiment.config import RunConfig, validate
from pvar.experiment.config_file import merge
from pvar.experiment.presets import PRESETS, load_config


def test_no_file_no_preset_is_quick():
    cfg = load_config()
    assert cfg.name == "quick"
    assert cfg.prompts.pool == PRESETS["quick"]["prompts"]["pool"]


def test_file_overrides_preset_and_overrides_win(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: mine\nprompts:\n  pool: 40\ntrain:\n  lr: 1.0e-4\n")
    cfg = load_config(f, "cpu-full", {"engine": "ray"})
    assert (cfg.name, cfg.prompts.pool, cfg.train.lr, cfg.engine) == ("mine", 40, 1e-4, "ray")
    assert cfg.prompts.eval == PRESETS["cpu-full"]["prompts"]["eval"]  # untouched keys keep the preset's value
    assert cfg.train.max_steps == PRESETS["cpu-full"]["train"]["max_steps"]


def test_file_alone_starts_from_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("budget: 10\n")
    cfg = load_config(f)
    assert cfg.budget == 10 and cfg.name == RunConfig().name


@pytest.mark.parametrize(("text", "needle"), [
    ("trian:\n  lr: 1\n", "trian: Extra inputs are not permitted"),
    ("train:\n  lr: -1\n", "train.lr: Input should be greater than 0"),
    ("budget: 1.5\n", "budget: a fraction must be <= 1"),
    ("arms:\n  - name: a/b\n    select: top\n", "arms.0.name: use letters"),
    ("arms:\n  - name: t\n    select: threshold\n", "arms.0: a threshold arm needs a minimum"),
    ("arms:\n  - {name: x, select: top}\n  - {name: x, select: bottom}\n", "duplicate arm name(s) x"),
    ("eval:\n  judge: minilm-ref\n", "is the selection reward"),
    ("until: never\n", "until: Input should be"),
])
def test_bad_values_name_the_file_and_key(tmp_path, text, needle):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: ") and needle in msg and "\n" not in msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: ok\ntrain:\n  lr: [1,\n")
    with pytest.raises(InputError, match=rf"^{f}:\d+: invalid YAML"):
        load_config(f)


def test_a_list_is_not_a_config(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="must be a mapping"):
        load_config(f)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'; choose one of: quick, cpu-full, sharegpt-proxy"):
        load_config(preset="nope")


def test_every_preset_validates():
    for name in PRESETS:
        cfg = load_config(preset=name)
        assert cfg.name == name


def test_random_arms_expand_per_seed_and_budget_applies():
    cfg = load_config(overrides={"arms": [{"name": "rnd", "select": "random", "seeds": [3, 4]},
                                          {"name": "top", "select": "top", "count": 5}]})
    assert [(n, s) for n, _, s in cfg.arm_runs()] == [("rnd-s3", 3), ("rnd-s4", 4), ("top", 0)]


def test_default_arms_cover_the_comparison():
    names = [n for n, _, _ in RunConfig().arm_runs()]
    assert names == ["top-pvar", "bottom-pvar", "random-s0", "random-s1", "random-s2", "top-std", "full"]


def test_ultrafeedback_preset_points_at_the_bundled_sample():
    cfg = load_config(preset="ultrafeedback")
    assert Path(cfg.prompts.source).is_file() and not cfg.scoring.generate and cfg.until == "pairs"


def test_merge_is_nested_and_lists_replace():
    assert merge({"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": 3}, "l": [9]}) == {"a": {"b": 3, "c": 2}, "l": [9]}


def test_epoch_training_with_unequal_budgets_is_refused_unless_data_matching_is_chosen():
    arms = [{"name": "top", "select": "top"}, {"name": "full", "select": "full"}]
    with pytest.raises(ConfigError, match=r"train\.max_steps -1 trains each arm one pass"):
        validate({"arms": arms, "train": {"max_steps": -1}})
    cfg = validate({"arms": arms, "train": {"max_steps": -1, "matching": "data"}})
    assert cfg.train.matched == "data"
    assert validate({"arms": arms}).train.matched == "compute"
    with pytest.raises(ConfigError, match="matching 'compute' needs max_steps > 0"):
        validate({"train": {"max_steps": -1, "matching": "compute"}})
    with pytest.raises(ConfigError, match="set max_steps: -1"):
        validate({"train": {"max_steps": 5, "matching": "data"}})


def test_primary_comparison_names_arms_and_defaults_to_first_vs_random():
    assert validate({}).primary_pair() == ("top-pvar", "random")
    with pytest.raises(ConfigError, match="primary: 'nope' is not an arm"):
        validate({"primary": ["top-pvar", "nope"]})
    arms = [{"name": "a", "select": "top"}, {"name": "u", "select": "random", "usable": True}]
    assert validate({"arms": arms}).primary_pair() is None  # a usable-random arm is not the comparator


def test_usable_and_training_seeds_expand_to_runs():
    arms = [{"name": "top", "select": "top", "train_seeds": [0, 1]},
            {"name": "rnd", "select": "random", "seeds": [2, 3], "usable": True}]
    cfg = validate({"arms": arms, "seed": 10, "primary": ["top", "rnd"]})
    assert [n for n, _, _ in cfg.arm_runs()] == ["top-t0", "top-t1", "rnd-s2", "rnd-s3"]
    assert [cfg.train_seed(n) for n, _, _ in cfg.arm_runs()] == [10, 11, 12, 13]
    assert cfg.groups() == {"top": ["top-t0", "top-t1"], "rnd": ["rnd-s2", "rnd-s3"]}
    with pytest.raises(ConfigError, match="usable applies to selections at a budget, not full"):
        validate({"arms": [{"name": "x", "select": "full", "usable": True}]})


def test_a_label_budget_arm_trains_one_pass_and_the_others_keep_their_config():
    from pathlib import Path

    from pvar.experiment.runner import Experiment

    arms = [{"name": "top", "select": "top"}, {"name": "top-label", "select": "top", "max_steps": -1},
            {"name": "easy", "select": "top", "by": "reward_mean", "usable": True}]
    cfg = validate({"arms": arms, "train": {"max_steps": 32}})
    ctx = Experiment(cfg, Path("/nonexistent")).ctx
    steps = {n: ctx.train_config(n, arm).max_steps for n, arm, _ in cfg.arm_runs()}
    assert steps == {"top": 32, "top-label": -1, "easy": 32}
    assert "max_steps" not in cfg.arms[0].model_dump() and cfg.arms[1].model_dump()["max_steps"] == -1


def test_an_exact_gold_judge_may_equal_the_selection_reward():
    cfg = validate({"scoring": {"reward": "gold"}, "eval": {"judge": "gold"}})
    assert cfg.eval.judge == cfg.scoring.reward == "gold"
    with pytest.raises(ConfigError, match="is the selection reward"):
        validate({"scoring": {"reward": "mpnet-ref"}, "eval": {"judge": "mpnet-ref"}})
