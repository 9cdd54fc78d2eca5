"""ShareGPT prompts: the tolerant reader, the filter rules, and pool/eval disjointness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pvar.io import sharegpt as prompts
from pvar.io.sharegpt import (
    iter_sharegpt_records,
    normalise_prompt,
    record_to_row,
    reject_reason,
    sharegpt_prompts,
    sharegpt_split_sizes,
    split_of,
)

GOOD_REFERENCE = "Here is a clear and helpful answer to the question you asked."


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PVAR_CACHE", str(cache))
    monkeypatch.setattr(prompts, "_MEMO", {})
    return cache


def _record(rid: str, prompt: str, reference: str = GOOD_REFERENCE, extra_turns: int = 0) -> dict[str, Any]:
    turns = [{"from": "human", "value": prompt}, {"from": "gpt", "value": reference}]
    turns += [{"from": "human", "value": "and more?"}, {"from": "gpt", "value": "sure"}][:extra_turns]
    return {"id": rid, "conversations": turns}


def _write_truncated(path: Path, records: list[dict[str, Any]]) -> Path:
    """Like the shipped file: an indented JSON array whose last record is cut off."""
    text = json.dumps(records, indent=2)
    path.write_text(text[: len(text) - 40], encoding="utf-8")
    return path


def _texts(rows: list[dict[str, str]]) -> set[str]:
    return {normalise_prompt(r["prompt"]) for r in rows}


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    topics = [f"topic number {i}" for i in range(400)]
    records = [
        _record(f"r{i}", f"Tell me something interesting about {t} please") for i, t in enumerate(topics)
    ]
    return _write_truncated(tmp_path / "sharegpt.json", [*records, _record("cut", "this one is cut off")])


def test_reader_stops_at_truncated_record(tmp_path: Path) -> None:
    records = [_record("a", "first prompt here ok"), _record("b", "second prompt here ok"), _record("c", "x")]
    path = _write_truncated(tmp_path / "t.json", records)
    assert [r["id"] for r in iter_sharegpt_records(path)] == ["a", "b"]
    assert [r["id"] for r in iter_sharegpt_records(path, chunk_chars=7)] == ["a", "b"]


def test_reader_handles_complete_arrays_and_cut_multibyte_chars(tmp_path: Path) -> None:
    full = tmp_path / "full.json"
    full.write_text(json.dumps([{"id": 1}, [1, 2], {"id": 2}]) + "\n")
    assert [r["id"] for r in iter_sharegpt_records(full, chunk_chars=3)] == [1, 2]
    cut = tmp_path / "cut.bin"
    data = json.dumps([{"id": 1}, {"id": 2, "v": "caf\u00e9 \u00e9t\u00e9"}], ensure_ascii=False).encode()
    cut.write_bytes(data[: data.index("\u00e9t\u00e9".encode()) + 1])  # ends inside a 2-byte character
    assert [r["id"] for r in iter_sharegpt_records(cut)] == [1]


def test_reader_stops_at_a_broken_record_mid_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 1}, {"id": 2, oops}, {"id": 3}]')
    assert [r["id"] for r in iter_sharegpt_records(path, chunk_chars=4)] == [1]
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert list(iter_sharegpt_records(empty)) == []


def test_normalise_prompt() -> None:
    assert normalise_prompt("  What IS\tthe\n capital  of France? ") == "what is the capital of france?"


@pytest.mark.parametrize(
    ("prompt", "reference", "reason"),
    [
        ("What are good habits for learning a new language?", GOOD_REFERENCE, None),
        ("too short", GOOD_REFERENCE, "prompt_length"),
        ("x" * 201, GOOD_REFERENCE, "prompt_length"),
        ("Qu'est-ce que la libert\u00e9 de la presse?", GOOD_REFERENCE, "non_ascii"),
        ("What does `ls -la` print on Linux?", GOOD_REFERENCE, "code"),
        ("Explain what {name} means in a template", GOOD_REFERENCE, "code"),
        ("fix this: def foo(x): return x", GOOD_REFERENCE, "code"),
        ("SELECT name FROM users WHERE age > 3", GOOD_REFERENCE, "code"),
        ("what does the <div> tag do in a page", GOOD_REFERENCE, "code"),
        ("Write a python program that sorts my files", GOOD_REFERENCE, "code"),
        ("how do I call fetch() with a timeout", GOOD_REFERENCE, "code"),
        ("Act as a travel agent and plan my trip", GOOD_REFERENCE, "role_play"),
        ("Pretend to be my grandmother telling a story", GOOD_REFERENCE, "role_play"),
        ("You are a helpful chef. Suggest a dinner.", GOOD_REFERENCE, "role_play"),
        ("I want you to act like a stand-up comedian", GOOD_REFERENCE, "role_play"),
        ("What are good habits for learning a new language?", "Sure.", "reference_length"),
        ("What are good habits for learning a new language?", "y" * 2001, "reference_length"),
        ("What are good habits for learning a new language?", "Try this:\n```\nrun()\n```", "reference_code"),
    ],
)
def test_reject_reason(prompt: str, reference: str, reason: str | None) -> None:
    assert reject_reason(prompt, reference) == reason


def test_record_to_row_takes_the_opening_exchange() -> None:
    row = record_to_row(_record("Ab_0", "  What is a good name for a cat?  ", f"  {GOOD_REFERENCE}\n"))
    assert row == {
        "prompt_id": "sharegpt-Ab_0",
        "prompt": "What is a good name for a cat?",
        "reference": GOOD_REFERENCE,
    }
    longer = record_to_row(_record("x", "What is a good name for a cat?", extra_turns=2))
    assert longer is not None and longer["reference"] == GOOD_REFERENCE  # later turns ignored
    assert record_to_row({"id": "v", "conversations": [{"from": "human", "value": "What is a cat?"}]}) is None
    swapped = _record("y", "What is a good name for a cat?")
    swapped["conversations"].reverse()
    assert record_to_row(swapped) is None
    assert record_to_row({"id": "z", "conversations": "oops"}) is None
    assert record_to_row(_record("w", "Act as a cat and tell me your name")) is None


def test_splits_are_disjoint_for_any_count_and_seed(synthetic: Path) -> None:
    sizes = sharegpt_split_sizes(synthetic)
    assert sum(sizes.values()) == 400
    assert 40 <= sizes["eval"] <= 120  # ~20 %
    for seed in (0, 1, 7):
        for count in (1, 10, sizes["eval"]):
            pool = sharegpt_prompts(count, "pool", seed, path=synthetic)
            held = sharegpt_prompts(count, "eval", seed, path=synthetic)
            assert len(pool) == len(held) == count
            assert not {r["prompt_id"] for r in pool} & {r["prompt_id"] for r in held}
            assert not _texts(pool) & _texts(held)
    all_pool = sharegpt_prompts(sizes["pool"], "pool", 3, path=synthetic)
    assert all(split_of(r["prompt"]) == "pool" for r in all_pool)


def test_order_is_deterministic_and_seeded(synthetic: Path) -> None:
    first = sharegpt_prompts(30, "pool", 5, path=synthetic)
    prompts._MEMO.clear()
    assert sharegpt_prompts(30, "pool", 5, path=synthetic) == first
    assert sharegpt_prompts(10, "pool", 5, path=synthetic) == first[:10]
    other = sharegpt_prompts(30, "pool", 6, path=synthetic)
    assert [r["prompt_id"] for r in other] != [r["prompt_id"] for r in first]
    n = sharegpt_split_sizes(synthetic)["pool"]
    ids = {r["prompt_id"] for r in sharegpt_prompts(n, "pool", 5, path=synthetic)}
    assert ids == {r["prompt_id"] for r in sharegpt_prompts(n, "pool", 6, path=synthetic)}
    assert set(first[0]) == {"prompt_id", "prompt", "reference"}


def test_too_many_raises_with_available_count(synthetic: Path) -> None:
    n = sharegpt_split_sizes(synthetic)["eval"]
    with pytest.raises(ValueError, match=rf"only {n} ShareGPT prompts .*'eval'.*asked for {n + 1}"):
        sharegpt_prompts(n + 1, "eval", path=synthetic)
    with pytest.raises(ValueError, match="split must be one of"):
        sharegpt_prompts(1, "train", path=synthetic)


def test_deduplicates_by_normalised_text_and_id(tmp_path: Path) -> None:
    records = [
        _record("a", "What is the tallest mountain on Earth?"),
        _record("b", "what is  the TALLEST mountain on earth?"),
        _record("a", "A different prompt that reuses the id a"),
        _record("c", "Name three famous painters from Spain"),
    ]
    path = _write_truncated(tmp_path / "dups.json", [*records, _record("cut", "cut off record here")])
    sizes = sharegpt_split_sizes(path)
    rows = [r for split, n in sizes.items() for r in sharegpt_prompts(n, split, path=path)]
    assert sorted(r["prompt_id"] for r in rows) == ["sharegpt-a", "sharegpt-c"]
    assert "What is the tallest mountain on Earth?" in {r["prompt"] for r in rows}


def test_filtered_list_is_cached_on_disk(
    synthetic: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sharegpt_prompts(20, "eval", path=synthetic)
    assert list((_private_cache / "prompts").glob("sharegpt-*.json"))
    prompts._MEMO.clear()
    monkeypatch.setattr(prompts, "iter_sharegpt_records", lambda *a, **k: pytest.fail("rescanned"))
    assert sharegpt_prompts(20, "eval", path=synthetic) == first


def test_real_sharegpt_splits() -> None:
    """The shipped file: enough prompts, all clean, pool and eval disjoint (~1.5 s to scan)."""
    try:
        prompts.sharegpt_path()
    except RuntimeError as err:
        pytest.skip(str(err))
    sizes = sharegpt_split_sizes()
    assert sizes["pool"] >= 500 and sizes["eval"] >= 100
    for seed in (0, 1):
        pool = sharegpt_prompts(sizes["pool"], "pool", seed)
        held = sharegpt_prompts(sizes["eval"], "eval", seed)
        assert not {r["prompt_id"] for r in pool} & {r["prompt_id"] for r in held}
        assert not _texts(pool) & _texts(held)
    assert all(reject_reason(r["prompt"], r["reference"]) is None for r in pool + held)
    assert len({r["prompt_id"] for r in pool + held}) == len(pool) + len(held)
