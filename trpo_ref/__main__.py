"""``python -m trpo_ref`` is the ``trpo-ref`` command."""

import sys

from .cli import main

sys.exit(main())
