"""Data inspection that tells everything (issue 15 item 15): rows the template refuses are counted
as dropped, conflicting options get a note, a nested unknown key is named as unknown, and a bad
line in a folder of shards is named by file and line."""

from __future__ import annotations

import json

import pytest

from sftwizard.cli.main import main
from tests.fixtures.datasets import GOOD, line, msgs, write
from tests.fixtures.tokenizers import save_model_dir
from tests.fixtures.trainer import isolated_home


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    isolated_home(tmp_path_factory)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rows_the_template_refuses_are_counted_as_dropped(tmp_path, capsys):
    model = save_model_dir("mistral", tmp_path / "m")  # its template raises on two user turns in a row
    refused = line(msgs(("user", "Hi"), ("user", "Again"), ("assistant", "Hello")))
    path = write(tmp_path / "d.jsonl", line(GOOD) * 5 + refused * 150)
    code, out, err = run(capsys, "data", "inspect", str(path), "--model", str(model), "--on-bad-rows", "drop",
                         "--json")
    report = json.loads(out)
    assert report["audit"]["rows_failed"] == 150
    assert report["dropped_rows"] == 150 and report["converted_rows"] == 5
    assert report["rows"] == report["converted_rows"] + report["dropped_rows"]


def test_a_bad_line_in_a_folder_of_shards_is_named_by_file_and_line(tmp_path, capsys):
    folder = tmp_path / "shards"
    folder.mkdir()
    write(folder / "part-000.jsonl", line(GOOD) * 3)
    write(folder / "part-001.jsonl", line(GOOD) * 2 + b'{"messages": [\n' + line(GOOD))
    code, out, err = run(capsys, "data", "inspect", str(folder))
    assert code in (1, 2) and "Traceback" not in err
    assert f"{folder / 'part-001.jsonl'}" in out + err and "line 3" in out + err
    code, out, err = run(capsys, "data", "inspect", str(folder), "--on-bad-rows", "drop", "--json")
    report = json.loads(out)
    assert report["rows"] == 7 and report["converted_rows"] == 6 and report["dropped_rows"] == 1
    (problem,) = report["problems"]
    assert problem["source"] == str(folder / "part-001.jsonl") and problem["line"] == 3


def test_a_folder_with_split_files_reads_the_split_asked_for(tmp_path, capsys):
    folder = tmp_path / "splits"
    folder.mkdir()
    write(folder / "train.jsonl", line(GOOD) * 4)
    write(folder / "test.jsonl", line(GOOD) * 2)
    code, out, err = run(capsys, "data", "inspect", str(folder), "--json")
    assert code == 0 and json.loads(out)["rows"] == 4
    code, out, err = run(capsys, "data", "inspect", str(folder), "--split", "test", "--json")
    assert code == 0 and json.loads(out)["rows"] == 2


def test_a_nested_unknown_key_is_named_as_unknown(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: {id: 'builtin:tiny-chat'}\ndata:\n  sources: [{path: 'builtin:demo'}]\n"
                      "  eval_source: {path: 'builtin:demo', splt: test}\n", encoding="utf-8")
    code, out, err = run(capsys, "validate", str(preset))
    assert code == 2
    assert "data.eval_source.splt: unknown key (did you mean 'split'?)" in err
    assert "must be a mapping" not in err


def test_conflicting_options_are_resolved_with_a_note(tmp_path, capsys, repo_root):
    model = save_model_dir("llama3", tmp_path / "m")
    data = write(tmp_path / "d.jsonl", line(GOOD) * 3)
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}", encoding="utf-8")
    code, out, err = run(capsys, "preview", "--model", str(model), "--data", str(data), "--template-file", str(tpl),
                         "--template-source", "chatml", "--max-length", "64", "--set", "training.max_length=32",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["max_length"] == 64
    assert "note: --template-file" in err and "--template-source chatml is ignored" in err
    assert "note: --max-length overrides --set training.max_length=32" in err
    code, out, err = run(capsys, "data", "inspect", str(data), "--max-length", "64", "--json")
    assert code == 0 and "--max-length has no effect without --model" in err
