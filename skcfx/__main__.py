"""``python -m skcfx``: the command line (see :mod:`skcfx.cli`)."""

import sys

from .cli import main

sys.exit(main())
