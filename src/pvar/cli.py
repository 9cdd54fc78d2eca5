"""The ``pvar`` command: one verb per pipeline stage. Thin: parse, call the library, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pvar import render
from pvar.errors import ConfigError, PvarError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find the prompts worth paying for in preference optimization, by preference variance.",
)

In = Annotated[Path, typer.Argument(help="Input rows: .jsonl, .parquet, or a datasets folder/name.")]
Out = Annotated[Path, typer.Option("-o", "--output", help="Output file (.jsonl or .parquet), written atomically.")]
Format = Annotated[str, typer.Option("--format", help="Input schema: auto | pipeline | ultrafeedback.")]
Rating = Annotated[str, typer.Option("--rating", help="UltraFeedback reward: overall | aspects.")]
Scale = Annotated[float, typer.Option("--scale", help="Reward scale s in sigmoid(s * (r_i - r_j)).")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the libraries' own progress bars and logs "
                                                            "(transformers, datasets, TRL, Ray).")] = False,
) -> None:
    """Global options (--debug and --verbose are handled in ``main``)."""
    from pvar import reporting

    reporting.set_reporter(render.progress, lambda msg: render.err.print(msg, highlight=False))


@app.command()
def measure(
    input: In, output: Out, scale: Scale = 1.0, format: Format = "auto", rating: Rating = "overall",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the PVar interval.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
) -> None:
    """Add pvar, pvar_low/high (95% bootstrap interval) and reward mean/std/range/n_valid."""
    from pvar.pipeline import measure as stage

    cfg = stage.MeasureConfig.make(scale=scale, n_boot=n_boot, seed=seed, format=format, rating=rating)
    with render.progress("measure", input) as tick:
        summary = stage.run(input, output, cfg, tick)
    render.pool_summary(summary, title=f"PVar over {input.name} -> {output}")


@app.command()
def select(
    input: In, output: Out,
    by: Annotated[str, typer.Option(help="Score column to rank by.")] = "pvar",
    top: Annotated[float | None, typer.Option(help="Keep the top fraction F in (0, 1].")] = None,
    bottom: Annotated[float | None, typer.Option(help="Keep the bottom fraction F.")] = None,
    random: Annotated[float | None, typer.Option(help="Keep a random fraction F (same pool).")] = None,
    min: Annotated[float | None, typer.Option("--min", help="Keep prompts with score >= X.")] = None,
    count: Annotated[int | None, typer.Option(help="Budget as a count (caps the fraction).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random.")] = 0,
    rip: Annotated[bool, typer.Option("--rip", help="Keep the prompts the RIP filter keeps (arXiv 2501.18578): "
                                      "rejected reward and length not low, reward gap not large.")] = False,
) -> None:
    """Keep a subset by any score: top / bottom / random / threshold / rip; ties broken by prompt_id."""
    from pvar.pipeline import select as stage

    given = {k: v for k, v in {"top": top, "bottom": bottom, "random": random, "min": min}.items()
             if v is not None}
    if rip:
        if given:
            raise ConfigError("--rip is a filter: combine it with --count N only")
        cfg = stage.SelectConfig.make(by="rip", mode="rip", seed=seed, count=count)
        with render.progress("select", input) as tick:
            s = stage.run(input, output, cfg, tick)
        render.key_values(f"select rip -> {output}", {"prompts": s.n_prompts, "survive RIP": s.n_eligible,
                                                      "kept": s.n_kept})
        return
    if len(given) != 1:
        raise ConfigError("give exactly one of --top F, --bottom F, --random F, --min X, --rip")
    (flag, value), = given.items()
    if flag != "min" and not 0 < value <= 1:
        raise ConfigError(f"--{flag}: fraction must be in (0, 1], got {value}")
    mode = "threshold" if flag == "min" else flag
    cfg = stage.SelectConfig.make(
        by=by, mode=mode, seed=seed, count=count,
        fraction=None if mode == "threshold" else value, minimum=value if mode == "threshold" else None,
    )
    with render.progress("select", input) as tick:
        s = stage.run(input, output, cfg, tick)
    render.key_values(f"select {mode} by {by} -> {output}", {
        "prompts": s.n_prompts, f"with a finite {by}": s.n_eligible, "kept": s.n_kept,
        f"kept {by} min": s.kept_min, f"kept {by} max": s.kept_max,
    })


@app.command()
def pairs(
    input: In, output: Out,
    rule: Annotated[str, typer.Option(help="best-worst | best-random | sweet-spot (rejected nearest mean - 2 std, "
                                           "arXiv 2502.16825) | all.")] = "best-worst",
    max_pairs: Annotated[int, typer.Option(help="Cap per prompt for --rule all.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of best-random.")] = 0,
    scale: Scale = 1.0, format: Format = "auto", rating: Rating = "overall",
    dataset_dir: Annotated[Path | None, typer.Option(
        help="Also write a datasets folder here: train.parquet + README.md, a dataset card (pool, reward, "
             "scale, PVar summary, versions, settings).")] = None,
    pool: Annotated[Path | None, typer.Option(help="The measured pool the input was selected from (for the "
                                                   "card).")] = None,
    reward: Annotated[str | None, typer.Option(help="The reward spec that scored the pool (for the card).")] = None,
    push_to_hub: Annotated[str | None, typer.Option(
        help="Publish the pairs and their card to this hub dataset repo (datasets + huggingface_hub).")] = None,
) -> None:
    """Build TRL preference rows: prompt, chosen, rejected (+ prompt_id, pvar, rewards)."""
    from pvar.pipeline import pairs as stage

    cfg = stage.PairsConfig.make(rule=rule, max_pairs=max_pairs, seed=seed, scale=scale,
                                 format=format, rating=rating)
    with render.progress("pairs", input) as tick:
        s = stage.run(input, output, cfg, tick)
    render.key_values(f"pairs ({rule}) -> {output}", {
        "prompts": s.n_prompts, "prompts with a pair": s.n_prompts_paired,
        "skipped (tie or < 2 valid rewards)": s.n_prompts - s.n_prompts_paired, "pairs": s.n_pairs,
    })
    if dataset_dir is not None or push_to_hub is not None:
        import tempfile

        from pvar import notebook

        with tempfile.TemporaryDirectory(prefix="pvar-pairs-") as scratch:  # the folder to publish, if none given
            folder = dataset_dir or Path(scratch)
            notebook.save_pairs(output, folder, pool=pool, reward=reward, scale=scale,
                                selection=f"input {input.name}", config={"pairs": cfg.model_dump(mode="json")})
            if dataset_dir is not None:
                render.out.print(f"dataset folder with card -> {folder}")
            if push_to_hub is not None:
                notebook.push_to_hub(folder, push_to_hub)
                render.out.print(f"published -> https://huggingface.co/datasets/{push_to_hub}")


@app.command()
def stats(
    input: In,
    plot: Annotated[Path | None, typer.Option(help="Save a PNG: PVar histogram and PVar vs reward std.")] = None,
    scale: Scale = 1.0, format: Format = "auto", rating: Rating = "overall",
) -> None:
    """Summarise a pool: counts, PVar quantiles, Spearman with reward std, histogram."""
    from pvar.pipeline import stats as stage

    if plot is not None:
        from pvar.plots import check_figure_path

        check_figure_path(plot)
    cfg = stage.StatsConfig.make(scale=scale, format=format, rating=rating)
    cols, summary = stage.run(input, cfg)
    render.pool_summary(summary, title=f"PVar over {input}")
    render.text_histogram(cols["pvar"])
    if plot is not None:
        from pvar.plots import pvar_overview

        render.out.print(f"figure: {pvar_overview(cols['pvar'], cols['reward_std'], plot)}")


@app.command()
def potential(
    input: In, output: Out,
    model: Annotated[str, typer.Option(help="The policy to be trained: hub name, folder, or smollm2.")] = "smollm2",
    max_length: Annotated[int, typer.Option(help="Token cap on prompt + response.")] = 512,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """Add logp_margin and alignment_potential (arXiv 2503.01864) to scored rows: select with --by."""
    from pvar.pipeline import potential as stage

    cfg = stage.PotentialConfig.make(model=model, max_length=max_length, device=device)
    with render.progress("potential", input) as tick:
        n = stage.run(input, output, cfg, tick)
    render.out.print(f"alignment potential of {n:,} best-worst pairs -> {output}")


Engine = Annotated[str, typer.Option(help="local (this process) | ray (Ray Data actor pool).")]
ShardSize = Annotated[int, typer.Option(help="Prompts per shard: the unit of resuming.")]
Force = Annotated[bool, typer.Option(help="Discard an existing output made with other settings.")]
RayAddress = Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local Ray).")]
Workers = Annotated[int, typer.Option(help="Ray actors (each loads the model once).")]
GpusPerWorker = Annotated[float | None, typer.Option(
    help="GPUs each Ray actor requests (default: vllm its tensor-parallel size, a cuda device 1, else 0).")]
CpusPerWorker = Annotated[float, typer.Option(help="CPUs each Ray actor requests.")]
Dtype = Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16 (auto: float32 on CPU, the "
                                         "checkpoint's dtype on GPUs).")]
TensorParallel = Annotated[int, typer.Option(help="vllm: GPUs one engine shards the model over.")]
GpuMemory = Annotated[float, typer.Option(help="vllm: share of each GPU's memory the engine may take.")]


@app.command()
def prompts(
    source: Annotated[str, typer.Argument(help="Prompt source: sharegpt.")],
    output: Out,
    count: Annotated[int, typer.Option(help="Number of prompts.")] = 64,
    split: Annotated[str, typer.Option(help="pool (for selection) | eval (held out; never overlaps pool).")] = "pool",
    seed: Annotated[int, typer.Option(help="Which prompts of the split to take.")] = 0,
) -> None:
    """Write real prompts with reference answers (offline: ShareGPT from PyPI)."""
    from pvar.pipeline.prompts import write_prompts

    n = write_prompts(source, output, count=count, split=split, seed=seed)
    render.out.print(f"wrote {n:,} {source} prompts ({split} split) to {output}")


@app.command()
def generate(
    input: In, output: Out,
    model: Annotated[str, typer.Option(help="Policy: hub name, local folder, or smollm2.")] = "smollm2",
    n: Annotated[int, typer.Option(help="Responses per prompt.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Token cap per response.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.8,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Run seed (per prompt: with prompt_id).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Sequences per model call.")] = 128,
    backend: Annotated[str, typer.Option(help="hf | vllm | fake.")] = "hf",
    device: Annotated[str, typer.Option(help="torch device (hf backend).")] = "cpu",
    dtype: Dtype = "auto", tensor_parallel_size: TensorParallel = 1, gpu_memory_utilization: GpuMemory = 0.9,
    engine: Engine = "local", shard_size: ShardSize = 64, force: Force = False,
    ray_address: RayAddress = None, workers: Workers = 2, gpus_per_worker: GpusPerWorker = None,
    cpus_per_worker: CpusPerWorker = 1.0,
) -> None:
    """Sample n responses per prompt: sharded, resumable, seeded per prompt."""
    from pvar.pipeline import stages

    cfg = stages.GenerateConfig.make(model=model, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_p=top_p, seed=seed, batch_size=batch_size, backend=backend, device=device,
                                     dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                                     gpu_memory_utilization=gpu_memory_utilization)
    report = stages.run("generate", cfg, input, output, engine=engine, shard_size=shard_size, force=force,
                        ray_address=ray_address, num_workers=workers, gpus_per_worker=gpus_per_worker,
                        cpus_per_worker=cpus_per_worker)
    render.run_report("generate", report)


@app.command()
def reward(
    input: In, output: Out,
    reward: Annotated[str, typer.Option(
        help="minilm-ref | mpnet-ref | hf:NAME | vllm:NAME | column:NAME | module:function.")] = "minilm-ref",
    batch_size: Annotated[int, typer.Option(help="Texts per model call.")] = 64,
    max_length: Annotated[int, typer.Option(help="Token cap for hf:/vllm: reward models.")] = 1024,
    max_batch_tokens: Annotated[int, typer.Option(help="hf: padded tokens per batch (texts sorted by length).")]
    = 32_768,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto (float32 on CPU, bfloat16 on GPUs) | float32 | bfloat16.")]
    = "auto",
    tensor_parallel_size: TensorParallel = 1, gpu_memory_utilization: GpuMemory = 0.9,
    engine: Engine = "local", shard_size: ShardSize = 64, force: Force = False,
    ray_address: RayAddress = None, workers: Workers = 2, gpus_per_worker: GpusPerWorker = None,
    cpus_per_worker: CpusPerWorker = 1.0,
) -> None:
    """Score every response (raw scores, never sigmoid-ed): sharded and resumable."""
    from pvar.pipeline import stages

    cfg = stages.RewardConfig.make(reward=reward, batch_size=batch_size, max_length=max_length, device=device,
                                   dtype=dtype, max_batch_tokens=max_batch_tokens,
                                   tensor_parallel_size=tensor_parallel_size,
                                   gpu_memory_utilization=gpu_memory_utilization)
    report = stages.run("reward", cfg, input, output, engine=engine, shard_size=shard_size, force=force,
                        ray_address=ray_address, num_workers=workers, gpus_per_worker=gpus_per_worker,
                        cpus_per_worker=cpus_per_worker)
    render.run_report("reward", report)


@app.command()
def score(
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder.")] = Path("runs/score"),
    count: Annotated[int, typer.Option(help="ShareGPT pool prompts.")] = 64,
    n: Annotated[int, typer.Option(help="Responses per prompt.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Token cap per response.")] = 64,
    model: Annotated[str, typer.Option(help="Policy.")] = "smollm2",
    reward: Annotated[str, typer.Option(help="Reward spec.")] = "minilm-ref",
    scale: Annotated[float, typer.Option(help="Reward scale (cosine rewards need ~10).")] = 10.0,
    backend: Annotated[str, typer.Option(help="hf | vllm | fake.")] = "hf",
    engine: Engine = "local", seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
) -> None:
    """Embedded default: ShareGPT prompts -> generate -> reward -> measure, then the PVar summary."""
    from pvar.pipeline.score import ScoreConfig, run_score

    cfg = ScoreConfig.make(count=count, n=n, max_new_tokens=max_new_tokens, model=model, reward=reward,
                           scale=scale, backend=backend, seed=seed)
    result = run_score(cfg, output, engine=engine)
    render.pool_summary(result.pool, title=f"PVar over {count} ShareGPT prompts ({model}, {reward}, scale {scale})")
    render.text_histogram(result.pvar)
    render.out.print(f"measured rows: {result.measured}")


@app.command()
def train(
    pairs: Annotated[Path, typer.Argument(help="Pairs file from `pvar pairs` (.jsonl or .parquet).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint folder.")],
    model: Annotated[str, typer.Option(help="Policy to train: hub name, folder, or smollm2.")] = "smollm2",
    algo: Annotated[str, typer.Option(help="dpo | ipo | simpo | orpo | kto (all through TRL).")] = "dpo",
    beta: Annotated[float, typer.Option(help="The algorithm's beta.")] = 0.1,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-5,
    epochs: Annotated[float, typer.Option(help="Passes over the pairs (when --max-steps is -1).")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps; -1 = by epochs.")] = -1,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 4,
    lora: Annotated[bool, typer.Option("--lora/--full", help="LoRA adapter (default) or full fine-tune.")] = True,
    max_length: Annotated[int, typer.Option(help="Token cap on prompt + completion.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    weight_by: Annotated[str | None, typer.Option(help="Scale each pair's loss by this column (e.g. pvar).")] = None,
    ref_cache: Annotated[Path | None, typer.Option(help="Folder caching reference log-probs across runs.")] = None,
) -> None:
    """Train on pairs with TRL (DPO and cousins); writes the checkpoint and train_log.jsonl."""
    from pvar.pipeline.train import TrainConfig
    from pvar.pipeline.train import train as run_train

    cfg = TrainConfig.make(model=model, algo=algo, beta=beta, lr=lr, epochs=epochs, max_steps=max_steps,
                           batch_size=batch_size, lora=lora, max_length=max_length, seed=seed, weight_by=weight_by)
    r = run_train(pairs, output, cfg, ref_cache=ref_cache)
    render.key_values(f"train {algo} -> {output}", {
        "pairs": r.n_pairs, "steps": r.steps, "first loss": r.first_loss, "final loss": r.final_loss,
        "seconds": round(r.seconds, 1), "peak RSS (MB)": round(r.peak_rss_mb),
        **({"reference log-probs computed / reused": f"{r.ref_computed} / {r.ref_reused}"}
           if r.ref_computed is not None else {}),
    })


@app.command()
def theory(
    pool: Annotated[Path, typer.Argument(help="A measured pool (rows with responses, rewards, pvar).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    model: Annotated[str, typer.Option(help="Policy at initialisation.")] = "smollm2",
    beta: Annotated[float, typer.Option(help="DPO beta.")] = 0.1,
    prompts: Annotated[int, typer.Option(help="Prompts to check.")] = 32,
    scale: Annotated[float | None, typer.Option(help="Reward scale the pool was measured with (default: infer).")]
    = None,
    pick: Annotated[str, typer.Option(help="first | spread (evenly over PVar quantiles).")] = "spread",
    params: Annotated[str, typer.Option(help="all | last-layers | last-layers:K | re:PATTERN.")] = "all",
) -> None:
    """Expected DPO gradient at init vs PVar: Spearman rho, bound violations, scatter plot."""
    from pvar.pipeline.theory import TheoryConfig, run_theory

    cfg = TheoryConfig.make(model=model, beta=beta, prompts=prompts, scale=scale, pick=pick, params=params)
    r = run_theory(pool, output, cfg)
    render.key_values(f"theory check -> {output}", {
        "prompts": r.n_prompts, "parameters": r.n_params, "reward scale": f"{r.scale} ({r.scale_source})",
        "Spearman(PVar, ||E grad||)": r.spearman_pvar, "Spearman(reward std, ||E grad||)": r.spearman_reward_std,
        "violations of the exact bound": r.violations_exact,
        "violations of beta*sqrt(2 trF)*sqrt(PVar)": r.violations_fisher,
        "max ||E grad|| / exact bound": r.max_ratio_exact, "seconds": round(r.seconds, 1),
    })


@app.command(name="eval")
def eval_(
    policy: Annotated[str, typer.Option(help="Trained policy folder (full model or LoRA adapter) or name.")],
    prompts: Annotated[Path, typer.Option(help="Held-out prompts (prompt_id, prompt, reference).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    baseline: Annotated[str, typer.Option(help="Baseline policy (usually the base model).")] = "smollm2",
    judge: Annotated[str, typer.Option(help="Judge spec; must differ from the selection reward.")] = "mpnet-ref",
    max_new_tokens: Annotated[int, typer.Option(help="Token cap per answer (greedy decoding).")] = 128,
    batch_size: Annotated[int, typer.Option(help="Sequences per generate call.")] = 32,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples (hard and soft win rates).")] = 2000,
    soft_scale: Annotated[float, typer.Option(help="Scale of the soft win rate sigmoid(s * score gap).")] = 10.0,
    selection_reward: Annotated[str | None, typer.Option(help="The selection reward, refused as judge.")] = None,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="Generation dtype (float32 keeps greedy answers batch-independent).")]
    = "float32",
    backend: Annotated[str, typer.Option(help="hf | vllm (greedy either way).")] = "hf",
    tensor_parallel_size: TensorParallel = 1, gpu_memory_utilization: GpuMemory = 0.9,
) -> None:
    """Judge policy vs baseline on held-out prompts: win rates with 95% bootstrap intervals, and the
    length-controlled one (AlpacaEval 2.0's GLM without its per-instruction difficulty term)."""
    from pvar.pipeline.evaluate import EvalConfig, evaluate, render_markdown

    cfg = EvalConfig.make(policy=policy, prompts=str(prompts), baseline=baseline, judge=judge,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, n_boot=n_boot,
                          soft_scale=soft_scale, selection_reward=selection_reward, device=device, dtype=dtype,
                          backend=backend, tensor_parallel_size=tensor_parallel_size,
                          gpu_memory_utilization=gpu_memory_utilization)
    result = evaluate(cfg, output)
    render.out.print(render_markdown(result, cfg))


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="Experiment config (YAML); keys on top of the preset.")] = None,
    preset: Annotated[str | None, typer.Option(
        help="Built-in config: quick (default: the verifiable testbed, ~10 min CPU) | cpu-full (the testbed, "
             "<= 75 min CPU) | sharegpt-proxy (embedding reward and judge) | paper (8 x 80 GB GPUs + hub) | "
             "paper-1gpu (one 80 GB GPU, LoRA) | ultrafeedback (rated data, no generation).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder (default runs/NAME).")] = None,
    engine: Annotated[str | None, typer.Option(help="Override: local | ray, for the sharded stages.")] = None,
    backend: Annotated[str | None, typer.Option(help="Override: hf | vllm | fake, for sampling.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Override: Ray cluster address (engine ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Override: Ray actors per stage.")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(help="Override: GPUs per Ray actor.")] = None,
    device: Annotated[str | None, typer.Option(help="Override: torch device (cpu, cuda, ...).")] = None,
    force: Annotated[bool, typer.Option(help="Continue a run folder made with a different config.")] = False,
    show_config: Annotated[bool, typer.Option(help="Print the resolved config as YAML and exit.")] = False,
) -> None:
    """The experiment: score the pool once, then select, pair, train and judge every arm, then report.

    Re-running the same command continues where a killed run stopped.
    """
    from pvar.experiment.presets import load_config
    from pvar.experiment.runner import Experiment

    overrides = {k: v for k, v in (("engine", engine), ("backend", backend), ("ray_address", ray_address),
                                   ("workers", workers), ("gpus_per_worker", gpus_per_worker), ("device", device))
                 if v is not None}
    cfg = load_config(config, preset, overrides)
    if show_config:
        import yaml

        render.out.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", markup=False,
                         highlight=False)
        return
    folder = output or Path("runs") / cfg.name
    report_dir = Experiment(cfg, folder, force=force).run()
    _print_headline(report_dir)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A `pvar run` folder.")],
) -> None:
    """Rebuild a run's report (Markdown, self-contained HTML, JSON) from its folder."""
    from pvar.experiment.report import write_report

    _print_headline(write_report(run_dir))


