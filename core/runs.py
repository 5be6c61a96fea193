"""Run directories, the run registry, and starting the training process.

A run directory holds ``config.yaml`` (the resolved config), ``events.jsonl``, ``train.log``
(the full stdout/stderr of the training process), ``checkpoints/`` and ``final/``. The registry
(``registry.jsonl`` in the data dir) lists every run's id and directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sftwizard.core.config import RunConfig, save_preset
from sftwizard.core.paths import data_dir, default_runs_root
from sftwizard.core.runner import CONFIG_FILE

LOG_FILE = "train.log"
META_FILE = "meta.json"


class RunsError(Exception):
    """A run cannot be found or acted on. One sentence."""


def registry_path() -> Path:
    return data_dir() / "registry.jsonl"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "run"


def new_run_id(name: str | None) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + _slug(name or "run")


def create_run(cfg: RunConfig, preset_path: str | None = None) -> Path:
    """Make a fresh run directory holding the resolved config, and register it."""
    root = Path(cfg.run.output_root).expanduser() if cfg.run.output_root else default_runs_root()
    name = cfg.run.name or (Path(preset_path).stem if preset_path else "run")
    run_id = new_run_id(name)
    run_dir = root / run_id
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = root / f"{run_id}-{n}"
    run_dir.mkdir(parents=True)
    save_preset(cfg, run_dir / CONFIG_FILE)
    meta = {"id": run_dir.name, "name": name, "preset": str(preset_path) if preset_path else None,
            "created": time.time()}
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    register(run_dir)
    return run_dir


def register(run_dir: Path) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": run_dir.name, "dir": str(run_dir.resolve())}) + "\n")


def spawn(run_dir: Path, resume_from: str | None = None) -> subprocess.Popen:
    """Start the training process detached from this terminal: its own session, no stdin,
    output appended to the run's log. It outlives the caller, the TUI and the SSH session."""
    cmd = _training_command(run_dir, resume_from)
    log = open(run_dir / LOG_FILE, "ab")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(run_dir), env=env, close_fds=True,
        )
    finally:
        log.close()
    (run_dir / "pid").write_text(str(proc.pid), encoding="utf-8")
    return proc


def _training_command(run_dir: Path, resume_from: str | None) -> list[str]:
    # issue 7: more than one process (or machine) trains under `accelerate launch` with a generated
    # config saved in the run dir; one process stays `python -m sftwizard.core.runner RUN_DIR`.
    from sftwizard.core.distributed import training_command

    return training_command(run_dir, resume_from)


@dataclass
class Launched:
    run_dir: Path
    process: subprocess.Popen


def launch(cfg: RunConfig, preset_path: str | None = None) -> Launched:
    run_dir = create_run(cfg, preset_path)
    return Launched(run_dir, spawn(run_dir))
