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


# --------------------------------------------------------------------------- formats

from sftwizard.core.data import detect_source_format, parse_mapping  # noqa: E402
from tests.fixtures.datasets import MALFORMED, write, write_sparse_gigabyte  # noqa: E402


def load(path, on_bad_rows="stop", **kw):
    return load_examples(DataSource(path=str(path), **kw), on_bad_rows=on_bad_rows)


def test_messages_with_system_tool_turns_weights_and_openai_parts(tmp_path):
    row = {"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
            "name": "weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "name": "weather"},
        {"role": "assistant", "content": "Sunny.", "weight": 1},
    ], "tools": [{"type": "function", "function": {"name": "weather"}}]}
    examples, report = load(write_jsonl(tmp_path / "d.jsonl", [row]))
    (ex,) = examples
    assert ex["messages"][0] == {"role": "system", "content": "Be brief."}  # OpenAI's name for system
    assert ex["messages"][1]["content"] == "Weather in Paris?"
    assert ex["messages"][2]["content"] == "" and ex["messages"][2]["tool_calls"]
    assert ex["messages"][4]["weight"] == 1 and ex["tools"] == row["tools"]


def test_prompt_completion_standard_and_conversational(tmp_path):
    examples, report = load(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2=", "completion": "4"}]))
    assert report.format == "prompt_completion" and examples == [{"prompt": "2+2=", "completion": "4"}]
    conv = {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]}
    examples, report = load(write_jsonl(tmp_path / "cpc.jsonl", [conv]))
    assert report.format == "conversational_prompt_completion" and examples == [conv]


def test_alpaca(tmp_path):
    rows = [{"instruction": "Add.", "input": "2 and 2", "output": "4", "system": "Be exact."},
            {"instruction": "Say hi.", "input": "", "output": "Hi!"}]
    examples, report = load(write_jsonl(tmp_path / "a.jsonl", rows))
    assert report.format == "alpaca" and report.converted_rows == 2
    assert examples[0]["messages"] == [{"role": "system", "content": "Be exact."},
                                       {"role": "user", "content": "Add.\n\n2 and 2"},
                                       {"role": "assistant", "content": "4"}]
    assert examples[1]["messages"][0] == {"role": "user", "content": "Say hi."}