def _print_headline(report_dir: Path) -> None:
    import json

    data = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    rows = {}
    for arm in data["arms"]:
        hard = arm["eval"].get("hard")
        rows[arm["name"]] = (f"{100 * hard['estimate']:.1f}% [{100 * hard['ci_low']:.1f}, {100 * hard['ci_high']:.1f}]"
                             if hard else f"{arm['pairs'] if arm['pairs'] is not None else '-'} pairs")
    render.key_values(f"{data['name']}: win rate vs base policy (95% CI)" if data["until"] == "eval"
                      else f"{data['name']}: arms", rows)
    for c in data["comparisons"]:
        d = c["difference"]
        render.out.print(f"{c['a']} vs {c['b']}: score diff {d['estimate']:+.4f} [{d['ci_low']:+.4f}, "
                         f"{d['ci_high']:+.4f}]{'  (within noise)' if c['within_noise'] else ''}")
    last = data["runs"][-1] if data["runs"] else {}
    if last.get("seconds") is not None:
        render.out.print(f"last invocation: {last['seconds'] / 60:.1f} min, peak RSS "
                         f"{last['peak_rss_mb'] / 1024:.2f} GB ({len(data['runs'])} invocation(s) of this folder)")
    render.out.print(f"report: {report_dir / 'report.html'}")


