"""Errors users see: each renders as one line naming the file, line (or row) and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message with its whitespace (newlines included) collapsed, cut to ``limit``;
    its type name when it has no message. Library errors often carry multi-line context."""
    text = " ".join(str(exc).split())[:limit]
    return text or type(exc).__name__


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: an error line never carries a whole pasted value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PvarError(Exception):
    """Base class for errors caused by the user's input or settings (shown without traceback)."""


class InputError(PvarError, ValueError):
    """Bad input data: names the source, the line (JSONL) or row (Parquet/datasets) and field."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source, self.line, self.row, self.field = source, line, row, field
        where = source
        if line is not None:
            where += f":{line}"
        elif row is not None:
            where += f": row {row}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class ConfigError(PvarError, ValueError):
    """A bad setting: names the setting and the value that was refused."""


class UserCodeError(PvarError, ValueError):
    """A user's function (e.g. a ``module:function`` reward) raised or returned something unusable."""


class ResumeMismatch(PvarError):
    """An existing output was made with a different config or input; refuse to mix them."""


def resolved(path: str | Path) -> Path:
    """``Path(path).resolve()``, or a one-line `InputError` naming the path: a symlink loop raises
    RuntimeError in ``resolve`` (Python < 3.13), a name too long for the OS raises OSError."""
    try:
        return Path(path).expanduser().resolve()
    except RuntimeError:
        raise InputError(str(path), "the path runs into a symlink loop") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot resolve the path ({exc.strerror or exc})") from None
