"""The one run model: the run directory's names, the event schema, the fold from events to a
run's state, and the follower that `run`, `attach` and the Run screen share."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sftwizard.core import follower, runs
from sftwizard.core.event_lines import event_line
from sftwizard.core.events import EventWriter, event_problem
from sftwizard.core.follower import STARTING, RunFollower
from sftwizard.core.run_model import (
    FIELD_TYPES,
    FINAL_STATUSES,
    Kind,
    Reason,
    Status,
    fold,
)
from sftwizard.core.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]


def ev(kind: str, t: float, step: int | None = None, **fields) -> dict:
    return {"event": kind, "time": t, "step": step, **fields}


# --------------------------------------------------------------------------- RunDir

def test_the_run_dir_names_its_files_and_carries_the_stop_request(tmp_path):
    rd = RunDir(tmp_path)
    assert (rd.config.name, rd.events.name, rd.log.name, rd.final.name) == (
        "config.yaml", "events.jsonl", "train.log", "final")
    assert rd.checkpoint(40) == tmp_path / "checkpoints" / "checkpoint-40"
    assert not rd.stop_requested() and not rd.looks_like_run()
    rd.request_stop()
    assert rd.stop_requested() and (tmp_path / "STOP").exists()  # the file the runner honours
    rd.clear_stop()
    assert not rd.stop_requested()
    rd.events.write_text("")
    assert rd.looks_like_run()


# --------------------------------------------------------------------------- the schema

def test_every_kind_the_code_writes_or_reads_is_in_the_schema():
    """A kind written as a literal anywhere (emit("x"…), {"event": "x"}, ev.get("event") == "x")
    must be one the schema knows: the schema is the whole list."""
    patterns = [r'emit\(\s*"(\w+)"', r'"event":\s*"(\w+)"', r'get\("event"\)\s*[!=]=\s*"(\w+)"']
    found: dict[str, str] = {}
    for folder in ("core", "cli", "tui"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for pattern in patterns:
                for kind in re.findall(pattern, text):
                    found.setdefault(kind, str(path.relative_to(REPO)))
    unknown = {k: where for k, where in found.items() if k not in Kind.ALL}
    assert not unknown, unknown


def test_every_kind_has_a_line_or_says_nothing_without_raising():
    for kind in Kind.ALL:
        line = event_line(ev(kind, 1.0, 3, message="something happened", status="failed"))
        assert line is None or isinstance(line, str)
    # a kind the formatter has no case for is told by its message: a new kind is readable at once
    assert event_line(ev("brand_new", 1.0, 3, message="a new thing")) == "brand_new: a new thing"


def test_the_schema_types_are_what_the_reader_checks():
    assert event_problem(ev(Kind.LOG, 1.0, 2, loss=1.5)) is None
    assert event_problem(ev(Kind.LOG, 1.0, "2")) == "step is str"
    assert set(FIELD_TYPES) >= {"step", "loss", "status", "reason", "message"}
    assert FINAL_STATUSES == {Status.FINISHED, Status.STOPPED, Status.FAILED, Status.LOST}


# --------------------------------------------------------------------------- the fold

START = ev(Kind.START, 100.0, 0, model="builtin:tiny-chat", method="lora")
LOGS = [ev(Kind.LOG, 100.0 + i, i, max_steps=10, loss=3.0 - 0.1 * i, learning_rate=1e-3, tokens_per_s=500.0 + i)
        for i in range(1, 5)]


def test_the_fold_of_a_finished_run():
    end = ev(Kind.END, 110.0, 10, status="finished", final_dir="/r/final", duration_s=10.0)
    state = fold([START, *LOGS, ev(Kind.EVAL, 104.5, 4, eval_loss=2.5),
                  ev(Kind.CHECKPOINT, 104.6, 4, path="/r/checkpoints/checkpoint-4"), end])
    assert state.status(alive=False) == Status.FINISHED and state.ended
    assert (state.step, state.max_steps, state.top_step) == (10, 10, 10)
    assert state.loss == state.last_loss == 3.0 - 0.4
    assert state.eval_loss == 2.5
    assert state.tokens_per_s == 504.0 and state.learning_rate == 1e-3
    assert state.checkpoint["path"].endswith("checkpoint-4")
    assert state.reason(alive=False) is None and state.message(alive=False) is None
    assert state.duration(alive=False, now=999.0) == 10.0
    assert state.first["model"] == "builtin:tiny-chat"


def test_the_fold_of_a_crash_keeps_reason_as_the_code_and_message_as_the_sentence():
    line = "the training process was killed by SIGSEGV (signal 11) at step 4; details in train.log"
    error = ev(Kind.ERROR, 105.0, 4, reason="crash", message=line, returncode=-11)
    crashed = fold([START, *LOGS, error])
    assert crashed.status(alive=True) == Status.RUNNING  # the supervisor has not written the end yet
    assert crashed.reason(alive=True) is None and crashed.message(alive=True) is None
    assert crashed.seg_error["message"] == line
    crashed.feed([ev(Kind.END, 105.1, 4, status="failed", reason="crash", message=line, returncode=-11)])
    assert crashed.status(alive=False) == Status.FAILED
    assert crashed.reason(alive=False) == Reason.CRASH
    assert crashed.message(alive=False) == line
    assert crashed.step == 4


def test_the_fold_of_a_run_gone_without_an_end_is_lost():
    state = fold([START, *LOGS])
    assert state.status(alive=False) == Status.LOST
    assert state.reason(alive=False) == Reason.LOST
    assert "vanished at step 4 without an end event" in state.message(alive=False)
    assert state.eta_s is not None and state.eta_s > 0  # from the step rate: 6 steps to go at 1 step/s


def test_a_resume_opens_a_new_segment_whose_end_is_its_own():
    stopped = ev(Kind.END, 105.0, 4, status="stopped", reason="stopped", message="on request")
    resume = ev(Kind.RESUME, 200.0, 4, model="builtin:tiny-chat", method="lora", resume_from="/c/checkpoint-4")
    state = fold([START, *LOGS, stopped, resume])
    assert not state.ended and state.resumes == 1 and state.status(alive=True) == Status.RUNNING
    assert state.status(alive=False) == Status.LOST  # the old stop is not this process's outcome
    state.feed([ev(Kind.LOG, 201.0, 5, max_steps=10, loss=2.0), ev(Kind.END, 203.0, 10, status="finished")])
    assert state.status(alive=False) == Status.FINISHED
    assert state.duration(alive=False, now=0.0) == 5.0 + 3.0  # both processes' time, not the gap


def test_an_end_with_an_unknown_status_is_failed_and_odd_lines_are_counted(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "start", "time": 1, "step": 0}\n[1, 2]\n'
                    '{"event": "end", "time": 2, "step": 0, "status": "exploded"}\n', encoding="utf-8")
    from sftwizard.core.events import read_events

    state = fold(read_events(path))
    assert state.status(alive=False) == Status.FAILED and state.skipped == 1


def test_runs_and_the_fold_agree(tmp_path):
    d = tmp_path / "20260101-000000-agree"
    writer = EventWriter(RunDir(d).events)
    for e in (START, *LOGS):
        writer.emit(e["event"], e["step"], **{k: v for k, v in e.items() if k not in ("event", "time", "step")})
    writer.emit(Kind.END, 4, status="failed", reason="nan", message="the loss became NaN at step 4")
    writer.close()
    info = runs.run_info(d)
    state = runs.state_of(d)
    assert (info.status, info.reason, info.message) == (Status.FAILED, Reason.NAN, "the loss became NaN at step 4")
    assert (info.step, info.last_loss) == (state.step, state.last_loss)


# --------------------------------------------------------------------------- the follower

def _writer_process(run_dir: Path, body: str) -> subprocess.Popen:
    """A stand-in for a run's process that writes events with the real EventWriter."""
    code = textwrap.dedent(f"""
        import sys, time
        from sftwizard.core.events import EventWriter
        w = EventWriter({str(RunDir(run_dir).events)!r})
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code])


def _follow_to_the_end(follower: RunFollower, timeout: float = 60.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not follower.done:
        assert time.monotonic() < deadline, (follower.status, seen)
        seen += [e["event"] for e in follower.poll()]
        time.sleep(0.05)
    return seen


def test_the_follower_reads_a_run_to_its_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = _writer_process(run_dir, """
        time.sleep(0.5)
        w.emit("start", 0, model="m", method="full")
        for i in range(1, 4):
            w.emit("log", i, max_steps=3, loss=1.0 / i)
            time.sleep(0.05)
        w.emit("end", 3, status="finished", final_dir="final")
    """)
    follower = RunFollower(run_dir, proc)
    assert follower.status == STARTING and follower.poll() == []
    seen = _follow_to_the_end(follower)
    proc.wait(timeout=30)
    assert seen == ["start", "log", "log", "log", "end"]
    assert follower.status == Status.FINISHED and follower.state.step == 3 and follower.end["final_dir"] == "final"


def test_a_process_that_exits_without_an_end_is_failed_with_its_code(tmp_path):
    run_dir = tmp_path / "run"
    proc = _writer_process(run_dir, """
        w.emit("start", 0, model="m", method="full")
        w.emit("log", 2, max_steps=9, loss=1.0)
        w.close()
        sys.exit(3)
    """)
    follower = RunFollower(run_dir, proc)
    _follow_to_the_end(follower)
    assert follower.status == Status.FAILED and follower.reason == Reason.CRASH
    assert follower.message == "the training process exited (code 3) without an end event"
    assert follower.state.step == 2  # every event written before it went was read


def test_a_resumed_follower_waits_for_the_new_process_not_the_old_end(tmp_path):
    run_dir = tmp_path / "run"
    writer = EventWriter(RunDir(run_dir).events)
    writer.emit(Kind.START, 0, model="m", method="full")
    writer.emit(Kind.END, 2, status="stopped", reason="stopped", message="on request")
    writer.close()
    proc = _writer_process(run_dir, """
        time.sleep(0.5)
        w.emit("resume", 2, model="m", method="full", resume_from="checkpoint-2")
        w.emit("end", 4, status="finished")
    """)
    follower = RunFollower(run_dir, proc, from_start=False, resumed=True)
    assert follower.state.ended and not follower.ended and follower.status == STARTING
    seen = _follow_to_the_end(follower)
    proc.wait(timeout=30)
    assert seen == ["resume", "end"]  # from now on: the history is folded, not returned
    assert follower.status == Status.FINISHED and follower.state.resumes == 1


def test_a_run_of_another_process_is_lost_once_its_process_is_gone(tmp_path):
    """Without a child of its own, the follower asks the run's lock/pid (runs.is_alive)."""
    run_dir = tmp_path / "20260101-000000-other"
    writer = EventWriter(RunDir(run_dir).events)
    writer.emit(Kind.START, 0, model="m", method="full")
    writer.emit(Kind.LOG, 5, max_steps=10, loss=2.0)
    writer.close()
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        RunDir(run_dir).pid_file.write_text(str(stand_in.pid))
        runs._record_process(run_dir, stand_in.pid)
        follower = RunFollower(run_dir)
        assert [e["event"] for e in follower.poll()] == ["start", "log"]
        assert follower.status == Status.RUNNING and not follower.done
    finally:
        stand_in.kill()
        stand_in.wait()
    follower.poll()
    assert follower.done and follower.status == Status.LOST
    assert "vanished at step 5 without an end event" in follower.message


def test_a_pid_file_holding_no_process_id_is_not_alive(tmp_path):
    """A pid out of range made os.kill raise (OverflowError) out of is_alive, and the Run screen
    took any exception as "alive": such a run looked alive forever. A pid of 0 or below would
    probe a whole process group."""
    run_dir = tmp_path / "20260101-000000-oddpid"
    run_dir.mkdir()
    for text in ("99999999999", "-1", "0"):
        RunDir(run_dir).pid_file.write_text(text)
        assert runs.is_alive(run_dir) is False


def test_follow_yields_the_history_then_stops_at_the_end(tmp_path):
    d = tmp_path / "20260101-000000-done"
    writer = EventWriter(RunDir(d).events)
    writer.emit(Kind.START, 0, model="m", method="full")
    writer.emit(Kind.END, 0, status="stopped", reason="stopped", message="on request")
    writer.close()
    batches = list(follower.follow(d, interval=0.01))
    assert [[e["event"] for e in b] for b in batches] == [["start", "end"]]


def test_the_architecture_doc_lists_every_kind_status_and_reason_of_the_schema(repo_root):
    # The one table of event kinds is docs/architecture.md (the README links to it): it must not
    # drift from the schema in either direction.
    import re

    from sftwizard.core.run_model import Kind, Reason, Status

    doc = (repo_root / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## The run model"):]
    table_kinds = set(re.findall(r"^\| `(\w+)` \(`[A-Z_]+`\)", section, flags=re.M))
    assert table_kinds == set(Kind.ALL)
    for name in (*Status.ALL, *Reason.ALL):
        assert f"`{name}`" in section, name