def _quiet_libraries() -> None:
    """Library progress bars and log chatter off (``--debug`` and ``--verbose`` keep them).

    pvar draws one progress display per step itself; transformers' "Loading weights" and "Writing
    model shards" bars, datasets' "Tokenizing train dataset" / "Dropping fully truncated examples"
    maps inside TRL, and hub downloads would print between its lines (and before an error, so the
    one line that names the cause would not be the last). Settings already in the environment
    win, and subprocesses (``accelerate launch``) inherit them. Warnings are not dropped: Python
    warnings are replayed after a success, and errors still print.
    """
    import os

    for key, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("DATASETS_VERBOSITY", "error"), ("HF_HUB_VERBOSITY", "error"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                       ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)


def _is(exc: BaseException, name: str) -> bool:
    """Click's exception classes by name: typer ships its own copy of click, so the classes differ."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """Entry point: an error is one line on stderr, the last one, and exit code 2 (``--debug``: raise).

    Python warnings raised while a command runs are held back and shown after it succeeds; a failed
    command shows only its error, so nothing before it is mistaken for the cause.
    """
    import contextlib
    import signal
    import warnings

    # SIGTERM (a scheduler's or `timeout`'s stop) unwinds like Ctrl-C: locks are released and a
    # fresh output that committed nothing is removed; committed shards stay for the resume.
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    debug = "--debug" in sys.argv[1:]
    if not (debug or "--verbose" in sys.argv[1:]):
        _quiet_libraries()
    held: list[str] = []
    shown = warnings.showwarning
    if not debug:
        def hold(message, category, filename, lineno, file=None, line=None) -> None:
            held.append(warnings.formatwarning(message, category, filename, lineno, line))
        warnings.showwarning = hold
    try:
        code = _run_app(debug)
    finally:
        warnings.showwarning = shown
    if held:
        sys.stderr.write("".join(held))
    if isinstance(code, int) and code:
        sys.exit(code)


def _run_app(debug: bool) -> object:
    """The app, its errors turned into one line and an exit code (``SystemExit``)."""
    try:
        return app(standalone_mode=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except PvarError as exc:
        if debug:
            raise
        _fail(str(exc))
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(f"{where}{exc.strerror or exc}")
    except MemoryError:
        if debug:
            raise
        _fail("out of memory (an input or setting larger than this machine can hold)")
    except Exception as exc:  # a bug, or bad input we failed to name: still one line, never a traceback
        if debug:
            raise
        if _is(exc, "UsageError"):  # no such option, missing argument, a value of the wrong type
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            _fail(f"{where}{exc.format_message()}{hint}")
        if _is(exc, "Abort"):  # Ctrl-C inside a prompt
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
    return None


if __name__ == "__main__":
    main()
