"""Codabench prediction step: `e2lmc ingest` with Codabench's paths.

The bundle builder copies the `e2lmc` package next to this file, so the program runs
in the worker image with nothing but its own folder.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2lmc.cli import main  # noqa: E402

sys.exit(main(["ingest", *sys.argv[1:]]))
