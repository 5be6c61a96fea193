"""``python -m sftwizard.cli ...``: the ``sft-wizard`` command."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
