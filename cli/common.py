"""What every command module shares: the ``--json`` and ``--set`` flags, the JSON printer, and the user-error
type (core's, re-exported so a command raises the one class the entry point catches)."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager, redirect_stdout
from typing import Any, Iterator

from sftwizard.core.errors import EXIT_USER_ERROR, UserError

__all__ = ["EXIT_USER_ERROR", "UserError", "add_json_flag", "add_set_flag", "json_stdout", "print_json"]

# Where print_json writes while json_stdout() holds stdout for the JSON alone.
_json_streams: list = []


def print_json(obj: Any) -> None:
    out = _json_streams[-1] if _json_streams else sys.stdout
    json.dump(obj, out, indent=2, default=str, ensure_ascii=False)
    out.write("\n")


@contextmanager
def json_stdout() -> Iterator[None]:
    """While a ``--json`` command runs, stdout carries the JSON document and nothing else: any other
    print to stdout (a library's log line, e.g. deepspeed's "Setting accelerator to CPU" when
    transformers imports it) goes to stderr, so ``sft-wizard X --json | jq`` always parses."""
    _json_streams.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _json_streams.pop()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON (schema in the README)")


def add_set_flag(parser: argparse.ArgumentParser,
                 help: str = "override one setting (repeatable), e.g. --set training.max_steps=50") -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable), gathered in ``args.overrides`` for ``apply_overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=help)
