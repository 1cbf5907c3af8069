"""``python -m weakseg`` runs the command line."""

import sys

from weakseg.cli import main

sys.exit(main())
