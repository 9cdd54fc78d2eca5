"""User-supplied rewards: a Python function named "module:function", or a column already in the rows.

A function lets users plug in any scorer (an API judge, a rule-based check) without writing a
backend class; it is imported lazily in `setup()` so the object stays picklable for Ray workers.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import numbers
import sys
from collections.abc import Callable
from typing import Any

from pvar.backends.base import Prompt, Scores
from pvar.errors import ConfigError, UserCodeError, one_line, resolved, short_repr


def _load_module(module: str) -> Any:
    """Import a dotted module, or execute a .py file (path) as a uniquely named module."""
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = resolved(module)
        if not path.is_file():
            raise ConfigError(f"reward: no such Python file {module!r}")
        name = "pvar_user_reward_" + hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"reward: cannot load {module!r} as a Python module")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # registered first, so dataclasses/pickle inside the file can find it
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"reward: importing {module!r} failed: {_describe(exc)}") from exc
        return mod
    try:
        return importlib.import_module(module)
    except Exception as exc:  # not found, or the module itself raised while importing
        raise ConfigError(f"reward: cannot import module {module!r}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line, cut short."""
    text = one_line(exc)
    return type(exc).__name__ if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


class CallableReward:
    """Calls ``function(prompts, responses, references)`` given as "module:function".

    ``module`` is a dotted module name or a path to a .py file. The function gets the batch as
    lists (prompts, responses as a list of lists per prompt, references with None where missing)
    and returns one number per response: a list of lists or a 2-D array.
    """

    def __init__(self, target: str) -> None:
        module, sep, func = target.rpartition(":")
        if not sep or not module or not func:
            raise ConfigError(f"reward: expected 'module:function', got {target!r}")
        self.target, self.module, self.function = target, module, func
        self._fn: Callable[..., Any] | None = None

    def setup(self) -> None:
        """Import the module and look the function up (dotted names reach attributes of attributes)."""
        if self._fn is not None:
            return
        obj: Any = _load_module(self.module)
        for part in self.function.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"reward: {self.module!r} has no attribute {self.function!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ConfigError(f"reward: {self.target!r} is not callable")
        self._fn = obj

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        """Call the function and check it returned one finite number per response."""
        self.setup()
        assert self._fn is not None
        try:
            out = self._fn(list(prompts), [list(r) for r in responses], list(references))
        except Exception as exc:
            raise UserCodeError(f"reward function {self.target!r} raised {_describe(exc)}") from exc
        return Scores(self._validate(out, responses))

    def _validate(self, out: Any, responses: list[list[str]]) -> list[list[float]]:
        """Shape and type check, with errors that name the user's function and what it returned."""
        name = f"reward function {self.target!r}"
        if hasattr(out, "tolist"):
            out = out.tolist()
        if not isinstance(out, list | tuple) or len(out) != len(responses):
            got = f"{len(out)} rows" if isinstance(out, list | tuple) else short_repr(out)
            raise UserCodeError(f"{name} must return one list of scores per prompt ({len(responses)} rows), "
                                f"got {got}")
        rewards = []
        for i, (row, resps) in enumerate(zip(out, responses, strict=True)):
            row = row.tolist() if hasattr(row, "tolist") else row
            if not isinstance(row, list | tuple) or len(row) != len(resps):
                got = f"{len(row)} scores" if isinstance(row, list | tuple) else short_repr(row)
                raise UserCodeError(f"{name} returned {got} for prompt {i}, which has {len(resps)} responses")
            bad = [x for x in row if isinstance(x, bool) or not isinstance(x, numbers.Real)]
            if bad:
                raise UserCodeError(f"{name} returned a non-number for prompt {i}: {short_repr(bad[0])}")
            try:
                values = [float(x) for x in row]
            except OverflowError:
                raise UserCodeError(f"{name} returned a number too large for a float for prompt {i}") from None
            if not all(math.isfinite(v) for v in values):
                raise UserCodeError(f"{name} returned NaN or infinity for prompt {i}: {short_repr(values)}")
            rewards.append(values)
        return rewards


class ColumnReward:
    """Marker: take rewards from an existing row column (a list of numbers per row) instead of scoring.

    The Scorer protocol passes prompts, responses and references, not whole rows, so this cannot be
    a scorer: the pipeline checks ``isinstance(scorer, ColumnReward)`` and reads ``row[column]``
    itself (validating one number per response). `setup()` is a no-op so engines may still call it.
    """

    def __init__(self, column: str) -> None:
        if not column or not column.strip():
            raise ConfigError("reward: 'column:NAME' needs a column name")
        self.column = column

    def setup(self) -> None:
        pass

    def score(self, prompts: list[Prompt], responses: list[list[str]], references: list[str | None]) -> Scores:
        raise NotImplementedError(
            f"ColumnReward({self.column!r}) does not score: the pipeline reads rewards from the "
            f"row column {self.column!r} directly, because scorers never see whole rows"
        )

    def __repr__(self) -> str:
        return f"ColumnReward({self.column!r})"
