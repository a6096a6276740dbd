"""``python -m ferrovia cert``: see :mod:`ferrovia._cli`."""

import sys

from ._cli import main

sys.exit(main(sys.argv[1:]))
