"""`python -m frugal.serving.server ...` — the same as `frugal serve ...`."""

import sys

from frugal.serving.serve_command import main

sys.exit(main())
