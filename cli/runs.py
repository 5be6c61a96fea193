"""`sft-wizard runs`, `attach`, `stop` and `resume`: managing detached runs."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from sftwizard.core.metrics import format_duration
from sftwizard.core.run_model import USER_REASONS, Kind, Reason, Status

from .common import EXIT_USER_ERROR, add_json_flag, add_set_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs: status, step, loss, duration, pid, directory")
    add_json_flag(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("attach", help="show a run's history, then follow it live (Ctrl-C detaches)")
    p.add_argument("run", help="run id, unique id prefix, directory, or 'last'")
    p.add_argument("--no-follow", action="store_true", help="print the history and return")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("stop", help="stop a run after its current step, saving a checkpoint")
    p.add_argument("run")
    p.add_argument("--kill", action="store_true", help="SIGKILL it now (keeps the checkpoints already saved)")
    p.add_argument("--no-wait", action="store_true", help="ask it to stop and return at once")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for a graceful stop (default 600)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("resume", help="continue a stopped, failed or lost run from its last checkpoint")
    p.add_argument("run")
    add_set_flag(p, "change a setting that keeps the checkpoint valid, e.g. --set training.max_steps=500")
    p.add_argument("--detach", action="store_true", help="print the run id and return; the run goes on")
    p.set_defaults(func=cmd_resume)


# --------------------------------------------------------------------------- runs

def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _step(info) -> str:
    if info.step is None:
        return "-"
    return f"{info.step}/{info.max_steps}" if info.max_steps else str(info.step)


def cmd_runs(args: argparse.Namespace) -> int:
    from sftwizard.core.event_lines import run_status_text
    from sftwizard.core.runs import list_runs

    infos = list_runs()
    if args.json:
        print_json({"runs": [info.to_dict() for info in infos]})
        return 0
    if not infos:
        print("no runs yet — start one with: sft-wizard run presets/demo.yaml")
        return 0
    rows = [("ID", "STATUS", "STEP", "LOSS", "STARTED", "DURATION", "PID", "DIRECTORY")]
    for info in infos:
        rows.append((info.id, run_status_text(info.status, info.phase), _step(info),
                     f"{info.last_loss:.4f}" if info.last_loss is not None else "-",
                     _when(info.started), format_duration(info.duration_s),
                     str(info.pid) if info.pid and info.status == "running" else "-", info.dir))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        info = infos[n - 1] if n else None
        if info is not None and (info.status in (Status.FAILED, Status.LOST) or info.reason == Reason.KILLED):
            print(f"    └ {info.reason}: {info.message}")
    return 0


# --------------------------------------------------------------------------- following

def format_history_event(ev: dict) -> str | None:
    """`run`'s live lines, plus the turns of a run's life (ends, resumes) for a full history."""
    from .run import format_event

    kind = ev.get("event")
    if kind == Kind.RESUME:
        return f"— resumed from {Path(ev.get('resume_from') or '?').name}"
    if kind == Kind.END and ev.get("status") != Status.FINISHED:
        return f"— {ev.get('status')} at step {ev.get('step')}: {ev.get('message')}"
    return format_event(ev)


def _follow(run_dir: Path, from_start: bool, on_interrupt, process=None, resumed: bool = False) -> None:
    """Print events as they are written until the run ends or its processes are gone (``process``
    and ``resumed``: see ``RunFollower``)."""
    from sftwizard.core.follower import RunFollower

    from .progress import EventPrinter

    follower = RunFollower(run_dir, process, from_start=from_start, resumed=resumed)
    printer = EventPrinter(format_history_event)  # one updating line per phase on a terminal
    try:
        while True:
            try:
                for ev in follower.poll():
                    printer(ev)
                if follower.done:
                    _note_skipped(run_dir, follower.tail.skipped)
                    return
                time.sleep(0.3)
            except KeyboardInterrupt:
                if not on_interrupt():
                    return
    finally:
        printer.close()


def _note_skipped(run_dir: Path, skipped: int) -> None:
    from sftwizard.core.rundir import RunDir

    if skipped:
        print(f"note: {skipped} line{'s' if skipped != 1 else ''} of {RunDir(run_dir).events} skipped "
              "(torn, or not events of the expected shape)", file=sys.stderr)


def _outcome(info) -> int:
    """Print how the run ended (or that it goes on), from its state (``RunInfo``); the exit code."""
    from sftwizard.core.rundir import RunDir

    if info.status == Status.RUNNING:
        print(f"run {info.id} goes on (step {_step(info)}); follow it: sft-wizard attach {info.id}", file=sys.stderr)
        return 0
    if info.status == Status.FINISHED:
        best = f" — the best checkpoint: {Path(info.best_checkpoint).name}" if info.best_checkpoint else ""
        print(f"finished at step {info.step} in {format_duration(info.duration_s)} — model: {RunDir(info.dir).final}"
              f"{best}", file=sys.stderr)
        return 0
    if info.status == Status.STOPPED:
        print(f"stopped at step {info.step} ({info.message}) — resume with: sft-wizard resume {info.id}",
              file=sys.stderr)
        return 0
    print(f"sft-wizard: {info.status}: {info.message} (details: {RunDir(info.dir).log})", file=sys.stderr)
    if info.last_checkpoint:
        print(f"  resume from {Path(info.last_checkpoint).name} with: sft-wizard resume {info.id}", file=sys.stderr)
    return EXIT_USER_ERROR if info.reason in USER_REASONS else 1


def cmd_attach(args: argparse.Namespace) -> int:
    from sftwizard.core import runs

    run_dir = runs.find_run(args.run)
    info = runs.run_info(run_dir)
    print(f"run {info.id}  {info.status}  ({info.dir})", file=sys.stderr)
    if args.no_follow or info.status != Status.RUNNING:
        from .progress import EventPrinter

        printer = EventPrinter(format_history_event, live=False)  # a history: phases as plain lines
        events = runs.history(run_dir)
        for ev in events:
            printer(ev)
        _note_skipped(run_dir, events.skipped)
        return _outcome(info)

    def detach() -> bool:
        print(f"\ndetached; run {info.id} goes on (sft-wizard stop {info.id} stops it)", file=sys.stderr)
        return False

    _follow(run_dir, from_start=True, on_interrupt=detach)
    return _outcome(runs.run_info(run_dir))


def cmd_stop(args: argparse.Namespace) -> int:
    from sftwizard.core import runs

    run_dir = runs.find_run(args.run)
    if args.kill:
        return _outcome(runs.stop(run_dir, kill=True))
    runs.stop(run_dir)
    if args.no_wait:
        print(f"run {run_dir.name} will stop after its current step and a checkpoint", file=sys.stderr)
        return 0
    print(f"stopping run {run_dir.name} after its current step (saving a checkpoint)…", file=sys.stderr)
    deadline = time.time() + args.timeout
    try:
        while runs.is_alive(run_dir) and time.time() < deadline:
            time.sleep(0.3)
    except KeyboardInterrupt:
        print(f"\nnot waiting any more; run {run_dir.name} still stops by itself", file=sys.stderr)
        return 0
    return _outcome(runs.run_info(run_dir))


def cmd_resume(args: argparse.Namespace) -> int:
    from sftwizard.core import runs

    before = runs.run_info(args.run)
    launched = runs.resume(before.dir, overrides=args.overrides)
    for note in launched.notes:
        print(f"sft-wizard: {note}", file=sys.stderr)
    print(f"run {launched.id} resumes from {launched.resume_from.name} ({launched.run_dir})", file=sys.stderr)
    if args.detach:
        print(launched.id)
        return 0
    interrupts = {"n": 0}

    def stop_run() -> bool:
        interrupts["n"] += 1
        try:
            if interrupts["n"] == 1:
                runs.stop(launched.run_dir)
                print("\nstopping after this step (saving a checkpoint); Ctrl-C again to kill", file=sys.stderr)
            else:
                runs.stop(launched.run_dir, kill=True)
        except runs.RunsError:
            pass  # it ended meanwhile
        return True

    _follow(launched.run_dir, from_start=False, on_interrupt=stop_run, process=launched.process, resumed=True)
    return _outcome(runs.run_info(launched.run_dir))
