"""Fail in seconds, before any folder or output exists: what the machine lacks, what the inputs get wrong.

``preflight`` checks the machine (a GPU, vLLM, Ray, a reachable or cached hub model);
``check_inputs`` reads every file the run will read and resolves every spec and name it will use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pvar.errors import ConfigError
from pvar.experiment.config import RunConfig
from pvar.experiment.context import RunContext
from pvar.experiment.sections import RANKED


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (those installed)."""
    import platform
    from importlib import metadata

    from pvar.version import __version__

    out = {"python": platform.python_version(), "pvar": __version__}
    for pkg in ("numpy", "pyarrow", "torch", "transformers", "trl", "peft", "sentence-transformers",
                "ray", "vllm", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _has_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def preflight(cfg: RunConfig) -> None:
    """Fail in seconds, before any work, when the config needs what this machine lacks."""
    if (cfg.device.startswith("cuda") or cfg.backend == "vllm") and not _has_gpu():
        what = "backend 'vllm'" if cfg.backend == "vllm" else f"device {cfg.device!r}"
        raise ConfigError(f"{what} needs a CUDA GPU and none is visible here; use a CPU preset "
                          "(quick, cpu-full, sharegpt-proxy)")
    if cfg.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("backend 'vllm' needs vLLM: pip install 'pvar[gpu]'")
    if cfg.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("engine 'ray' needs Ray: pip install 'pvar[ray]'")
    for what, spec in (("policy", cfg.policy), ("scoring.reward", cfg.scoring.reward), ("eval.judge", cfg.eval.judge)):
        name = spec[3:] if spec.startswith("hf:") else spec if what == "policy" else None
        if name and _is_hub_name(name):
            _check_hub(what, name)


def _is_hub_name(name: str) -> bool:
    return "/" in name and not Path(name).exists() and not name.startswith((".", "/", "~"))


def _check_hub(what: str, name: str) -> None:
    """A hub model must be in the local cache or the hub reachable (checked with a short timeout)."""
    import os

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise ConfigError(f"{what}: {name!r} is a hub model and huggingface_hub is not installed") from None
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConfigError(f"{what}: {name!r} is not in the local hub cache and HF_HUB_OFFLINE is set")
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/models/{name}", timeout=10).close()
    except Exception as exc:  # DNS, refused, timeout, 401/404: all mean "cannot download it"
        raise ConfigError(f"{what}: {name!r} is not cached and the hub ({endpoint}) cannot be reached "
                          f"({type(exc).__name__}); download it first or point to a local folder") from None




def check_inputs(ctx: RunContext) -> None:
    """Everything the run will read or load, checked before its folder or any output exists.

    Prompt files are read in full, reward and judge specs parsed and their models located,
    user reward modules imported, arm score columns and TRL argument names resolved: a typo
    fails in seconds, not after the pool has been scored.
    """
    from pvar.backends.assets import check_model_ref, check_policy_ref
    from pvar.backends.callable_reward import CallableReward, ColumnReward
    from pvar.backends.hf_reward import HFReward
    from pvar.backends.spec import is_exact, parse_reward_spec
    from pvar.io.readers import read_column_names
    from pvar.io.rows import read_rows
    from pvar.pipeline.measure import COLUMNS as MEASURE_COLUMNS
    from pvar.pipeline.pairs import pairs_columns
    from pvar.pipeline.potential import COLUMNS as POTENTIAL_COLUMNS

    c = ctx.cfg
    columns = set(MEASURE_COLUMNS) | set(POTENTIAL_COLUMNS)
    needs_ref = {what: getattr(parse_reward_spec(spec), "needs_reference", False)
                 for what, spec in (("reward", c.scoring.reward), ("judge", c.eval.judge))}
    pool_needs = ("prompt", "reference") if c.scoring.generate and needs_ref["reward"] else ("prompt",)
    if not c.scoring.generate:
        pool_needs = ("prompt", "responses", "rewards")
    for key, required in (("source", pool_needs),
                          ("eval_source", ("prompt", "reference") if needs_ref["judge"] else ("prompt",))):
        src = getattr(c.prompts, key)
        if key == "eval_source" and c.until != "eval":
            continue
        spec = c.scoring.reward if key == "source" and c.scoring.generate else c.eval.judge
        check = getattr(parse_reward_spec(spec), "check_reference", None) if "reference" in required else None
        if src == "sharegpt":
            if is_exact(spec) and c.prompts.task is None:  # ShareGPT's references are answers, not specs
                what = "scoring.reward" if key == "source" else "eval.judge"
                raise ConfigError(f"{what}: {spec!r} scores against each prompt's task spec, and ShareGPT "
                                  "prompts carry none unless prompts.task names a family (format, ifeval, "
                                  "phrase)")
            continue
        for batch in read_rows(src, require=required, unique_ids=True):
            refs = batch.data.column("reference").to_pylist() if check is not None else []
            for i, ref in enumerate(refs):  # a gold reward's task specs, named in the user's file
                problem = check(ref)
                if problem:
                    raise batch.error(i, "reference", problem)
        if key == "source":
            columns |= set(read_column_names(src))
    check_policy_ref(c.policy, "policy")
    specs = [("scoring.reward", c.scoring.reward)] if c.scoring.generate else []
    if c.until == "eval":
        specs.append(("eval.judge", c.eval.judge))
        from pvar.pipeline.evaluate import check_judge

        check_judge(ctx.eval_config(c.policy))
    for what, spec in specs:
        scorer = parse_reward_spec(spec)
        if isinstance(scorer, ColumnReward) and what == "eval.judge":
            raise ConfigError(f"eval.judge: {spec!r} reads stored rewards; a judge must score the answers")
        if isinstance(scorer, CallableReward):
            scorer.setup()  # imports the user's module: a missing or broken one fails now
        elif isinstance(scorer, HFReward):
            check_model_ref(scorer.model_name, what)
    for arm in c.arms:
        if arm.select in RANKED and arm.by not in columns:
            raise ConfigError(f"arms.{arm.name}.by: no score column {arm.by!r} in the measured pool "
                              f"(known: {', '.join(sorted(columns))})")
        if arm.weight_by is not None and arm.weight_by not in pairs_columns():
            raise ConfigError(f"arms.{arm.name}.weight_by: pairs have no column {arm.weight_by!r} "
                              f"(known: {', '.join(pairs_columns())})")
    if c.until in ("train", "eval"):
        from pvar.pipeline.train import check_trl_args

        for name, arm, _ in c.arm_runs():
            check_trl_args(ctx.train_config(name, arm), ctx.paths.arm(name) / "model")