def test_sharegpt_roles_mapped(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                               {"from": "gpt", "value": "A"}, {"from": "human", "value": "Q2"},
                               {"from": "function_call", "value": "call"}, {"from": "observation", "value": "r"},
                               {"from": "gpt", "value": "A2", "weight": 0}, {"from": "human", "value": "Q3"},
                               {"from": "gpt", "value": "A3"}]}]
    good = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    examples, report = load(write_jsonl(tmp_path / "s.jsonl", rows + [good]), on_bad_rows="drop")
    assert report.format == "sharegpt" and len(examples) == 1
    # function_call is not a known ShareGPT role by default: reported, never passed through
    assert report.dropped_rows == 1 and "function_call" in report.problems[0].message
    assert report.problems[0].field == "conversations[4].from"
    examples, report = load(write_jsonl(tmp_path / "s.jsonl", rows), roles={"function_call": "assistant"})
    roles = [m["role"] for m in examples[0]["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert examples[0]["messages"][6]["weight"] == 0


def test_text(tmp_path):
    examples, report = load(write_jsonl(tmp_path / "t.jsonl", [{"text": "Once upon a time."}]))
    assert report.format == "text" and examples == [{"text": "Once upon a time."}]


def test_csv_question_answer_mapping(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\nWhat is 2+2?,4\n"Multi\nline?","yes, it is"\n', encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the dataset format.*question, answer"):
        load(path)
    examples, report = load(path, columns={"prompt": "question", "completion": "answer"})
    assert report.format == "prompt_completion"
    assert examples[1] == {"prompt": "Multi\nline?", "completion": "yes, it is"}
    examples, report = load(path, columns={"user": "question", "assistant": "answer"})
    assert report.format == "messages" and examples[0]["messages"][1] == {"role": "assistant", "content": "4"}
    with pytest.raises(DataError, match="no column 'query'"):
        load(path, columns={"prompt": "query", "completion": "answer"})


def test_csv_bad_rows_named_by_line(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_bytes(b'user,assistant\nHi,Hello\n"two\nlines",ok\nx,\nbad\xff,y\n')
    with pytest.raises(DataError) as err:
        load(path)
    problems = {(p.line, p.field, p.code) for p in err.value.problems}
    assert (5, "assistant", "empty_field") in problems and (6, None, "undecodable") in problems
    assert "line 5" in str(err.value)


def test_json_array_parquet_and_jsonl_agree(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(2500)]
    (tmp_path / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl", rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", row_group_size=700)
    loaded = [load(tmp_path / f"d.{ext}")[0] for ext in ("json", "jsonl", "parquet")]
    assert loaded[0] == loaded[1] == loaded[2] == rows
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows[:3]}), encoding="utf-8")
    assert load(tmp_path / "wrapped.json")[0] == rows[:3]


def test_parquet_bad_row_named_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": ""}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"row 1, field completion: empty text"):
        load(tmp_path / "d.parquet")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_case_names_line_and_field(case, tmp_path):
    data, bad_line, field, words = MALFORMED[case]
    path = write(tmp_path / f"{case}.jsonl", data)
    with pytest.raises(DataError) as err:
        load(path)
    sentence = str(err.value)
    assert f"line {bad_line}" in sentence and words in sentence and str(path) in sentence
    if field:
        assert f"field {field}" in sentence
    assert "\n" not in sentence
    # drop: the row is left out, with the report
    examples, report = load(path, on_bad_rows="drop")
    assert report.dropped_rows == 1 and report.converted_rows == len(examples) == report.rows - 1
    assert report.problems[0].line == bad_line and report.problems[0].field == field


def test_nothing_usable_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="the dataset has no rows"):
        load(write(tmp_path / "e.jsonl", b"\n\n"))
    with pytest.raises(DataError, match="the file is empty"):
        load(write(tmp_path / "e.json", b"  "))
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unsupported file type .txt"):
        load(write(tmp_path / "x.txt", b"hi"))
    with pytest.raises(DataError, match="none of the 1 rows can be used"):
        load(write(tmp_path / "b.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n'),
             on_bad_rows="drop")


def test_max_rows(tmp_path):
    examples, report = load(write_jsonl(tmp_path / "d.jsonl", [CONVO] * 10), max_rows=3)
    assert len(examples) == 3 and report.rows == 3


def test_gigabyte_file_format_detected_without_reading_it(tmp_path):
    import time
    import tracemalloc

    head = b"".join(json.dumps(CONVO).encode() + b"\n" for _ in range(100))
    path = write_sparse_gigabyte(tmp_path / "big.jsonl", head)
    assert path.stat().st_size == 1 << 30
    tracemalloc.start()
    start = time.perf_counter()
    fmt, columns = detect_source_format(DataSource(path=str(path)))
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert fmt == "messages" and columns == ["messages"]
    assert peak < 20 * 1024 * 1024 and elapsed < 2
    json_path = write_sparse_gigabyte(tmp_path / "big.json", b"[" + b",".join(json.dumps(CONVO).encode()
                                                                             for _ in range(100)) + b",")
    assert detect_source_format(DataSource(path=str(json_path)))[0] == "messages"


def test_hub_dataset_offline_is_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_examples(DataSource(path="someone/some-dataset"))
    assert "cannot reach the Hugging Face Hub" in str(err.value) and "\n" not in str(err.value)


def test_local_dataset_folder(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"text": "a b c"}, {"text": "d e"}]).save_to_disk(str(tmp_path / "saved"))
    examples, report = load(tmp_path / "saved")
    assert examples == [{"text": "a b c"}, {"text": "d e"}] and report.problems == []


def test_parse_mapping():
    assert parse_mapping(["prompt=question", "role:human=user"]) == ({"prompt": "question"}, {"human": "user"})
    with pytest.raises(DataError, match="cannot map to 'questions'"):
        parse_mapping(["questions=q"])
    with pytest.raises(DataError, match="a role maps to"):
        parse_mapping(["role:human=person"])


def test_inspect_reports_without_raising(tmp_path):
    data, *_ = MALFORMED["unknown_role"]
    report = inspect_data(DataSource(path=str(write(tmp_path / "d.jsonl", data))))
    d = report.to_dict()
    assert d["format"] == "messages" and d["rows"] == 2 and d["dropped_rows"] == 1
    assert d["problems"][0]["line"] == 2 and d["problems"][0]["field"] == "messages[1].role"
    assert d["audit"]["tokenizer"] is None and d["audit"]["rows"] == 1


