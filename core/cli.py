"""The ``sft-wizard`` command line: a thin face over the core API.

Each command lives in a ``cli_*.py`` module exposing ``register(subparsers)``; the parser
built there sets ``func(args) -> int``. A user's mistake raises ``UserError`` (or one of the
core errors that carry a sentence): we print that one sentence to stderr and exit 2, never a
traceback. ``sft-wizard`` with no command (or with a preset path) opens the TUI.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable

EXIT_USER_ERROR = 2

# Modules that register commands, in help order.
COMMAND_MODULES = [
    "sftwizard.core.cli_run",
    "sftwizard.core.cli_runs",
    "sftwizard.core.cli_compare",
    "sftwizard.core.cli_data",
    "sftwizard.core.cli_hw",
    "sftwizard.core.cli_doctor",
    "sftwizard.core.cli_interop",
]


class UserError(Exception):
    """A mistake in the user's input: printed as one sentence, exit code 2."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every exception class whose message is meant for the user as is."""
    from sftwizard.core.config import ConfigError

    types: list[type[BaseException]] = [UserError, ConfigError]
    for mod, name in (
        ("sftwizard.core.models", "ModelError"),
        ("sftwizard.core.data", "DataError"),
        ("sftwizard.core.templates", "TemplateError"),
        ("sftwizard.core.runner", "RunnerError"),
        ("sftwizard.core.runs", "RunsError"),
    ):
        try:
            types.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON (schema in the README)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft-wizard",
        description="From a bare GPU box to a running TRL SFTTrainer job. With no command, opens the wizard.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return "sft-wizard " + version("sft-wizard")
    except Exception:  # not installed (running from a checkout)
        return "sft-wizard (dev)"


def _open_tui(preset: str | None) -> int:
    # The TUI is looked up by name so that core never imports it at module level.
    app_module = importlib.import_module("sftwizard.tui.app")
    return int(app_module.run_app(preset) or 0)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return int(func(args) or 0)
    except user_error_types() as exc:
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


if __name__ == "__main__":  # pragma: no cover
    # Run through the imported module so exception classes are the ones other modules raise.
    from sftwizard.core.cli import main as _main

    sys.exit(_main())
