"""``python -m skmat ...``: the ``skmat`` command (:mod:`skmat.cli`) without the console script."""

import sys

from skmat.cli import main

sys.exit(main())
