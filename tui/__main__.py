"""``python -m sftwizard.tui [PRESET]``: the wizard, as ``sft-wizard`` with no command opens it.

A preset that cannot be opened is the user's mistake: one sentence on stderr and exit 2, as the
CLI does (the TUI does not import the CLI, so it says it here).
"""

import sys

from sftwizard.core.errors import EXIT_USER_ERROR, UserError

from .app import run_app


def main(argv: list[str]) -> int:
    try:
        return int(run_app(argv[0] if argv else None) or 0)
    except UserError as exc:
        print(f"sft-wizard: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:2]))
