"""``python -m eebench``: the same command as ``eebench``."""

import sys

from eebench.cli import main

sys.exit(main())
