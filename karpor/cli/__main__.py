"""``python -m karpor.cli``: the ``karpor`` command (as the console script)."""

import sys

from karpor.cli import main

sys.exit(main())
