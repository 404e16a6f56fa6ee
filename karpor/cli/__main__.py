"""``python -m karpor.cli``: the ``karpor`` command without its console script."""

import sys

from karpor.cli import main

sys.exit(main())
