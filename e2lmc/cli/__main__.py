"""`python -m e2lmc.cli …`: the `e2lmc` command."""

import sys

from .main import main

sys.exit(main())
