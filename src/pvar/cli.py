"""The ``pvar`` command: one verb per pipeline stage. Thin: parse, call the library, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pvar import render
from pvar.cli_fields import options
from pvar.engines.config import EngineConfig
from pvar.experiment.config import PromptsConfig as RunPrompts
from pvar.experiment.config import RunConfig, ScoringConfig
from pvar.pipeline.evaluate import EvalConfig
from pvar.pipeline.generate import GenerateConfig
from pvar.pipeline.measure import MeasureConfig
from pvar.pipeline.pairs import PairsConfig
from pvar.pipeline.potential import PotentialConfig
from pvar.pipeline.prompts import PromptSetConfig
from pvar.pipeline.reward import RewardConfig
from pvar.pipeline.select import SelectConfig
from pvar.pipeline.theory import TheoryConfig
from pvar.pipeline.train import TrainConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find the prompts worth paying for in preference optimization, by preference variance.",
)

In = Annotated[Path, typer.Argument(help="Input rows: .jsonl, .parquet, or a datasets folder/name.")]
Out = Annotated[Path, typer.Option("-o", "--output", help="Output file (.jsonl or .parquet), written atomically.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the libraries' own progress bars and logs "
                                                            "(transformers, datasets, TRL, Ray).")] = False,
) -> None:
    """Global options (--debug and --verbose are handled in ``main``)."""
    from pvar import status

    status.set_reporter(render.progress, lambda msg: render.err.print(msg, highlight=False))


@app.command()
@options(MeasureConfig, "cfg")
def measure(input: In, output: Out, cfg: MeasureConfig) -> None:
    """Add pvar, pvar_low/high (95% bootstrap interval) and reward mean/std/range/n_valid."""
    from pvar.pipeline import measure as stage

    with render.progress("measure", input) as tick:
        summary = stage.run(input, output, cfg, tick)
    render.pool_summary(summary, title=f"PVar over {input.name} -> {output}")


@app.command()
@options(SelectConfig, "settings", only=("by", "count", "seed", "stratum", "rip_reward_quantile",
                                         "rip_length_quantile", "rip_gap_quantile"), build=False)
def select(
    input: In, output: Out, settings: dict,
    top: Annotated[float | None, typer.Option(help="Keep the top fraction F in (0, 1].")] = None,
    bottom: Annotated[float | None, typer.Option(help="Keep the bottom fraction F.")] = None,
    random: Annotated[float | None, typer.Option(help="Keep a random fraction F (same pool).")] = None,
    stratified: Annotated[float | None, typer.Option(help="Keep the top fraction F within each --stratum, each "
                                                         "stratum's share of F its share of the pool.")] = None,
    min: Annotated[float | None, typer.Option("--min", help="Keep prompts with score >= X.")] = None,
    rip: Annotated[bool, typer.Option("--rip", help="Keep the prompts the RIP filter keeps (arXiv 2501.18578): "
                                      "rejected reward and length not low, reward gap not large.")] = False,
) -> None:
    """Keep a subset by any score: top / bottom / random / stratified / threshold / rip; ties broken by prompt_id."""
    from pvar.pipeline import select as stage

    spelled = {"top": "--top F", "bottom": "--bottom F", "random": "--random F", "stratified": "--stratified F",
               "minimum": "--min X", "rip": "--rip"}
    chosen = stage.chosen_mode(top=top, bottom=bottom, random=random, stratified=stratified, minimum=min, rip=rip,
                               spell=lambda name: spelled[name])
    cfg = stage.SelectConfig.make(**{**settings, **({"by": "rip"} if rip else {})}, **chosen)
    mode = chosen["mode"]
    if mode == "rip":
        with render.progress("select", input) as tick:
            s = stage.run(input, output, cfg, tick)
        render.key_values(f"select rip -> {output}", {"prompts": s.n_prompts, "survive RIP": s.n_eligible,
                                                      "kept": s.n_kept})
        return
    by = cfg.by
    with render.progress("select", input) as tick:
        s = stage.run(input, output, cfg, tick)
    render.key_values(f"select {mode} by {by} -> {output}", {
        "prompts": s.n_prompts, f"with a finite {by}": s.n_eligible, "kept": s.n_kept,
        f"kept {by} min": s.kept_min, f"kept {by} max": s.kept_max,
    })


@app.command()
@options(PairsConfig, "cfg")
def pairs(
    input: In, output: Out, cfg: PairsConfig,
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

    with render.progress("pairs", input) as tick:
        s = stage.run(input, output, cfg, tick)
    render.key_values(f"pairs ({cfg.rule}) -> {output}", {
        "prompts": s.n_prompts, "prompts with a pair": s.n_prompts_paired,
        "skipped (tie or < 2 valid rewards)": s.n_prompts - s.n_prompts_paired, "pairs": s.n_pairs,
    })
    if dataset_dir is not None or push_to_hub is not None:
        import tempfile

        from pvar import notebook

        with tempfile.TemporaryDirectory(prefix="pvar-pairs-") as scratch:  # the folder to publish, if none given
            folder = dataset_dir or Path(scratch)
            notebook.save_pairs(output, folder, pool=pool, reward=reward, scale=cfg.scale,
                                selection=f"input {input.name}", config={"pairs": cfg.model_dump(mode="json")})
            if dataset_dir is not None:
                render.out.print(f"dataset folder with card -> {folder}")
            if push_to_hub is not None:
                notebook.push_to_hub(folder, push_to_hub)
                render.out.print(f"published -> https://huggingface.co/datasets/{push_to_hub}")


@app.command()
@options(MeasureConfig, "cfg")
def stats(
    input: In, cfg: MeasureConfig,
    plot: Annotated[Path | None, typer.Option(help="Save a PNG: PVar histogram and PVar vs reward std.")] = None,
) -> None:
    """Summarise a pool: counts, PVar quantiles, Spearman with reward std, histogram."""
    from pvar.pipeline.measure import summarize_pool

    if plot is not None:
        from pvar.plots import check_figure_path

        check_figure_path(plot)
    cols, summary = summarize_pool(input, cfg)  # the settings apply to rows not yet measured
    render.pool_summary(summary, title=f"PVar over {input}")
    render.text_histogram(cols["pvar"])
    if plot is not None:
        from pvar.plots import pvar_overview

        render.out.print(f"figure: {pvar_overview(cols['pvar'], cols['reward_std'], plot)}")


@app.command()
@options(PotentialConfig, "cfg")
def potential(input: In, output: Out, cfg: PotentialConfig) -> None:
    """Add logp_margin and alignment_potential (arXiv 2503.01864) to scored rows: select with --by."""
    from pvar.pipeline import potential as stage

    with render.progress("potential", input) as tick:
        n = stage.run(input, output, cfg, tick)
    render.out.print(f"alignment potential of {n:,} best-worst pairs -> {output}")


Force = Annotated[bool, typer.Option(help="Discard an existing output made with other settings.")]


@app.command()
@options(PromptSetConfig, "cfg")
def prompts(
    source: Annotated[str, typer.Argument(help="Prompt source: sharegpt.")], output: Out, cfg: PromptSetConfig,
) -> None:
    """Write real prompts with reference answers (offline: ShareGPT from PyPI)."""
    from pvar.pipeline import prompts as stage

    n = stage.run(source, output, cfg)
    render.out.print(f"wrote {n:,} {source} prompts ({cfg.split} split) to {output}")


@app.command()
@options(GenerateConfig, "cfg", skip=("start",))
@options(EngineConfig, "engine", build=False)  # the engine checks its own settings, as it does for the library
def generate(input: In, output: Out, cfg: GenerateConfig, engine: dict, force: Force = False) -> None:
    """Sample n responses per prompt: sharded, resumable, seeded per prompt."""
    from pvar.pipeline import sharded

    report = sharded.run("generate", cfg, input, output, force=force, **EngineConfig.unchecked(engine).options())
    render.run_report("generate", report)


@app.command()
@options(RewardConfig, "cfg")
@options(EngineConfig, "engine", build=False)
def reward(input: In, output: Out, cfg: RewardConfig, engine: dict, force: Force = False) -> None:
    """Score every response (raw scores, never sigmoid-ed): sharded and resumable."""
    from pvar.pipeline import sharded

    report = sharded.run("reward", cfg, input, output, force=force, **EngineConfig.unchecked(engine).options())
    render.run_report("reward", report)


@app.command()
@options(RunConfig, "run_over", only=("policy", "backend", "engine", "seed"), override=True,
         flags={"policy": ("--model", "--policy")})
@options(RunPrompts, "prompts_over", only=("pool",), override=True, flags={"pool": ("--count", "--pool")})
@options(ScoringConfig, "scoring_over", only=("n", "max_new_tokens", "reward", "scale"), override=True)
def score(
    run_over: dict, prompts_over: dict, scoring_over: dict,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder.")] = Path("runs/score"),
    force: Annotated[bool, typer.Option(help="Continue a run folder made with a different config.")] = False,
) -> None:
    """Embedded default: ShareGPT prompts -> generate -> reward -> measure, then the PVar summary.

    The `score` preset of `pvar run` (`until: measure`): the same folder layout, resumable.
    """
    overrides = {**run_over, **({"prompts": prompts_over} if prompts_over else {}),
                 **({"scoring": scoring_over} if scoring_over else {})}
    folder = _run_experiment(None, "score", output, overrides, force=force, show_config=False, headline=False)
    from pvar.experiment.context import RunPaths
    from pvar.pipeline.measure import summarize_pool

    measured = RunPaths(folder).measured
    cols, summary = summarize_pool(measured, MeasureConfig())  # the rows are measured: no scale is applied again
    render.pool_summary(summary, title=f"PVar over {summary.n_prompts} ShareGPT prompts -> {measured}")
    render.text_histogram(cols["pvar"])
    render.out.print(f"measured rows: {measured}")


@app.command()
@options(TrainConfig, "cfg", flags={"lora": ("--lora/--full",)})
def train(
    pairs: Annotated[Path, typer.Argument(help="Pairs file from `pvar pairs` (.jsonl or .parquet).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint folder.")],
    cfg: TrainConfig,
    ref_cache: Annotated[Path | None, typer.Option(help="Folder caching reference log-probs across runs.")] = None,
) -> None:
    """Train on pairs with TRL (DPO and cousins); writes the checkpoint and train_log.jsonl."""
    from pvar.pipeline.train import train as run_train

    r = run_train(pairs, output, cfg, ref_cache=ref_cache)
    render.key_values(f"train {cfg.algo} -> {output}", {
        "pairs": r.n_pairs, "steps": r.steps, "first loss": r.first_loss, "final loss": r.final_loss,
        "seconds": round(r.seconds, 1), "peak RSS (MB)": round(r.peak_rss_mb),
        **({"reference log-probs computed / reused": f"{r.ref_computed} / {r.ref_reused}"}
           if r.ref_computed is not None else {}),
    })


@app.command()
@options(TheoryConfig, "cfg")
def theory(
    pool: Annotated[Path, typer.Argument(help="A measured pool (rows with responses, rewards, pvar).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    cfg: TheoryConfig,
) -> None:
    """Expected DPO gradient at init vs PVar: Spearman rho, bound violations, scatter plot."""
    from pvar.pipeline.theory import run_theory

    with render.progress("theory", total=cfg.prompts) as tick:
        r = run_theory(pool, output, cfg, tick)
    render.key_values(f"theory check -> {output}", {
        "prompts": r.n_prompts, "parameters": r.n_params, "reward scale": f"{r.scale} ({r.scale_source})",
        "Spearman(PVar, ||E grad||)": r.spearman_pvar, "Spearman(reward std, ||E grad||)": r.spearman_reward_std,
        "violations of the exact bound": r.violations_exact,
        "violations of beta*sqrt(2 trF)*sqrt(PVar)": r.violations_fisher,
        "max ||E grad|| / exact bound": r.max_ratio_exact, "seconds": round(r.seconds, 1),
    })


@app.command(name="eval")
@options(EvalConfig, "cfg")
def eval_(output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")], cfg: EvalConfig) -> None:
    """Judge policy vs baseline on held-out prompts: win rates with 95% bootstrap intervals, and the
    length-controlled one (AlpacaEval 2.0's GLM without its per-instruction difficulty term)."""
    from pvar.pipeline.evaluate import evaluate, render_markdown

    result = evaluate(cfg, output)
    render.out.print(render_markdown(result, cfg))


@app.command()
@options(RunConfig, "overrides", only=("engine", "backend", "ray_address", "workers", "gpus_per_worker",
                                       "cpus_per_worker", "device", "dtype", "policy", "seed", "until"),
         override=True)
def run(
    config: Annotated[Path | None, typer.Argument(help="Experiment config (YAML); keys on top of the preset.")] = None,
    preset: Annotated[str | None, typer.Option(
        help="Built-in config: quick (default: the verifiable testbed, ~10 min CPU) | cpu-full (the testbed, "
             "<= 75 min CPU) | sharegpt-proxy (embedding reward and judge) | paper (8 x 80 GB GPUs + hub) | "
             "paper-1gpu (one 80 GB GPU, LoRA) | ultrafeedback (rated data, no generation) | score (the pool's "
             "PVar only: ShareGPT, SmolLM2, MiniLM reward) | board-format, board-graded (`pvar board`'s testbeds).")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder (default runs/NAME).")] = None,
    overrides: dict | None = None,
    force: Annotated[bool, typer.Option(help="Continue a run folder made with a different config.")] = False,
    show_config: Annotated[bool, typer.Option(help="Print the resolved config as YAML and exit.")] = False,
) -> None:
    """The experiment: score the pool once, then select, pair, train and judge every arm, then report.

    Re-running the same command continues where a killed run stopped.
    """
    _run_experiment(config, preset, output, overrides or {}, force=force, show_config=show_config)


def _run_experiment(config: Path | None, preset: str | None, output: Path | None, overrides: dict,
                    *, force: bool, show_config: bool, headline: bool = True) -> Path:
    """Load, show or run a config; returns the run folder."""
    from pvar.experiment.presets import load_config
    from pvar.experiment.runner import Experiment

    cfg = load_config(config, preset, overrides)
    if show_config:
        import yaml

        render.out.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", markup=False,
                         highlight=False)
        return Path(".")
    folder = output or Path("runs") / cfg.name
    report_dir = Experiment(cfg, folder, force=force).run()
    if headline:
        render.run_headline(report_dir)
    return folder


@app.command()
def board(
    preset: Annotated[list[str] | None, typer.Option(help="Testbed presets to run (default: board-format, the 0/1 "
                                                          "gold testbed, and board-graded, graded gold).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder of the testbeds' run folders and the "
                                                                "leaderboard.")] = Path("runs/board"),
    force: Annotated[bool, typer.Option(help="Continue run folders made with a different config.")] = False,
    table_only: Annotated[bool, typer.Option(help="Rebuild the leaderboard from the run folders; run nothing.")
                          ] = False,
) -> None:
    """The selector leaderboard: every prompt selector under one harness on each testbed, then one table.

    Each testbed is a resumable `pvar run` (OUTPUT/PRESET); rerunning continues where it stopped.
    """
    from pvar.experiment.board import write_board
    from pvar.experiment.presets import BOARD

    names = preset or list(BOARD)
    if not table_only:
        for name in names:
            _run_experiment(None, name, output / name, {}, force=force, show_config=False)
    table = write_board([output / name for name in names], output)
    render.out.print(table.read_text(encoding="utf-8"), markup=False, highlight=False)
    render.out.print(f"leaderboard: {table} (and leaderboard.json)")


@app.command()
def verdict(
    folder: Annotated[Path, typer.Argument(help="A results folder (config.yaml + data/) or a run folder.")],
    metric: Annotated[list[str] | None, typer.Option(help="judge (the stored scores), gold or gold-guarded (the "
                                                         "answers re-scored under today's rules); repeatable. "
                                                         "Default: the config's eval.metric.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for verdict.json and verdict.md "
                                                                       "(default: FOLDER).")] = None,
) -> None:
    """Rebuild a run's verdict from its exported per-prompt data alone, with this version's variance method."""
    from pvar.experiment.reanalysis import write_verdict

    render.out.print(write_verdict(folder, metric or [None], output or folder), markup=False, highlight=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A `pvar run` folder.")],
) -> None:
    """Rebuild a run's report (Markdown, self-contained HTML, JSON) from its folder."""
    from pvar.experiment.report import write_report

    render.run_headline(write_report(run_dir))


def main() -> None:
    """Entry point (see :func:`pvar.cli_shell.run_main`): one-line errors, warnings held back."""
    from pvar.cli_shell import run_main

    run_main(app)


if __name__ == "__main__":
    main()
