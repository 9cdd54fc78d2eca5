"""Shared base for stage configs: frozen, unknown keys refused, errors that name the key."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_serializer

from pvar.errors import ConfigError, short_repr

_DEVICE = re.compile(r"^(auto|cpu|cuda|mps|xpu|hpu|npu)(:\d+)?$")


def _device(value: str) -> str:
    if not _DEVICE.match(value.strip()):
        raise ValueError("expected a torch device such as cpu, cuda, cuda:1 or mps")
    return value.strip()


Device = Annotated[str, AfterValidator(_device)]
"""A torch device name, checked when the config is built (torch would fail only when the model loads)."""

Seed = Annotated[int, Field(ge=0, lt=2**32)]
"""A seed: numpy, torch and the counter-based noise all take it as an unsigned 32-bit integer."""

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
"""A torch dtype by name; ``auto`` lets the stage choose (see its field's description)."""

def auto_dtype(device: str) -> str:
    """bfloat16 on GPUs and where the CPU has native bf16 dot products (2x faster sampling), else float32."""
    if device.startswith("cuda"):
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


InputFormat = Annotated[Literal["auto", "pipeline", "ultrafeedback"], Field(
    description="Input schema; 'auto' detects UltraFeedback rows by their columns.")]
Rating = Annotated[Literal["overall", "aspects"], Field(
    description="UltraFeedback rating used as reward: overall_score or aspect mean.")]


class _Frozen(BaseModel):
    # defer_build: the CLI imports every config to generate its options; validators are built on first use.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True)
    # Fields added after outputs were fingerprinted (or run folders written): left out of dumps while
    # at their default, so what was made before they existed still resumes.
    omit_at_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.omit_at_default:
                if name in data and getattr(self, name) == type(self).model_fields[name].default:
                    data.pop(name)
        return data


class StageConfig(_Frozen):
    """Frozen pydantic model; ``make`` turns validation errors into one-line ``ConfigError``s."""

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


def like(stage: type[StageConfig], name: str, **changes: Any) -> Any:
    """Field ``name`` of ``stage`` for another config that shares it: type constraints, default and
    description declared once, where the stage owns them; ``changes`` (a default, a description)
    say where the sharer differs."""
    from pydantic.fields import FieldInfo

    return FieldInfo.merge_field_infos(stage.model_fields[name], **changes)


RUN = "run"
"""A section value that defers to the run-wide setting (e.g. ``eval.dtype: run``)."""


class Section(_Frozen):
    """A section of a larger config (``pvar run``'s ``train:``, ``eval:``, ...) over stage configs.

    Its stage fields are *derived* from the stage configs (:func:`section_of`), so type,
    constraints, default and description are declared once, on the stage config;
    :meth:`stage_values` hands them back under the stage's own names. One section field may
    feed several stages (``scoring.scale`` is the scale of measure, pairs and theory).
    """

    stage_fields: ClassVar[dict[str, tuple[tuple[type[StageConfig], str], ...]]] = {}

    def stage_values(self, stage: type[StageConfig]) -> dict[str, Any]:
        """This section's values of ``stage``'s fields, by the stage's names (values ``run`` left out)."""
        return {name: getattr(self, field) for field, targets in self.stage_fields.items()
                for cls, name in targets if cls is stage and getattr(self, field) != RUN}


def section_of(*stages: tuple[type[StageConfig], Iterable[str] | Mapping[str, str]],
               defaults: Mapping[str, Any] | None = None, base: type[Section] = Section) -> type[Section]:
    """A :class:`Section` base class holding the named fields of each stage config.

    ``stages`` pairs a stage config with its field names, or with ``{section name: stage name}``
    where the section names a field differently (``reward_max_length`` for the reward stage's
    ``max_length``). A field named for several stages is declared by the first and feeds them
    all. ``defaults`` overrides a default (a run's ``train.max_steps`` is 32 where ``pvar
    train``'s is -1); everything else is the first stage's own field.
    """
    from pydantic import create_model
    from pydantic.fields import FieldInfo

    defaults = dict(defaults or {})
    fields: dict[str, Any] = {}
    mapping: dict[str, list[tuple[type[StageConfig], str]]] = {}
    for stage, names in stages:
        pairs = names.items() if isinstance(names, Mapping) else ((n, n) for n in names)
        for field, name in pairs:
            info = stage.model_fields[name]
            mapping.setdefault(field, []).append((stage, name))
            if field in fields:
                continue
            if field in defaults:
                info = FieldInfo.merge_field_infos(info, default=defaults.pop(field))
            fields[field] = (info.annotation, info)
    if defaults:
        raise TypeError(f"section_of: defaults for fields it does not hold: {', '.join(defaults)}")
    label = "".join(s.__name__.removesuffix("Config") for s, _ in stages[:3])
    model = create_model(f"{label}Fields", __base__=base, **fields)
    model.stage_fields = {**base.stage_fields, **{k: tuple(v) for k, v in mapping.items()}}
    return model
