"""`python -m frugal.serving.server ...` — the same as `frugal serve ...`."""

import sys

from frugal.serving.cli import main

sys.exit(main())
