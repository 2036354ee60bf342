"""`python -m controller.cli`: the same command line as `modelctl` (the tests and the image use it)."""

import sys

from controller.cli import main

sys.exit(main())
