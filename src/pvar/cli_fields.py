"""CLI options generated from config fields: a knob is declared once, on its config.

The way TRL's ``HfArgumentParser`` builds ``trl dpo``'s flags from ``DPOConfig``: each field of a
stage config becomes an option with the field's type, default and description, so a command is
a few lines and its defaults cannot drift from the library's. ``Literal`` fields stay ``str`` on
the command line, so a bad value gets the config's own one-line error, like a bad YAML key.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_SCALARS = (str, int, float, bool)


def option_type(annotation: Any) -> Any | None:
    """The command-line type of a field, or None when it has none (dicts, lists, models)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 and kinds <= set(_SCALARS) else None
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(annotation)):
            inner = option_type(args[0])
            return None if inner is None else inner | None
        return None
    return annotation if annotation in _SCALARS else None


def _help(field: Any, annotation: Any, prefix: str) -> str:
    text = field.description or ""
    if typing.get_origin(annotation) is typing.Literal or any(
            typing.get_origin(a) is typing.Literal for a in typing.get_args(annotation)):
        choices = [v for a in (annotation, *typing.get_args(annotation)) if typing.get_origin(a) is typing.Literal
                   for v in typing.get_args(a)]
        text = f"{text} (one of: {' | '.join(str(c) for c in choices)})".strip()
    return prefix + text


def option_fields(cls: type[BaseModel], *, only: Iterable[str] | None = None,
                  skip: Iterable[str] = ()) -> list[str]:
    """The fields of ``cls`` that become options (in declaration order): scalars, ``only`` if given."""
    wanted = None if only is None else list(only)
    names = [n for n, f in cls.model_fields.items() if option_type(f.annotation) is not None and n not in set(skip)]
    if wanted is not None:
        missing = set(wanted) - set(names)
        if missing:
            raise TypeError(f"{cls.__name__} has no option field(s) {', '.join(sorted(missing))}")
        names = [n for n in names if n in wanted]
    return names


def _make(cls: Any, values: dict[str, Any]) -> Any:
    """``cls.make(**values)``, its error naming the option (``--top-p: ...``) rather than the field."""
    from pvar.errors import ConfigError

    try:
        return cls.make(**values)
    except ConfigError as exc:
        key, sep, rest = str(exc).partition(": ")
        if sep and key in values:
            raise ConfigError(f"--{key.replace('_', '-')}: {rest}") from None
        raise


def options(cls: type[BaseModel], into: str, *, only: Iterable[str] | None = None, skip: Iterable[str] = (),
            flags: Mapping[str, tuple[str, ...]] | None = None, build: bool = True,
            override: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: give a typer command one option per field of ``cls``.

    The command's parameter ``into`` receives ``cls.make(**values)`` (``build=False``: the dict of
    values, for a command that adds fields of its own). ``flags`` names an option's spellings
    (``{"lora": ("--lora/--full",)}``). ``override=True`` makes every option default to None and
    ``into`` receive only the options given, for overrides on a config file.
    """
    flags = dict(flags or {})

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = getattr(fn, "__signature__", None) or inspect.signature(fn, eval_str=True)
        kept = [p for p in sig.parameters.values() if p.name != into]
        taken = {p.name for p in kept}
        names = option_fields(cls, only=only, skip=skip)
        clash = taken & set(names)
        if clash:
            raise TypeError(f"{fn.__name__}: options {', '.join(sorted(clash))} are declared twice")
        added = []
        for name in names:
            field = cls.model_fields[name]
            kind = option_type(field.annotation)
            default = field.default if field.default is not PydanticUndefined else inspect.Parameter.empty
            if field.default_factory is not None:
                default = field.default_factory()
            if override:
                if kind is bool:  # an override needs a third state (not given); a flag has two
                    raise TypeError(f"{fn.__name__}: a bool field cannot be an override: {name}")
                kind, default = kind | None, None
            opt = typer.Option(*flags.get(name, ()), help=_help(field, field.annotation,
                                                                "Override: " if override else ""))
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                           annotation=Annotated[kind, opt]))
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            if override:
                values = {k: v for k, v in values.items() if v is not None}
            kwargs[into] = _make(cls, values) if build and not override else values
            return fn(*args, **kwargs)

        # Options of an outer decorator go before an inner one's (the command reads top-down); typer passes
        # every parameter by keyword, so all are keyword-only (and defaults may come first).
        inner = {n for _, fields in getattr(fn, "option_fields", {}).values() for n in fields}
        at = next((i for i, p in enumerate(kept) if p.name in inner), len(kept))
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept[:at] + added + kept[at:]]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.option_fields = {**getattr(fn, "option_fields", {}), into: (cls, names)}  # type: ignore
        return command

    return wrap
