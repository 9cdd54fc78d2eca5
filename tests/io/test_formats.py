import json

import pytest

from pvar.io.bundled import bundled
from pvar.io.formats import FormatError, detect, ultrafeedback
from pvar.io.rows import read_rows


def comp(text, overall, **ratings):
    return {"response": text, "model": "m", "overall_score": overall,
            "annotations": {k: {"Rating": v, "Rationale": ""} for k, v in ratings.items()}}


def test_overall_and_aspect_ratings():
    row = {"instruction": "Q?", "source": "s", "completions": [
        comp("a", 8.5, helpfulness="4", honesty="N/A", truthfulness="5", instruction_following="3"),
        comp("b", 2, helpfulness="N/A", honesty="N/A", truthfulness="N/A", instruction_following="N/A"),
    ]}
    overall = ultrafeedback(row, "overall")
    assert overall["prompt"] == "Q?" and overall["responses"] == ["a", "b"]
    assert overall["rewards"] == [8.5, 2.0] and overall["source"] == "s"
    aspects = ultrafeedback(row, "aspects")
    assert aspects["rewards"] == [pytest.approx(4.0), None]  # all N/A -> not scored


def test_adapter_is_idempotent_on_pipeline_rows():
    row = ultrafeedback({"instruction": "Q", "completions": [comp("a", 1)]})
    assert ultrafeedback(row) is row


@pytest.mark.parametrize("row,field", [
    ({"completions": []}, "instruction"),
    ({"instruction": "Q", "completions": "x"}, "completions"),
    ({"instruction": "Q", "completions": [{"model": "m"}]}, "completions[0].response"),
    ({"instruction": "Q", "completions": [comp("a", "high")]}, "completions[0].overall_score"),
])
def test_adapter_errors_name_the_field(row, field):
    with pytest.raises(FormatError) as exc:
        ultrafeedback(row)
    assert exc.value.field == field


def test_bad_aspect_rating_is_named():
    with pytest.raises(FormatError) as exc:
        ultrafeedback({"instruction": "Q", "completions": [comp("a", 3, honesty="great")]}, "aspects")
    assert exc.value.field == "completions[0].annotations.honesty.Rating"


def test_detect():
    assert detect(["instruction", "completions", "source"]) == "ultrafeedback"
    assert detect(["prompt", "responses", "rewards"]) == "pipeline"


def test_bundled_sample_reads_with_stable_derived_ids(tmp_path):
    rows = [r for b in read_rows(bundled("ultrafeedback_sample.jsonl")) for r in b.data.to_pylist()]
    assert len(rows) == 40 and all(len(r["responses"]) == 4 for r in rows)
    again = [r for b in read_rows(bundled("ultrafeedback_sample.jsonl")) for r in b.data.to_pylist()]
    assert [r["prompt_id"] for r in rows] == [r["prompt_id"] for r in again]
    assert len({r["prompt_id"] for r in rows}) == 40
    kept = {k: v for k, v in json.loads(bundled("ultrafeedback_sample.jsonl").read_text().splitlines()[0]).items()}
    assert rows[0]["prompt"] == kept["instruction"]