def test_json_array_streamed_across_chunks(tmp_path, monkeypatch):
    from sftwizard.core import data_readers

    monkeypatch.setattr(data_readers, "JSON_CHUNK", 37)
    rows = [{"text": f"row {i} " + "é" * (i % 5)} for i in range(200)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    assert load(path)[0] == rows
    broken = json.dumps(rows[:50], indent=1)[:-2] + ', {"text": oops}]'
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(DataError, match=r"line 151: invalid JSON in row 50"):
        load(path)


def test_a_csv_quote_left_open_names_its_line_and_what_it_swallowed(tmp_path):
    # the quote on line 3 used to turn lines 4-9 into one cell of one row, without a word
    path = tmp_path / "qa.csv"
    rows = "".join(f"q{i},a{i}\n" for i in range(3, 9))
    path.write_text(f'user,assistant\nq1,a1\nq2,"a2 starts here\n{rows}', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load(path)
    assert "line 3, field assistant: a quote opened on this line is never closed: the 6 lines after it" in str(
        err.value)
    examples, report = load(path, on_bad_rows="drop")
    assert len(examples) == 1 and report.problems[0].code == "unclosed_quote" and report.dropped_rows == 1
    # quotes that close, doubled quotes and quoted line breaks are not mistaken for it
    path.write_text('user,assistant\n"say ""hi""","a\nb"\n"x, y",z\n', encoding="utf-8")
    examples, report = load(path)
    assert [e["messages"][1]["content"] for e in examples] == ["a\nb", "z"] and not report.problems


def test_a_long_csv_cell_is_read_and_a_huge_one_is_a_problem_of_its_row(tmp_path, monkeypatch):
    from sftwizard.core import data_readers

    path = tmp_path / "long.csv"
    path.write_text("user,assistant\nq1,a1\nq2," + "x" * 200_000 + "\nq3,a3\n", encoding="utf-8")
    examples, report = load(path)  # over Python's 128 KiB default, which used to fail everything
    assert len(examples) == 3 and len(examples[1]["messages"][1]["content"]) == 200_000
    import csv

    monkeypatch.setattr(data_readers, "CSV_CELL_LIMIT", 100_000)  # the limit, scaled down
    before = csv.field_size_limit(100_000)
    try:
        with pytest.raises(DataError, match=r"line 3: a cell longer than 100,000 characters"):
            load(path)
        examples, report = load(path, on_bad_rows="drop")
        assert [e["messages"][0]["content"] for e in examples] == ["q1", "q3"] and report.dropped_rows == 1
    finally:
        csv.field_size_limit(before)


def test_a_huge_row_is_tokenized_only_in_part_for_inspection(tmp_path, monkeypatch):
    from sftwizard.core import data as data_mod
    from sftwizard.core.config import RunConfig
    from tests.fixtures.tokenizers import make_tokenizer

    # the bound, scaled down: 100 MB took over 12 GB when tokenized whole (20 MB: 4.1 GB, 56 s)
    monkeypatch.setattr(data_mod, "INSPECT_CHARS", 5_000)
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    huge = {"messages": [{"role": "user", "content": "word " * 2_000}, {"role": "assistant", "content": "x " * 20_000}]}
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, huge, good)) + "\n", encoding="utf-8")
    cfg = RunConfig()
    cfg.training.max_length = 128  # the bound is 100 characters per token of max_length, or INSPECT_CHARS
    report = inspect_data(DataSource(path=str(path)), tokenizer=make_tokenizer("llama3"), cfg=cfg)
    (note,) = [p for p in report.problems if p.code == "row_too_long"]
    assert note.line == 2 and note.severity == "warning"
    assert "50,000 characters: the token audit reads its first 12,800 only" in note.message
    assert report.audit["rows_encoded"] == 3 and report.audit["rows_over_max_length"] == 1
    assert report.audit["token_length"]["max"] < 12_800  # not the 20,000+ tokens of the whole row


def test_a_json_array_row_too_deep_or_not_text_is_a_problem_of_its_row(tmp_path):
    good = '{"prompt": "q", "completion": "a"}'
    deep = '{"prompt": "q", "completion": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    odd = '{"prompt": "q \\udc00", "completion": "a"}'
    path = tmp_path / "d.json"
    path.write_text(f"[{good},\n{deep},\n{odd},\n{good}]", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1, field x: nested too deeply"):
        load(path)
    examples, report = load(path, on_bad_rows="drop")
    assert len(examples) == 2 and [(p.row, p.field, p.code) for p in report.problems] == [
        (1, "x", "too_deep"), (2, "prompt", "lone_surrogate")]
