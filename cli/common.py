"""What every command module shares: the ``--json`` flag and its printer, and the user-error
type (core's, re-exported so a command raises the one class the entry point catches)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sftwizard.core.errors import EXIT_USER_ERROR, UserError

__all__ = ["EXIT_USER_ERROR", "UserError", "add_json_flag", "print_json"]


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON (schema in the README)")
