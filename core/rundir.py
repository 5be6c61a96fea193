"""A run directory: the one place that knows the names of its files, and the stop request.

Every module that reads or writes a run's files goes through :class:`RunDir` (or, for a name
alone, the constants below): the runner, the supervisor, ``runs``, ``report``, ``compare``,
``merge``, ``chat``, the CLI and the TUI. It imports nothing but ``pathlib``, so any module may
use it without pulling in the engine.

A run asks to stop by the presence of ``STOP`` (written by ``stop``, Ctrl-C in ``run``, the Run
screen's ``s`` key, or the supervisor on SIGTERM); the runner honours it after its current step,
saves a checkpoint, writes ``end`` (``stopped``) and removes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"  # the resolved RunConfig (a preset one can re-run)
META_FILE = "meta.json"  # id, name, preset, created
EVENTS_FILE = "events.jsonl"  # the contract between the run and every viewer (core/events.py)
LOG_FILE = "train.log"  # the full stdout/stderr of the run's processes
PID_FILE = "pid"  # the supervisor's pid
PROCESS_FILE = "process.json"  # the supervisor's pid, start time and command line, to prove it is ours
LOCK_FILE = "run.lock"  # held (flock) by the supervisor and the training process while the run lives
STOP_FILE = "STOP"  # the stop request
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"  # the final model, or the LoRA adapter, with its tokenizer


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory, and its stop request."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def meta(self) -> Path:
        return self.path / META_FILE

    @property
    def events(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def pid_file(self) -> Path:
        return self.path / PID_FILE

    @property
    def process_file(self) -> Path:
        return self.path / PROCESS_FILE

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint(self, step: int) -> Path:
        """Where the trainer saves the checkpoint of ``step``."""
        return self.checkpoints / f"checkpoint-{step}"

    @property
    def final(self) -> Path:
        return self.path / FINAL_DIR

    def looks_like_run(self) -> bool:
        """True when the directory holds a run's config, meta or events."""
        return any(p.exists() for p in (self.config, self.meta, self.events))

    # ------------------------------------------------------------------ the stop request

    def request_stop(self) -> None:
        """Ask the run to stop after its current step (it saves a checkpoint first)."""
        self.stop_file.touch()

    def stop_requested(self) -> bool:
        return self.stop_file.exists()

    def clear_stop(self) -> None:
        """Forget a stop request (the runner once it honoured it; resume before starting again)."""
        self.stop_file.unlink(missing_ok=True)
