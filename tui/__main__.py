"""``python -m sftwizard.tui [PRESET]``: the wizard, as ``sft-wizard`` with no command opens it."""

import sys

from .app import run_app

if __name__ == "__main__":
    sys.exit(int(run_app(sys.argv[1] if len(sys.argv) > 1 else None) or 0))
