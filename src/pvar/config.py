"""Shared base for stage configs: frozen, unknown keys refused, errors that name the key."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_serializer

from pvar.errors import ConfigError, short_repr

_DEVICE = re.compile(r"^(auto|cpu|cuda|mps|xpu|hpu|npu)(:\d+)?$")


def _device(value: str) -> str:
    if not _DEVICE.match(value.strip()):
        raise ValueError("expected a torch device such as cpu, cuda, cuda:1 or mps")
    return value.strip()


Device = Annotated[str, AfterValidator(_device)]
"""A torch device name, checked when the config is built (torch would fail only when the model loads)."""


class StageConfig(BaseModel):
    """Frozen pydantic model; ``make`` turns validation errors into one-line ``ConfigError``s."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    # Fields added after outputs were fingerprinted: left out of dumps while at their default, so
    # outputs made before they existed still resume.
    omit_at_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.omit_at_default:
                if name in data and getattr(self, name) == type(self).model_fields[name].default:
                    data.pop(name)
        return data

    @classmethod
    def make(cls, **values: Any) -> Self:
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or cls.__name__
            shown = "input" in err and not isinstance(err["input"], dict)
            given = f" (got {short_repr(err['input'])})" if shown else ""
            raise ConfigError(f"{key}: {err['msg']}{given}") from None


    def fingerprint(self) -> str:
        """Stable hash of the settings, for manifests and caches."""
        from pvar.fingerprint import text_digest

        return text_digest(self.model_dump_json())
