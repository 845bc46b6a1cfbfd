"""``python -m sa1b_pack``: the ``sa1b-pack`` command."""

import sys

from .cli import main

sys.exit(main())
