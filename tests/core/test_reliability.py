"""Reliability gaps of issue 15 (items 4, 9, 10, 11, 12, 13, 14): each test reproduces a failure
found by breaking the tool on purpose. Runs train for real, in-process, on the builtin tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sftwizard.core import runs
from sftwizard.core.events import EVENTS_FILE, read_events
from sftwizard.core.runner import CHECKPOINTS_DIR, execute
from tests.core.test_runs import tiny_config, write_data


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def train_in_process(tmp_path: Path, **training) -> Path:
    """A run directory trained to its end by the real training process code, in this process."""
    cfg = tiny_config(tmp_path / "runs", write_data(tmp_path / "data.jsonl", rows=24), **training)
    run_dir = runs.create_run(cfg)
    assert execute(run_dir) == 0
    return run_dir


def drop_end(run_dir: Path) -> None:
    """As if the process died after its last checkpoint, before writing `end`."""
    path = run_dir / EVENTS_FILE
    kept = [json.dumps(ev) for ev in read_events(path) if ev["event"] != "end"]
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- 14

def test_resuming_from_the_checkpoint_at_max_steps_trains_no_further_step(tmp_path):
    run_dir = train_in_process(tmp_path, max_steps=4, save_steps=4)
    ckpt = run_dir / CHECKPOINTS_DIR / "checkpoint-4"
    assert ckpt.is_dir()
    drop_end(run_dir)
    assert execute(run_dir, resume_from=str(ckpt)) == 0
    events = read_events(run_dir / EVENTS_FILE)
    resumed = events[[e["event"] for e in events].index("resume"):]
    assert not [e for e in resumed if e["event"] == "log"], "trained past max_steps"
    assert not (run_dir / CHECKPOINTS_DIR / "checkpoint-5").exists()
    assert resumed[-1]["event"] == "end" and resumed[-1]["status"] == "finished" and resumed[-1]["step"] == 4
    assert (run_dir / "final" / "model.safetensors").exists()


# --------------------------------------------------------------------------- 13

def _stranger(tmp_path: Path):
    """An unrelated process leading its own process group (as a reused pid would be)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def _run_dir_naming(tmp_path: Path, pid: int) -> Path:
    d = tmp_path / "20260101-000000-victim"
    d.mkdir()
    (d / "config.yaml").write_text("{}\n")
    (d / runs.PID_FILE).write_text(str(pid))
    (d / EVENTS_FILE).write_text(json.dumps({"event": "start", "time": 1.0, "step": 0}) + "\n")
    return d


def test_stop_kill_never_signals_a_process_it_cannot_prove_is_the_runs(tmp_path):
    stranger = _stranger(tmp_path)
    try:
        d = _run_dir_naming(tmp_path, stranger.pid)  # no run.lock, no record of the process
        assert not runs.is_alive(d)
        with pytest.raises(runs.RunsError):
            runs.stop(d, kill=True)
        assert stranger.poll() is None, "stop --kill killed an unrelated process"
        # A recorded identity that does not match (another command line) proves nothing either.
        (d / runs.PROCESS_FILE).write_text(json.dumps({"pid": stranger.pid, "start_ticks": 1, "cmdline": ["x"]}))
        with pytest.raises(runs.RunsError):
            runs.stop(d, kill=True)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_kill_signals_the_recorded_supervisor_without_its_lock(tmp_path):
    ours = _stranger(tmp_path)
    try:
        d = _run_dir_naming(tmp_path, ours.pid)
        runs._record_process(d, ours.pid)  # what spawn records for the supervisor it started
        assert runs.is_alive(d)
        info = runs.stop(d, kill=True)
        assert ours.wait(timeout=10) == -9
        assert info.status == "stopped" and info.reason == "killed"
    finally:
        if ours.poll() is None:
            ours.kill()
            ours.wait()


# --------------------------------------------------------------------------- 10

def test_a_writer_recreates_a_deleted_events_file_with_its_history(tmp_path):
    from sftwizard.core.events import EventWriter

    path = tmp_path / EVENTS_FILE
    writer = EventWriter(path)
    writer.emit("start", step=0)
    writer.emit("log", step=1, loss=2.0)
    path.unlink()
    writer.emit("end", step=2, status="finished")
    writer.close()
    events = read_events(path)
    assert [e["event"] for e in events] == ["start", "log", "warning", "end"]
    assert events[2]["code"] == "events_file_recreated" and events[2]["restored_events"] == 2
    assert "deleted" in events[2]["message"]


def test_deleting_events_jsonl_during_a_run_keeps_its_true_end(tmp_path):
    """A real detached run whose events.jsonl is deleted mid-way ends `finished`, not as a crash."""
    from tests.core.test_runs import first, wait_done, wait_for

    cfg = tiny_config(tmp_path / "runs", write_data(tmp_path / "data.jsonl", rows=24), max_steps=30, save_steps=100)
    launched = runs.launch(cfg)
    run_dir = launched.run_dir
    wait_for(lambda: first(run_dir, "log"), "the first log")
    (run_dir / EVENTS_FILE).unlink()
    info = wait_done(run_dir)
    launched.process.wait()
    assert info.status == "finished", info
    assert info.step == 30 and info.max_steps == 30
    kinds = [e["event"] for e in read_events(run_dir / EVENTS_FILE)]
    assert kinds[0] == "start" and kinds[-1] == "end" and "warning" in kinds


# --------------------------------------------------------------------------- 9

def test_a_corrupt_newest_checkpoint_is_passed_over_with_a_note(tmp_path, capsys):
    from sftwizard.core.checkpoints import checkpoint_problem
    from tests.core.test_runs import wait_done

    run_dir = train_in_process(tmp_path, max_steps=4, save_steps=2, save_total_limit=3)
    drop_end(run_dir)  # died after its last checkpoint: resumable
    newest = run_dir / CHECKPOINTS_DIR / "checkpoint-4"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn write
    assert "model.safetensors is truncated" in checkpoint_problem(newest)
    assert checkpoint_problem(run_dir / CHECKPOINTS_DIR / "checkpoint-2") is None

    launched = runs.resume(run_dir)
    assert launched.resume_from.name == "checkpoint-2"
    assert "checkpoint-4 is unreadable" in launched.notes[0] and "checkpoint-2" in launched.notes[0]
    info = wait_done(run_dir)
    launched.process.wait()
    assert info.status == "finished" and info.step == 4, info
    warning = next(e for e in read_events(run_dir / EVENTS_FILE) if e.get("code") == "checkpoint_unreadable")
    assert "truncated" in warning["message"]
    assert checkpoint_problem(newest) is None  # written again by the resumed run


def test_checkpoint_problems_name_the_broken_file(tmp_path):
    from sftwizard.core.checkpoints import checkpoint_problem

    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    assert "no trainer_state.json" in checkpoint_problem(ckpt)
    (ckpt / "trainer_state.json").write_text('{"global_step": 3}')
    assert "no weights file" in checkpoint_problem(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    assert "header length" in checkpoint_problem(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (ckpt / "optimizer.pt").write_bytes(b"not a zip")
    assert "optimizer.pt cannot be read" in checkpoint_problem(ckpt)
