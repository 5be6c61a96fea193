"""Row-quality checks and the opt-in `clean` command: a cleaned copy, a report, the source untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sftwizard.cli.main import main
from sftwizard.core import cleaning
from sftwizard.core.cleaning import clean_examples, find_duplicates, find_overlap, row_flags


def conv(user: str, answer: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system is not None else [])
    return {"messages": msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize("answer, flags", [
    ("I'm sorry, but I can't help with that.", ["refusal"]),
    ("I\u2019m sorry, but no.", ["refusal"]),  # curly apostrophe
    ("  As an AI language model, I do not have feelings.", ["refusal"]),
    ("Unfortunately, I cannot browse the web.", ["refusal"]),
    ("ok", ["short"]),
    (".", ["short"]),
    ("", ["empty"]),
    ("Sorry to hear that! Here is how to fix it: restart.", []),  # sympathy, not a refusal
    ("42", []),  # a number is a complete answer
    ("7.", []),
    ("Paris is the capital of France.", []),
])
def test_row_flags(answer, flags):
    assert row_flags(conv("question", answer)) == flags


def test_empty_turns_of_any_role_and_other_formats():
    assert row_flags(conv("Hi", "Hello there.", system="  ")) == ["empty"]
    assert row_flags({"prompt": "Translate: cat", "completion": "I cannot do that."}) == ["refusal"]
    assert row_flags({"prompt": [{"role": "user", "content": "Hi"}],
                      "completion": [{"role": "assistant", "content": "k"}]}) == ["short"]
    assert row_flags({"text": "   "}) == ["empty"]
    assert row_flags({"text": "A plain document with words."}) == []


def test_duplicates_exact_then_normalised_first_kept():
    rows = [conv("Hi", "Hello."), conv("Bye", "Goodbye."), conv("Hi", "Hello."), conv("  HI ", "hello."),
            conv("Hi", "Hello!")]
    found = find_duplicates(rows)
    assert (found.exact, found.normalised, found.rows) == (1, 1, [2, 3])
    assert find_duplicates([conv("a?", "b."), conv("a?", "c.")]).total == 0
    # roles matter: the same words said by someone else are another row
    assert find_duplicates([conv("x", "y."), {"messages": [{"role": "assistant", "content": "x"},
                                                           {"role": "user", "content": "y."}]}]).total == 0


def test_overlap_with_another_set():
    train = [conv("Hi", "Hello."), conv("Q1", "A1.")]
    evals = [conv("hi", "HELLO."), conv("Q2", "A2."), conv("Q1", "A1.")]
    found = find_overlap(evals, train)
    assert (found.exact, found.normalised, found.rows) == (1, 1, [0, 2])


def test_clean_examples_removes_each_row_for_its_first_reason():
    rows = [conv("Hi", "Hello there."), conv("Hi", "Hello there."), conv("Q", "I'm sorry, but no."),
            conv("Q2", "k"), conv("Q3", "Fine answer.", system=""), conv("Q4", "Kept answer.")]
    kept, removed, listed = clean_examples(rows)
    assert kept == [rows[0], rows[5]]
    assert removed == {"duplicate": 1, "empty": 1, "refusal": 1, "short": 1}
    assert [(i["row"], i["reason"]) for i in listed] == [(1, "duplicate"), (2, "refusal"), (3, "short"), (4, "empty")]
    kept, removed, _ = clean_examples(rows, kinds=["refusal"])
    assert len(kept) == 5 and removed == {"refusal": 1}


def test_clean_examples_rejects_unknown_kinds_and_overlap_without_a_set():
    with pytest.raises(cleaning.CleaningError, match="unknown kind 'typos'"):
        clean_examples([], kinds=["typos"])
    with pytest.raises(cleaning.CleaningError, match="--against"):
        clean_examples([], kinds=["overlap"])


# --------------------------------------------------------------------------- the command

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def dirty(tmp_path: Path) -> Path:
    rows = [conv(f"Question {i}?", f"Answer number {i}.") for i in range(10)]
    rows += [conv("Question 3?", "Answer number 3."),  # duplicate (line 11)
             conv("Secret?", "I'm sorry, but I can't share that."),  # refusal (line 12)
             conv("Hi", "k"),  # short (line 13)
             conv("Hey", "Hello, how can I help?", system="")]  # empty system turn (line 14)
    return write_jsonl(tmp_path / "dirty.jsonl", rows)


def test_clean_writes_a_copy_reports_lines_and_never_touches_the_source(dirty: Path, tmp_path, capsys):
    before = digest(dirty)
    out = tmp_path / "clean.jsonl"
    rc = main(["clean", str(dirty), "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert digest(dirty) == before
    assert (report["rows_in"], report["rows_out"], report["rows_removed"]) == (14, 10, 4)
    assert report["removed"] == {"duplicate": 1, "empty": 1, "refusal": 1, "short": 1}
    assert sorted((r["line"], r["reason"]) for r in report["removed_rows"]) == [
        (11, "duplicate"), (12, "refusal"), (13, "short"), (14, "empty")]
    cleaned = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(cleaned) == 10 and cleaned[0] == conv("Question 0?", "Answer number 0.")
    # the cleaned copy loads as data and is clean
    from sftwizard.core.config import DataSource
    from sftwizard.core.data import load_examples

    examples, _ = load_examples(DataSource(path=str(out)))
    assert clean_examples(examples)[1] == {"duplicate": 0, "empty": 0, "refusal": 0, "short": 0}


def test_clean_human_output_and_chosen_kinds(dirty: Path, tmp_path, capsys):
    rc = main(["clean", str(dirty), "--out", str(tmp_path / "o.jsonl"), "--drop", "refusal,short"])
    text = capsys.readouterr().out
    assert rc == 0 and "12 of 14 rows kept, 2 removed" in text and "line 12: refusal" in text


def test_clean_against_eval_removes_the_overlap(dirty: Path, tmp_path, capsys):
    evals = write_jsonl(tmp_path / "eval.jsonl", [conv("question 1?", "ANSWER number 1."), conv("New?", "New.")])
    rc = main(["clean", str(dirty), "--out", str(tmp_path / "o.jsonl"), "--drop", "duplicate",
               "--against", str(evals), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["removed"] == {"duplicate": 1, "overlap": 1}


def test_clean_refuses_to_write_over_its_source(dirty: Path, capsys):
    before = digest(dirty)
    rc = main(["clean", str(dirty), "--out", str(dirty)])
    err = capsys.readouterr().err
    assert rc == 2 and "never edits your data" in err and "Traceback" not in err
    assert digest(dirty) == before


def test_clean_bad_input_exits_2(dirty: Path, tmp_path, capsys):
    assert main(["clean", str(dirty), "--out", str(tmp_path / "o.jsonl"), "--drop", "typos"]) == 2
    assert "unknown kind 'typos'" in capsys.readouterr().err
    assert main(["clean", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert not (tmp_path / "o.jsonl").exists()
