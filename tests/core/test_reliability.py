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
