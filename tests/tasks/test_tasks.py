"""Gold checkers: hand-made verdicts for every instruction, spec contract, determinism, guard."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvar.tasks import (
    CHECKERS,
    FAMILIES,
    TaskSpec,
    constrained_prompt,
    gold,
    gold_detail,
    gold_scores,
    guard,
    is_echo,
    parse_spec,
    spec_json,
    target_text,
    task_rows,
)
from pvar.tasks.constraints import (
    BulletLists,
    CapitalWordFrequency,
    EndPhrase,
    ForbiddenWords,
    KeywordExistence,
    Lowercase,
    NoComma,
    NumberOfWords,
    StartPhrase,
    Title,
    count_words,
    make_constraint,
)

BASE = [
    {"prompt_id": "a1", "prompt": "How do I boil an egg?"},
    {"prompt_id": 7, "prompt": "Write a short poem about autumn."},
    {"prompt_id": "x-9", "prompt": "Explain what a hash table is."},
]

# (constraint, response, expected verdict)
CASES = [
    (Lowercase(), "all lowercase here.", True),
    (Lowercase(), "all lowercase Except one.", False),
    (Lowercase(), "trailing capitaL", False),
    (Lowercase(), "123 !!", False),  # no letter at all
    (Lowercase(), "", False),
    (NoComma(), "no commas at all.", True),
    (NoComma(), "a,b", False),
    (NoComma(), "", True),
    (NumberOfWords(num_words=3, relation="less than"), "one two", True),
    (NumberOfWords(num_words=3, relation="less than"), "one two three", False),  # boundary: 3 is not < 3
    (NumberOfWords(num_words=3, relation="at least"), "one two three", True),  # boundary: 3 >= 3
    (NumberOfWords(num_words=3, relation="at least"), "one two", False),
    (NumberOfWords(num_words=3, relation="less than"), "don't stop", False),  # \w+ runs: don, t, stop
    (KeywordExistence(keywords=("river",)), "The River was calm.", True),
    (KeywordExistence(keywords=("river",)), "rivers and riverbanks", False),  # substring of another word
    (KeywordExistence(keywords=("art",)), "start the party", False),
    (KeywordExistence(keywords=("river", "honest")), "an honest river", True),
    (KeywordExistence(keywords=("river", "honest")), "just a river", False),
    (ForbiddenWords(forbidden_words=("very",)), "every day is fine", True),  # substring is allowed
    (ForbiddenWords(forbidden_words=("very",)), "It is VERY good.", False),
    (ForbiddenWords(forbidden_words=("very", "really")), "It is really good.", False),
    (StartPhrase(start_phrase="Sure"), "  sure, here you go", True),
    (StartPhrase(start_phrase="Great question!"), "Great question! Eggs boil in ten minutes.", True),
    (StartPhrase(start_phrase="Great question!"), "What a great question!", False),
    (StartPhrase(start_phrase="Great question!"), "Great question.", False),
    (StartPhrase(start_phrase="Sure"), "", False),
    # word boundaries: the phrase may not be the head of a longer word
    (StartPhrase(start_phrase="Sure"), "Surefirebound spa massage business", False),
    (StartPhrase(start_phrase="Sure"), "Sure, here is how.", True),
    (StartPhrase(start_phrase="Sure"), "Sure!", True),
    (StartPhrase(start_phrase="Sure"), "Sure", True),
    (StartPhrase(start_phrase="Sure"), "Sure\nStep one.", True),
    (StartPhrase(start_phrase="Sure"), "Sure_thing", False),  # "_" is a word character
    (StartPhrase(start_phrase="Sure"), "Sure2 things", False),
    (StartPhrase(start_phrase="Sure"), "Surément pas", False),  # Unicode letters are word characters
    (StartPhrase(start_phrase="Well"), "WELL... maybe.", True),
    (StartPhrase(start_phrase="Great question!"), "Great question!Eggs boil fast.", True),  # ends in punctuation
    (StartPhrase(start_phrase="In short,"), "In short, yes.", True),
    (EndPhrase(end_phrase="Any other questions?"), "Done. Any other questions?  \n", True),  # trailing space
    (EndPhrase(end_phrase="Any other questions?"), 'Done. "any other questions?"', True),  # quotes stripped
    (EndPhrase(end_phrase="Any other questions?"), "Any other questions? Bye.", False),
    (EndPhrase(end_phrase="Any other questions?"), "Any other questions", False),
    (EndPhrase(end_phrase="Is there anything else I can help with?"),
     "Done...xIs there anything else I can help with?", False),  # glued to the word before
    (EndPhrase(end_phrase="Is there anything else I can help with?"),
     "Done.Is there anything else I can help with?", True),  # punctuation before is a boundary
    (EndPhrase(end_phrase="Is there anything else I can help with?"), "Is there anything else I can help with?",
     True),  # the whole reply
    (EndPhrase(end_phrase="Any other questions?"), "Voilàany other questions?", False),
    (EndPhrase(end_phrase="Any other questions?"), "Done.\n\nany other questions?\"", True),
    (EndPhrase(end_phrase="Any other questions?"), "Any other questions?!", False),  # nothing may follow
    (EndPhrase(end_phrase="I hope this helps."), "Done, I hope this helps.", True),
    (BulletLists(num_bullets=2), "* one\n* two", True),
    (BulletLists(num_bullets=2), "- one\n  - two\ntext", True),
    (BulletLists(num_bullets=2), "* one\n* two\n* three", False),  # exactly, not at least
    (BulletLists(num_bullets=2), "* one\n**bold** line\n- two", True),  # "**" does not start a bullet
    (BulletLists(num_bullets=1), "1. one\n2. two", False),
    (CapitalWordFrequency(capital_frequency=2, capital_relation="at least"), "USE THIS now", True),
    (CapitalWordFrequency(capital_frequency=2, capital_relation="at least"), "USE this now", False),
    (CapitalWordFrequency(capital_frequency=2, capital_relation="less than"), "A quick NOTE", False),
    (CapitalWordFrequency(capital_frequency=2, capital_relation="less than"), "a quick NOTE", True),
    (Title(), "<<Poem of Joy>>\nThe text.", True),
    (Title(), "<<  >> no title", False),
    (Title(), "<<split\ntitle>>", False),
    (Title(), "no title", False),
]


@pytest.mark.parametrize(("constraint", "response", "expected"), CASES,
                         ids=[f"{c.id}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_checker_verdicts(constraint, response, expected):
    assert constraint.check(response) is expected


def test_every_checker_has_positive_and_negative_cases():
    seen = {(c.id, e) for c, _, e in CASES}
    for cid in CHECKERS:
        assert (cid, True) in seen and (cid, False) in seen, cid


def test_descriptions_are_sentences():
    for c, _, _ in CASES:
        text = c.describe()
        assert text[0].isupper() and text.rstrip()[-1] in ".2", text
    assert "'river' and 'honest'" in KeywordExistence(keywords=("river", "honest")).describe()


def test_count_words_matches_ifeval_tokens():
    assert count_words("Hello, world! It's 2024.") == 5
    assert count_words("") == 0


# ---- specs ----

def _spec(*constraints, task="ifeval"):
    return TaskSpec(task, tuple(constraints))


def test_spec_round_trip_for_every_checker():
    for c, _, _ in CASES:
        spec = _spec(c)
        text = spec_json(spec)
        assert parse_spec(text) == spec
        assert spec_json(parse_spec(text)) == text
        assert json.loads(text)["constraints"][0]["id"] == c.id


def test_spec_json_is_canonical():
    spec = _spec(NumberOfWords(num_words=40, relation="less than"), KeywordExistence(keywords=("river",)))
    text = spec_json(spec)
    assert text == json.dumps(json.loads(text), sort_keys=True)
    assert json.loads(text) == {"task": "ifeval", "constraints": [
        {"id": "length_constraints:number_words", "num_words": 40, "relation": "less than"},
        {"id": "keywords:existence", "keywords": ["river"]}]}


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "exactly 'task' and 'constraints'"),
    ('{"task": "ifeval"}', "exactly 'task' and 'constraints'"),
    ('{"task": "other", "constraints": [{"id": "punctuation:no_comma"}]}', "unknown task family"),
    ('{"task": "ifeval", "constraints": []}', "at least one constraint"),
    ('{"task": "ifeval", "constraints": {"id": "punctuation:no_comma"}}', "must be a list"),
    ('{"task": "ifeval", "constraints": ["punctuation:no_comma"]}', "must be an object"),
    ('{"task": "ifeval", "constraints": [{"id": "no:such"}]}', "unknown constraint id"),
    ('{"task": "ifeval", "constraints": [{"id": "punctuation:no_comma", "x": 1}]}', "unexpected ['x']"),
    ('{"task": "ifeval", "constraints": [{"id": "length_constraints:number_words", "num_words": 5}]}',
     "missing ['relation']"),
    ('{"task": "ifeval", "constraints": [{"id": "length_constraints:number_words", "num_words": "5", '
     '"relation": "less than"}]}', "integer"),
    ('{"task": "ifeval", "constraints": [{"id": "length_constraints:number_words", "num_words": 5, '
     '"relation": "at most"}]}', "relation must be one of"),
    ('{"task": "ifeval", "constraints": [{"id": "keywords:existence", "keywords": "river"}]}', "list of words"),
    ('{"task": "ifeval", "constraints": [{"id": "keywords:existence", "keywords": ["a.*"]}]}', "must be words"),
    ('{"task": "ifeval", "constraints": [{"id": "startend:start_phrase", "start_phrase": " "}]}', "non-empty"),
    ('{"task": "ifeval", "constraints": [{"id": "punctuation:no_comma"}, {"id": "punctuation:no_comma"}]}',
     "twice"),
])
def test_bad_specs_raise(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(text)


def test_make_constraint_rejects_non_dict():
    with pytest.raises(ValueError, match="must be an object"):
        make_constraint(None)
    with pytest.raises(ValueError, match="must be a JSON string"):
        parse_spec(None)  # type: ignore[arg-type]


# ---- families ----

@pytest.mark.parametrize("family", FAMILIES)
def test_task_rows_shape_and_determinism(family):
    rows = task_rows(family, BASE, seed=3)
    assert rows == task_rows(family, BASE, seed=3)
    assert [r["prompt_id"] for r in rows] == [f"{family}-a1", f"{family}-7", f"{family}-x-9"]
    for base, row in zip(BASE, rows, strict=True):
        assert set(row) == {"prompt_id", "prompt", "reference", "task"} and row["task"] == family
        spec = parse_spec(row["reference"])
        assert spec.task == family and (2 <= len(spec.constraints) <= 3 if family == "graded" else
                                         1 <= len(spec.constraints) <= 2)
        assert row["prompt"] == base["prompt"] + "\n\n" + "\n".join(c.describe() for c in spec.constraints)


@pytest.mark.parametrize("family", FAMILIES)
def test_row_independent_of_other_rows(family):
    extra = [{"prompt_id": f"n{i}", "prompt": f"Question {i}?"} for i in range(20)]
    alone = task_rows(family, BASE[1:2], seed=3)[0]
    assert alone in task_rows(family, extra + BASE, seed=3)
    assert task_rows(family, list(reversed(BASE)), seed=3)[::-1] == task_rows(family, BASE, seed=3)


def test_seed_changes_draws():
    many = [{"prompt_id": i, "prompt": "Hi"} for i in range(40)]
    first, second = ([r["reference"] for r in task_rows("ifeval", many, seed=s)] for s in (0, 1))
    assert first != second


def test_draws_are_stable_across_processes():
    code = ("from pvar.tasks import task_rows; import sys;"
            "sys.stdout.write(task_rows('ifeval', [{'prompt_id': 'p', 'prompt': 'Hi'}], seed=5)[0]['reference'])")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert runs == {task_rows("ifeval", [{"prompt_id": "p", "prompt": "Hi"}], seed=5)[0]["reference"]}


def test_ifeval_draws_cover_the_weighted_instructions():
    many = [{"prompt_id": i, "prompt": "Hi"} for i in range(400)]
    specs = [parse_spec(r["reference"]) for r in task_rows("ifeval", many, seed=0)]
    ids = {c.id for s in specs for c in s.constraints}
    assert {"change_case:english_lowercase", "punctuation:no_comma", "startend:start_phrase",
            "length_constraints:number_words", "startend:end_checker", "keywords:existence"} <= ids
    assert {len(s.constraints) for s in specs} == {1, 2}
    for s in specs:
        got = {c.id for c in s.constraints}
        assert not ({"change_case:english_lowercase", "startend:start_phrase"} <= got)


def test_phrase_family_and_target_text():
    row = task_rows("phrase", BASE[:1], seed=0)[0]
    spec = parse_spec(row["reference"])
    (c,) = spec.constraints
    assert isinstance(c, StartPhrase)
    assert row["prompt"].endswith(f"Begin your reply with the exact phrase '{c.start_phrase}'.")
    assert target_text(row["reference"]) == target_text(spec) == c.start_phrase
    assert gold(spec, c.start_phrase + " Eggs take ten minutes.") == 1.0
    assert target_text(_spec(NoComma())) is None


def test_task_rows_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown task family"):
        task_rows("nope", BASE, seed=0)
    with pytest.raises(ValueError, match="base row 0"):
        task_rows("ifeval", [{"prompt": "x"}], seed=0)
    with pytest.raises(ValueError, match="appears twice"):
        task_rows("ifeval", [BASE[0], BASE[0]], seed=0)


# ---- gold and guard ----

def test_gold_fraction_and_detail():
    spec = _spec(NoComma(), KeywordExistence(keywords=("river",)))
    assert gold(spec, "a calm river") == 1.0
    assert gold(spec, "a calm, calm river") == 0.5
    assert gold(spec_json(spec), "a lake") == 0.5
    assert gold(spec, "a lake, calm") == 0.0
    assert gold_detail(spec, "a lake") == {"punctuation:no_comma": True, "keywords:existence": False}


@pytest.mark.parametrize(("text", "expected"), [
    ("", 0.0),
    ("hi there", 0.0),  # under 3 words
    ("a a a a", 0.0),  # repeated word
    ("yes yes yes no no no", 0.0),  # 2 distinct of 6
    ("!!! ??? ... ### 1 2 3", 0.0),  # symbols and digits
    ("12 34 56 78 90 ab", 0.0),
    ("Eggs boil in about ten minutes.", 1.0),
    ("The river runs past the old mill and the river bends.", 1.0),
])
def test_guard(text, expected):
    assert guard(text) == expected


def test_gold_scores_reward_signature():
    rows = task_rows("ifeval", BASE, seed=1)
    refs = [r["reference"] for r in rows]
    resp = [["one", "two words"], ["x"], []]
    out = gold_scores([r["prompt"] for r in rows], resp, refs)
    assert [len(o) for o in out] == [2, 1, 0]
    assert out[0] == [gold(refs[0], "one"), gold(refs[0], "two words")]
    with pytest.raises(ValueError, match="row 1: no reference"):
        gold_scores(["p", "q"], [["a"], ["b"]], [refs[0], None])
    with pytest.raises(ValueError, match="row 0: reference is not a task spec"):
        gold_scores(["p"], [["a"]], ["a plain reference answer"])
    with pytest.raises(ValueError, match="differ in length"):
        gold_scores(["p"], [["a"], ["b"]], [refs[0]])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from([c for c, _, _ in CASES]), st.text(max_size=200))
def test_gold_bounded_and_guard_binary(text, constraint, prompt):
    spec = _spec(constraint, NoComma()) if constraint.id != NoComma.id else _spec(constraint)
    assert 0.0 <= gold(spec, text) <= 1.0
    assert guard(text) in (0.0, 1.0)
    assert guard(text, prompt) <= guard(text)  # the prompt only adds the echo rule
    assert guard(text, text) == 0.0  # an answer is an echo of itself


def test_import_is_light():
    code = "import sys, pvar.tasks; print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---- cross-check with the reference implementation, when it is installed ----

CORPUS = [
    "", "Sure, here is a list:\n* eggs\n* milk", "- one\n- two\n- three", "all lowercase words here",
    "Plain text with no commas at all. Any other questions?", 'Answer. "Is there anything else I can help with?"',
    "The river bends near the honest miller's house, and the garden is quiet.", "<<A Title>>\nBody text.",
    "It is very, very IMPORTANT to stay HONEST.", "**bold**\n* real bullet\n  * nested bullet",
]


def test_cross_check_with_lm_eval():
    registry = pytest.importorskip("lm_eval.tasks.ifeval.instructions_registry").INSTRUCTION_DICT
    ours = [NoComma(), Title(), NumberOfWords(num_words=8, relation="less than"),
            NumberOfWords(num_words=8, relation="at least"), ForbiddenWords(forbidden_words=("very", "honest")),
            EndPhrase(end_phrase="Any other questions?"),
            EndPhrase(end_phrase="Is there anything else I can help with?"),
            BulletLists(num_bullets=2), BulletLists(num_bullets=3), KeywordExistence(keywords=("river", "garden"))]
    for c in ours:
        theirs = registry[c.id](c.id)
        theirs.build_description(**{k: list(v) if isinstance(v, tuple) else v for k, v in c.to_dict().items()
                                    if k != "id"})
        for text in CORPUS:
            assert c.check(text) == bool(theirs.check_following(text)), (c.id, text)


def test_format_family_draws_one_shape_constraint_per_prompt():
    from pvar.tasks import parse_spec, task_rows

    rows = task_rows("format", [{"prompt_id": f"p{i}", "prompt": "Tell me about rivers."} for i in range(200)], 0)
    ids = [parse_spec(r["reference"]).constraints for r in rows]
    assert all(len(c) == 1 for c in ids)
    kinds = {c[0].id for c in ids}
    assert kinds == {"change_case:english_lowercase", "punctuation:no_comma", "startend:start_phrase",
                     "length_constraints:number_words", "startend:end_checker"}
    assert rows == task_rows("format", [{"prompt_id": f"p{i}", "prompt": "Tell me about rivers."}
                                        for i in range(200)], 0)  # deterministic


# ---- the echo rule of the guard ----

EGG = "How do I boil an egg?"
HASH = "Explain what a hash table is."
GENUINE = "Put the egg in boiling water for about ten minutes, then cool it under cold water."


def _prompt(base, *constraints):
    return constrained_prompt(base, TaskSpec("format", constraints))


@pytest.mark.parametrize(("answer", "prompt"), [
    (_prompt(EGG, NumberOfWords(num_words=40, relation="less than")),  # the whole prompt, verbatim
     _prompt(EGG, NumberOfWords(num_words=40, relation="less than"))),
    ("Sure " + _prompt(EGG, StartPhrase(start_phrase="Sure")),  # ... with the required opening prepended
     _prompt(EGG, StartPhrase(start_phrase="Sure"))),
    ("Finish your response with this exact phrase: Any other questions?",  # the instruction only
     _prompt(EGG, EndPhrase(end_phrase="Any other questions?"))),
    ("RRT is sampling-based method.", "RRT is sampling-based method or searching-based method?"),
    ("Sure! I hope this helps. I hope this helps.",  # 4 of 7 3-grams copied, but only "sure" of its own
     _prompt(EGG, EndPhrase(end_phrase="I hope this helps."))),
    ("The capital of France: Paris.", "What is the capital of France?"),  # the documented cost
])
def test_echoes_fail_the_guard(answer, prompt):
    assert guard(answer) == 1.0  # a real answer by the other rules: only the echo rule rejects it
    assert is_echo(answer, prompt)
    assert guard(answer, prompt) == 0.0


@pytest.mark.parametrize(("answer", "prompt"), [
    (GENUINE, _prompt(EGG, NoComma())),  # reuses "egg" and a few instruction words
    ("A hash table is a structure that maps keys to slots through a hash function.", HASH),  # 4-word quote
    ("Sure, a hash table is an array of buckets indexed by a hash of the key.",
     _prompt(HASH, StartPhrase(start_phrase="Sure"))),
    ("The capital of France is Paris.", "What is the capital of France?"),  # half copied, 2 words its own
    ("Boil it for ten minutes. Any other questions?", _prompt(EGG, EndPhrase(end_phrase="Any other questions?"))),
])
def test_genuine_answers_that_quote_the_prompt_pass(answer, prompt):
    assert not is_echo(answer, prompt)
    assert guard(answer, prompt) == 1.0


def test_echo_reads_chat_prompts_and_short_answers():
    chat = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": EGG}]
    assert is_echo("How do I boil an egg?", chat) and not is_echo(GENUINE, chat)
    assert not is_echo("An egg", EGG)  # no 3-gram: length is the guard's other rule
    assert guard("An egg", EGG) == 0.0


def test_gold_guarded_reward_passes_the_prompt_to_the_guard():
    from pvar.backends.gold_reward import GoldReward

    spec = TaskSpec("format", (EndPhrase(end_phrase="Any other questions?"),))
    prompt, echo = constrained_prompt(EGG, spec), "How do I boil an egg? Any other questions?"
    answers = [echo, "Boil it for ten minutes. Any other questions?"]
    assert gold(spec, echo) == 1.0 and guard(echo) == 1.0
    assert GoldReward("gold").score([prompt], [answers], [spec_json(spec)]).rewards == [[1.0, 1.0]]
    assert GoldReward("gold-guarded").score([prompt], [answers], [spec_json(spec)]).rewards == [[0.0, 1.0]]


# ---- the rules' version enters fingerprints and manifests ----

def test_rules_version_moves_gold_fingerprints_only(monkeypatch):
    from pvar import tasks
    from pvar.backends.gold_reward import rules_version
    from pvar.config import StageConfig
    from pvar.pipeline.evaluate import EvalConfig
    from pvar.pipeline.reward import RewardConfig

    assert rules_version(" Gold-Guarded ") == rules_version("gold") == tasks.VERSION
    assert rules_version("minilm-ref") is None and rules_version("hf:gold") is None
    gold_cfgs = [RewardConfig(reward="gold"), EvalConfig(policy="p", prompts="e.jsonl", judge="gold")]
    other = [RewardConfig(reward="minilm-ref"), EvalConfig(policy="p", prompts="e.jsonl", judge="mpnet-ref")]
    assert all(c.fingerprint() != StageConfig.fingerprint(c) for c in gold_cfgs)
    assert all(c.fingerprint() == StageConfig.fingerprint(c) for c in other)  # non-gold runs still resume
    before = [c.fingerprint() for c in gold_cfgs]
    monkeypatch.setattr(tasks, "VERSION", "tasks-v999")
    assert all(c.fingerprint() != b for c, b in zip(gold_cfgs, before, strict=True))


def test_reward_shards_of_older_rules_are_refused_not_mixed(tmp_path, monkeypatch):
    from pvar import tasks
    from pvar.errors import ResumeMismatch
    from pvar.pipeline import sharded
    from pvar.pipeline.reward import RewardConfig
    from tests.conftest import write_jsonl

    rows = [{**r, "responses": ["Sure, eggs boil in ten minutes.", "Surefire"]} for r in task_rows("phrase", BASE, 0)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "rewarded"
    cfg = RewardConfig(reward="gold")
    sharded.run("reward", cfg, src, out, show_progress=False)
    assert json.loads((out / "_manifest.json").read_text())["rules_version"] == tasks.VERSION
    sharded.run("reward", cfg, src, out, show_progress=False)  # same rules: resumes
    monkeypatch.setattr(tasks, "VERSION", "tasks-v999")
    with pytest.raises(ResumeMismatch, match="rules_version"):
        sharded.run("reward", cfg, src, out, show_progress=False)
    sharded.run("reward", cfg, src, out, force=True, show_progress=False)
    assert json.loads((out / "_manifest.json").read_text())["rules_version"] == "tasks-v999"
    plain = tmp_path / "plain"
    sharded.run("reward", RewardConfig(reward="fake"), src, plain, show_progress=False)
    assert "rules_version" not in json.loads((plain / "_manifest.json").read_text())


def test_graded_gold_takes_levels_where_pvar_and_reward_std_part():
    """graded: 2-3 instructions, gold the fraction met; over a pool, PVar no longer ranks as reward std does."""
    from pvar.core.stats import reward_stats
    from pvar.tasks.families import draw_spec

    specs = [draw_spec("graded", f"p{i}", 0) for i in range(200)]
    assert {len(s.constraints) for s in specs} == {2, 3}
    rng = np.random.default_rng(0)
    rewards = np.array([[rng.integers(0, len(s.constraints) + 1) / len(s.constraints) for _ in range(8)]
                        for s in specs])
    st = reward_stats(rewards, 4.0)
    order_pvar, order_std = np.argsort(-st.pvar, kind="stable"), np.argsort(-st.reward_std, kind="stable")
    assert not np.array_equal(order_pvar[:50], order_std[:50])
