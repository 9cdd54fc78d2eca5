"""Every CLI option that sets a config field has that field's default: defaults cannot drift.

A knob is declared on the config (type, default, description); the command's option of the same
name must agree on the default. (Options that are not config fields, such as --engine, are not
compared; a command that ever needs another default must say why in CHOSEN.)
"""

from __future__ import annotations

import typer.main
from pydantic_core import PydanticUndefined

from pvar.cli import app

COMMANDS = {  # command -> its config class (module, name)
    "measure": ("pvar.pipeline.measure", "MeasureConfig"),
    "select": ("pvar.pipeline.select", "SelectConfig"),
    "pairs": ("pvar.pipeline.pairs", "PairsConfig"),
    "stats": ("pvar.pipeline.measure", "MeasureConfig"),
    "potential": ("pvar.pipeline.potential", "PotentialConfig"),
    "generate": ("pvar.pipeline.generate", "GenerateConfig"),
    "reward": ("pvar.pipeline.reward", "RewardConfig"),
    "prompts": ("pvar.pipeline.prompts", "PromptSetConfig"),
    "train": ("pvar.pipeline.train", "TrainConfig"),
    "theory": ("pvar.pipeline.theory", "TheoryConfig"),
    "eval": ("pvar.pipeline.evaluate", "EvalConfig"),
}
CHOSEN: dict[tuple[str, str], str] = {}  # (command, option) -> why its default differs from the config's


def config_class(command: str) -> type:
    import importlib

    module, name = COMMANDS[command]
    return getattr(importlib.import_module(module), name)


def test_option_defaults_equal_config_defaults() -> None:
    group = typer.main.get_command(app)
    checked, drifted = 0, []
    for command, _ in COMMANDS.items():
        fields = config_class(command).model_fields
        for param in group.commands[command].params:
            field = fields.get(param.name)
            if field is None or field.default is PydanticUndefined or (command, param.name) in CHOSEN:
                continue
            default = field.default
            cli_default = param.default
            if isinstance(default, float) and isinstance(cli_default, int | float):
                same = float(cli_default) == default
            else:
                same = cli_default == default
            checked += 1
            if not same:
                drifted.append(f"pvar {command} --{param.name.replace('_', '-')}: {cli_default!r} but "
                               f"{config_class(command).__name__}.{param.name} = {default!r}")
    assert not drifted, "\n".join(drifted)
    assert checked >= 40  # the check covers the knobs, not a handful


def test_every_config_field_is_an_option() -> None:
    """The options are generated from the configs: each scalar field of a command's config is there."""
    from pvar.cli_fields import option_fields

    group = typer.main.get_command(app)
    skipped = {("generate", "start"), ("select", "mode"), ("select", "fraction"), ("select", "minimum")}
    missing = []
    for command in COMMANDS:
        params = {p.name for p in group.commands[command].params}
        missing += [f"pvar {command}: no --{name.replace('_', '-')}" for name in option_fields(config_class(command))
                    if name not in params and (command, name) not in skipped]
    assert not missing, "\n".join(missing)


def test_option_help_is_the_field_description() -> None:
    group = typer.main.get_command(app)
    fields = config_class("train").model_fields
    by_name = {p.name: p for p in group.commands["train"].params}
    assert by_name["beta"].help == fields["beta"].description
    assert "one of: dpo | ipo | simpo | orpo | kto" in by_name["algo"].help
    assert by_name["lora"].opts == ["--lora"] and by_name["lora"].secondary_opts == ["--full"]
