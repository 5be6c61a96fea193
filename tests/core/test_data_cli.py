"""`sft-wizard data inspect`: JSON schema; it always reports, every malformed case by line and field
(exit 1 when a run would stop); exit 2 only for a source that cannot be read at all."""

from __future__ import annotations

import json

import pytest

from sftwizard.cli.main import main
from tests.fixtures.datasets import GOOD, MALFORMED, NON_ALTERNATING, line, write
from tests.fixtures.tokenizers import save_model_dir
from tests.fixtures.trainer import isolated_home


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    isolated_home(tmp_path_factory)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_is_reported_by_line_and_field(case, tmp_path, capsys):
    data, bad_line, field, words = MALFORMED[case]
    path = write(tmp_path / "d.jsonl", data)
    code, out, err = run(capsys, "data", "inspect", str(path))
    assert code == 1 and f"line {bad_line}" in err and words in err and "on_bad_rows: stop refuses" in err
    assert f"line {bad_line}" in out and "1 problems" in out  # the report itself, on stdout
    if field:
        assert f"field {field}" in err
    assert "Traceback" not in err
    for policy, expected in (("stop", 1), ("drop", 0)):
        code, out, err = run(capsys, "data", "inspect", str(path), "--on-bad-rows", policy, "--json")
        assert code == expected
        report = json.loads(out)
        assert report["dropped_rows"] == 1 and report["problems"][0]["line"] == bad_line
        assert report["problems"][0].get("field") == field


def test_inspect_reports_every_problem_however_many(tmp_path, capsys):
    # a run stops after 100; inspect reads to the end and lists each one
    path = write(tmp_path / "d.jsonl", (line(GOOD) + b"{broken\n") * 150)
    code, out, err = run(capsys, "data", "inspect", str(path), "--json")
    report = json.loads(out)
    assert code == 1 and report["rows"] == 300 and report["converted_rows"] == 150
    assert [p["line"] for p in report["problems"]] == list(range(2, 301, 2))


def test_an_unknown_format_is_reported_with_its_columns(tmp_path, capsys):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\nAnd 3+3?,6\n", encoding="utf-8")
    code, out, err = run(capsys, "data", "inspect", str(path), "--json")
    report = json.loads(out)
    assert code == 1 and report["format"] == "unknown" and report["columns"] == ["question", "answer"]
    assert report["rows"] == 2 and report["converted_rows"] == 0
    assert report["problems"][0]["code"] == "unknown_format" and "--map" in report["problems"][0]["message"]


def test_inspect_json_schema_with_audit(tmp_path, capsys):
    model = save_model_dir("llama3", tmp_path / "m")
    path = write(tmp_path / "d.jsonl", line(GOOD) * 5)
    code, out, err = run(capsys, "data", "inspect", str(path), "--model", str(model), "--max-length", "16", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert {"format", "rows", "columns", "problems", "converted_rows", "dropped_rows", "audit"} <= set(report)
    assert report["format"] == "messages" and report["rows"] == 5 and report["converted_rows"] == 5
    audit = report["audit"]
    assert audit["template_source"] == "trl-training" and audit["rows_encoded"] == 5
    assert audit["token_length"]["max"] >= audit["token_length"]["p50"] > 0
    assert audit["rows_over_max_length"] == 5 and audit["trained_tokens_lost_to_truncation"] > 0
    code, out, err = run(capsys, "data", "inspect", str(path), "--model", str(model), "--json")
    audit = json.loads(out)["audit"]
    assert audit["eos_coverage"] == 1.0 and 0 < audit["trained_share"] < 1 and audit["rows_over_max_length"] == 0


def test_template_refusing_rows_is_named(tmp_path, capsys):
    model = save_model_dir("mistral", tmp_path / "m")
    path = write(tmp_path / "d.jsonl", NON_ALTERNATING)
    code, out, err = run(capsys, "data", "inspect", str(path), "--model", str(model))
    assert code == 1 and "line 2" in err and "alternate" in err
    code, out, err = run(capsys, "data", "inspect", str(path), "--model", str(model), "--on-bad-rows", "drop",
                         "--json")
    report = json.loads(out)
    assert code == 0 and report["audit"]["rows_failed"] == 1
    assert [p["line"] for p in report["problems"] if p["code"] == "template_error"] == [2]


def test_inspect_csv_with_mapping_human_output(tmp_path, capsys):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\n", encoding="utf-8")
    code, out, err = run(capsys, "data", "inspect", str(path))
    assert code == 1 and "--map" in err and "format unknown" in out
    code, out, err = run(capsys, "data", "inspect", str(path), "--map", "prompt=question", "--map",
                         "completion=answer")
    assert code == 0 and "prompt_completion" in out and "rows 1" in out


def test_inspect_bad_arguments(tmp_path, capsys):
    assert run(capsys, "data", "inspect", str(tmp_path / "none.jsonl"))[0] == 2
    assert run(capsys, "data", "inspect", str(tmp_path / "none.jsonl"), "--json")[0] == 2  # cannot be read at all
    assert run(capsys, "data", "inspect", str(write(tmp_path / "empty.jsonl", b"\n")), "--json")[0] == 2
    code, out, err = run(capsys, "data", "inspect", "builtin:demo", "--map", "nonsense")
    assert code == 2 and "FIELD=COLUMN" in err
    code, out, err = run(capsys, "data", "inspect", "builtin:demo", "--max-rows", "0")
    assert code == 2 and "--max-rows" in err
