"""``python -m sftwizard.tui [PRESET]``: the wizard, as ``sft-wizard`` with no command opens it."""

import sys

from sftwizard.core.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:2]))
