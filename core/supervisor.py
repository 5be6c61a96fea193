"""The supervisor: the first process of a detached run, in the run's own session.

It starts the training process (``python -m sftwizard.core.runner``), both holding the run's
``run.lock`` (the fd is inherited), turns ``kill PID`` into a graceful stop, and when the
training process dies without writing ``end`` (a signal, the OOM killer, a native crash) it
writes the ``error`` and ``end`` events itself, with the signal or exit code. It imports neither
torch nor transformers: it costs a few MiB.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

from .diagnosis import describe_exit
from .diskspace import release_reserve
from .events import EventTail, read_events
from .oom_adapt import ADAPT_EXIT
from .run_model import Kind, Reason, Status, segments
from .rundir import LOG_FILE, RunDir
from .runs import info_of, state_of, with_writer


def training_command(run_dir: Path, resume_from: str | None = None) -> list[str]:
    """The command of the training process the supervisor starts: ``python -m
    sftwizard.core.runner RUN_DIR``, under ``accelerate launch`` when the config asks for more
    than one process or machine (issue 7; see core/distributed.py, no torch import)."""
    from .distributed import training_command as command

    return command(run_dir, resume_from)


def training_env(run_dir: Path) -> dict[str, str]:
    """The training process's environment: a single-process run on a multi-GPU box sees one GPU."""
    from .config import load_preset
    from .distributed import Machine, pinned_device
    from .distributed import training_env as env_for

    cfg = load_preset(RunDir(run_dir).config)
    machine = Machine.detect()
    env = env_for(cfg, machine)
    if pinned_device(cfg, machine) is not None:
        print(f"sft-wizard: one training process: pinned to GPU {env['CUDA_VISIBLE_DEVICES']} "
              "(CUDA_VISIBLE_DEVICES); set distributed.num_processes to use more", file=sys.stderr, flush=True)
    return env


def supervise(run_dir: Path, resume_from: str | None, lock_fd: int | None) -> int:
    """Run the training process; if it dies without an ``end`` event, record how it died."""
    rd = RunDir(run_dir)
    events_path = rd.events
    offset, inode = _size_and_inode(events_path)

    def forward(signum, frame):  # `kill PID` on the supervisor = graceful stop
        rd.request_stop()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    attempts = 0
    try:
        while True:
            child = subprocess.Popen(training_command(run_dir, resume_from), stdin=subprocess.DEVNULL,
                                     cwd=str(run_dir), env=training_env(run_dir),
                                     pass_fds=(lock_fd,) if lock_fd is not None else ())
            returncode = child.wait()
            new = _new_events(events_path, offset, inode)
            if any(ev.get("event") == Kind.END for ev in new):
                return returncode
            oom = next((ev for ev in reversed(new) if ev.get("event") == Kind.ERROR and ev.get("adapting")), None)
            if returncode != ADAPT_EXIT or oom is None:
                return _record_exit(run_dir, returncode)
            if rd.stop_requested():  # asked to stop meanwhile: no new attempt
                rd.clear_stop()
                with_writer(run_dir, lambda w: w.emit(Kind.END, step=oom.get("step"), status=Status.FAILED,
                                                      reason=Reason.OOM,
                                                      message=oom.get("message"), adaptations=attempts))
                return 1
            attempts += 1
            adapted = adapt_after_oom(run_dir, attempts, oom)
            if adapted is None:
                return 1
            resume_from = adapted
            offset, inode = _size_and_inode(events_path)
    finally:
        release_reserve(run_dir)  # the training process's room for the last events (core/diskspace.py)


def _new_events(events_path: Path, offset: int, inode: int | None) -> list[dict]:
    """The events the last training process wrote."""
    size, now_inode = _size_and_inode(events_path)
    if now_inode == inode and size >= offset:
        return EventTail(events_path, offset=offset).poll()
    # deleted and re-created meanwhile (see EventWriter): this process's events are its last segment
    parts = segments(read_events(events_path))
    return parts[-1] if parts else []


def _record_exit(run_dir: Path, returncode: int) -> int:
    """The training process died without an ``end``: record how."""
    info = info_of(run_dir, state_of(run_dir), alive=False)
    reason, phrase, hint = describe_exit(returncode)
    where = f" at step {info.step}" if info.step is not None else " before training began"
    message = f"{phrase}{where}{hint}; details in {LOG_FILE}"
    print(f"sft-wizard: {message}", file=sys.stderr, flush=True)
    with_writer(run_dir, lambda w: (
        w.emit(Kind.ERROR, step=info.step, reason=reason, message=message, returncode=returncode),
        w.emit(Kind.END, step=info.step, status=Status.FAILED, reason=reason, message=message, returncode=returncode),
    ))
    return returncode if returncode > 0 else 1


def _size_and_inode(path: Path) -> tuple[int, int | None]:
    try:
        st = path.stat()
    except OSError:
        return 0, None
    return st.st_size, st.st_ino


def adapt_after_oom(run_dir: Path, attempt: int, oom: dict) -> str | None:
    """``run.on_oom: adapt``: the next fix written into config.yaml and an ``adapt`` event; returns
    the checkpoint to resume from ("" for step 0), or None after writing the failing ``end``."""
    from .config import load_preset, save_preset
    from .oom_adapt import MAX_ATTEMPTS, give_up_message, next_fix
    from .runs import discard_checkpoints_after, resume_point

    cfg = load_preset(RunDir(run_dir).config)
    fix = next_fix(cfg) if attempt <= MAX_ATTEMPTS else None
    if fix is None:
        message = give_up_message(cfg, attempt - 1, oom.get("message"))
        print(f"sft-wizard: {message}", file=sys.stderr, flush=True)
        with_writer(run_dir, lambda w: w.emit(Kind.END, step=oom.get("step"), status=Status.FAILED,
                                              reason=Reason.OOM, message=message, adaptations=attempt - 1))
        return None
    save_preset(fix.apply(cfg), RunDir(run_dir).config)
    checkpoint, _ = resume_point(run_dir, read_events(RunDir(run_dir).events))
    step = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0
    discard_checkpoints_after(run_dir, step)  # half-written by the process that died
    where = f"from {checkpoint.name}" if checkpoint is not None else "from step 0 (no checkpoint yet)"
    with_writer(run_dir, lambda w: w.emit(
        Kind.ADAPT, step=oom.get("step"), attempt=attempt, max_attempts=MAX_ATTEMPTS, old=fix.old, new=fix.new,
        reason=f"out of memory after step {oom.get('step')}: {fix.reason}; training again {where}",
        resume_from=str(checkpoint) if checkpoint is not None else None))
    return str(checkpoint) if checkpoint is not None else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sftwizard.core.supervisor")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--lock-fd", type=int, default=None, help="an open fd holding the run's flock")
    args = parser.parse_args(argv)
    return supervise(Path(args.run_dir), args.resume, args.lock_fd)


if __name__ == "__main__":
    sys.exit(main())
