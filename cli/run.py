"""`sft-wizard run`, `validate` and `presets`."""

from __future__ import annotations

import argparse
import sys
import time

from sftwizard.core import presets
from sftwizard.core.config import ConfigError
from sftwizard.core.presets import list_presets
from sftwizard.core.run_model import USER_REASONS, Kind, Status

from .common import EXIT_USER_ERROR, add_json_flag, add_set_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="fine-tune from a preset (headless; follows the run unless --detach)")
    p.add_argument("preset", help="a preset YAML file, or the name of a shipped/user preset")
    add_set_flag(p)
    p.add_argument("--detach", action="store_true", help="print the run id and return; the run goes on")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a preset: schema, ranges, and what this machine can run")
    p.add_argument("preset")
    add_set_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("presets", help="list shipped and user presets")
    add_json_flag(p)
    p.set_defaults(func=cmd_presets)


def cmd_run(args: argparse.Namespace) -> int:
    from sftwizard.core import runs
    from sftwizard.core.follower import RunFollower
    from sftwizard.core.preflight import preflight

    from .progress import EventPrinter

    path, cfg = presets.load(args.preset, args.overrides)
    preflight(cfg)
    launched = runs.launch(cfg, str(path))
    run_dir = launched.run_dir
    if args.detach:
        print(run_dir.name)
        print(f"  directory: {run_dir}", file=sys.stderr)
        print(f"  follow it: sft-wizard attach {run_dir.name}    stop it: sft-wizard stop {run_dir.name}",
              file=sys.stderr)
        return 0
    print(f"run {run_dir.name}  ({run_dir})", file=sys.stderr)
    follower = RunFollower(run_dir, launched.process)
    printer = EventPrinter(format_event)  # one updating line per phase on a terminal
    interrupted = 0
    try:
        while not follower.done:
            try:
                for ev in follower.poll():
                    printer(ev)
                if not follower.done:
                    time.sleep(0.25)
            except KeyboardInterrupt:
                interrupted += 1
                if interrupted == 1:
                    follower.run.request_stop()
                    print("stopping after this step (saving a checkpoint); Ctrl-C again to kill", file=sys.stderr)
                else:
                    runs.stop(run_dir, kill=True)  # the whole process group, not just the supervisor
    finally:
        printer.close()
    return run_outcome(follower)


def run_outcome(follower) -> int:
    """`run`'s last line, from the run's state: how it ended; the exit code for it."""
    status, end = follower.status, follower.end or {}
    if status == Status.FINISHED:
        from sftwizard.core.event_lines import best_checkpoint_text

        print(f"finished in {end.get('duration_s', 0):.1f} s — model: {end.get('final_dir')}{best_checkpoint_text(end)}",
              file=sys.stderr)
        return 0
    if status == Status.STOPPED:
        print(f"stopped at step {end.get('step')} — resume with: sft-wizard resume {follower.run.id}", file=sys.stderr)
        return 0
    message = follower.message or "training failed"
    print(f"sft-wizard: error: {message} (details: {follower.run.log})", file=sys.stderr)
    return EXIT_USER_ERROR if follower.reason in USER_REASONS else 1


def format_event(ev: dict) -> str | None:
    """`run`'s live line for an event; the start and end are told by `run` itself."""
    from sftwizard.core.event_lines import event_line

    if ev.get("event") in (Kind.START, Kind.RESUME, Kind.END, Kind.ERROR):
        return None
    return event_line(ev)


def print_event(ev: dict) -> None:
    line = format_event(ev)
    if line:
        print(line, flush=True)


def cmd_validate(args: argparse.Namespace) -> int:
    from sftwizard.core.config import output_root_problem

    try:
        path, cfg = presets.load(args.preset, args.overrides)
        if problem := output_root_problem(cfg):
            raise ConfigError([problem], str(path))
    except ConfigError as exc:
        if args.json:
            print_json({"valid": False, "preset": exc.source, "problems": exc.problems, "warnings": []})
            return EXIT_USER_ERROR
        raise
    # --- doctor (issue 9): pre-launch warnings; they inform, never block -------------------
    from sftwizard.core.doctor_inputs import doctor_warnings
    from sftwizard.core.runnable import runnable_warnings

    from .doctor import format_warning

    warnings: list[dict] = doctor_warnings(cfg) + runnable_warnings(cfg)
    # ----------------------------------------------------------------------------------------
    if args.json:
        print_json({"valid": True, "preset": str(path), "problems": [], "warnings": warnings})
    else:
        print(f"{path}: valid")
        for w in warnings:
            print(format_warning(w))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    presets = list_presets()
    if args.json:
        print_json({"presets": [p.to_dict() for p in presets]})
        return 0
    if not presets:
        print("no presets")
        return 0
    width = max(len(p.name) for p in presets)
    for p in presets:
        print(f"{p.name:<{width}}  {p.origin:<7}  {p.method:<5}  {p.model}  — {p.description or ''}")
    return 0
