"""``python -m tlcore``: the command line (see `tlcore.cli`)."""

import sys

from tlcore.cli import main

sys.exit(main())
