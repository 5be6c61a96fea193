"""Loading, detecting and converting datasets; every bad row named by line/row and field."""

from __future__ import annotations

import json

import pytest

from sftwizard.core.config import DataSource
from sftwizard.core.data import BUILTIN_DATA, DataError, inspect_data, load_examples


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CONVO = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def test_messages_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [CONVO, CONVO])
    examples, report = load_examples(DataSource(path=str(path)))
    assert examples == [CONVO, CONVO]
    assert report.format == "messages" and report.rows == 2 and report.converted_rows == 2
    assert report.columns == ["messages"] and report.dropped_rows == 0


def test_builtin_demo_paths():
    assert BUILTIN_DATA["builtin:demo"].name == "train.jsonl"
    assert BUILTIN_DATA["builtin:demo-eval"].name == "eval.jsonl"
    examples, report = load_examples(DataSource(path="builtin:demo", max_rows=5))
    assert len(examples) == 5 and report.format == "messages" and report.source == "builtin:demo"
    with pytest.raises(DataError, match="no such builtin dataset"):
        load_examples(DataSource(path="builtin:nope"))
