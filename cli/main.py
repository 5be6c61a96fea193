"""The ``sft-wizard`` command line: a thin face over the core API.

Each command lives in a module of this package exposing ``register(subparsers)``; the parser
built there sets ``func(args) -> int``. A user's mistake raises a ``UserError`` (every core error
meant for the user derives from it, core/errors.py): we print that one sentence to stderr and
exit 2, never a traceback. ``sft-wizard`` with no command (or with a preset path) opens the TUI:
this package is the one place that does.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from sftwizard.core.errors import EXIT_USER_ERROR, UserError

from .common import json_stdout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft-wizard",
        description="From a bare GPU box to a running TRL SFTTrainer job. With no command, opens the wizard.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import compare, data, doctor, hw, interop, run, runs

    for module in (run, runs, compare, data, hw, doctor, interop):  # help order
        module.register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return "sft-wizard " + version("sft-wizard")
    except Exception:  # not installed (running from a checkout)
        return "sft-wizard (dev)"


def _open_tui(preset: str | None) -> int:
    from sftwizard.tui.app import run_app  # textual is imported only when the wizard opens

    return int(run_app(preset) or 0)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        if getattr(args, "json", False):
            with json_stdout():
                return int(func(args) or 0)
        return int(func(args) or 0)
    except UserError as exc:
        msg = str(exc)
        print(f"sft-wizard: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("sft-wizard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sft-wizard attach X | head`: the reader left, nothing to report
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices) if parser._subparsers else set()  # type: ignore[union-attr]
    if not argv or (argv[0] not in known and not argv[0].startswith("-")):
        # `sft-wizard` or `sft-wizard PRESET.yaml`: the wizard.
        if len(argv) > 1:
            parser.error(f"unknown command {argv[0]!r}")
        return run_command(lambda a: _open_tui(argv[0] if argv else None), argparse.Namespace())
    args = parser.parse_args(argv)
    return run_command(args.func, args)
