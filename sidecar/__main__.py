"""``python -m sidecar``: run the standalone sidecar."""

import sys

from sidecar.cli import main

sys.exit(main())
