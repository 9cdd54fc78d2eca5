"""Reading a config file: YAML that names its file and line on any error, and merging layers of it.

PyYAML alone keeps the last of two equal keys, expands aliases without bound and decodes lone
surrogates; each of those is refused here with a one-line error before pydantic sees the values.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pvar.errors import InputError


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested dicts merged key by key (lists replace)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


MAX_CONFIG_NODES = 100_000  # a real config has a few hundred values; YAML aliases can expand without bound
MAX_CONFIG_DEPTH = 64


def _check_size(data: Any, source: str) -> None:
    """Refuse a config that expands (through YAML aliases) past ``MAX_CONFIG_NODES`` values.

    Aliases are shared references, so loading is cheap; what explodes is every later walk
    (validation, ``--show-config``). Counting stops at the limit, so the check itself is bounded.
    """
    count, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise InputError(source, f"the config expands to more than {MAX_CONFIG_NODES:,} values "
                                     "(YAML aliases nested too deeply?)")
        if depth > MAX_CONFIG_DEPTH:
            raise InputError(source, f"the config nests deeper than {MAX_CONFIG_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


@functools.cache
def _unique_key_loader() -> type:
    """PyYAML's SafeLoader, refusing a mapping that gives one key twice (at any depth): plain YAML keeps the
    last value, so a second ``train:`` section would silently drop the first one's keys."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *alias` merges, it is not a key
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; syntax errors name the file and line; an empty file is refused."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), f"cannot read config ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(str(path), f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", line=line) from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader())
    except _DuplicateKey as exc:
        raise InputError(str(path), f"key {exc.key!r} given twice (the second would silently replace the first)",
                         line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(str(path), f"invalid YAML ({getattr(exc, 'problem', None) or exc})", line=line) from None
    except RecursionError:
        raise InputError(str(path), "invalid YAML (nested too deeply)") from None
    if data is None:
        raise InputError(str(path), "empty config (no keys); omit the file to run the default preset, "
                                    "or give --preset NAME")
    if not isinstance(data, dict):
        raise InputError(str(path), f"the config must be a mapping of keys, got {type(data).__name__}", line=1)
    _check_size(data, str(path))
    _check_text(data, str(path))
    return data


def _check_text(node: Any, source: str, key: str = "") -> None:
    """Every string of a config must be text UTF-8 can encode: YAML's "\\ud800" escape makes a lone surrogate."""
    if isinstance(node, str):
        try:
            node.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(source, "a lone UTF-16 surrogate is not text", field=key or None) from None
    elif isinstance(node, dict):
        for k, v in node.items():
            _check_text(k, source, key)
            _check_text(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_text(v, source, f"{key}[{i}]")
