"""``python -m durabletask.cli``: the same as the ``durabletask`` console script."""

import sys

from durabletask.cli.main import main

sys.exit(main())
