"""The `e2lmc` command: argument parsing only, one file per audience (`main.py` assembles them).

Handlers parse options and call the stage packages. `e2lmc.cli:main` is the entry point
of the console script and of the programs' shims (`ingestion_program/ingest.py`,
`scoring_program/score.py`); `python -m e2lmc.cli` runs it too.
"""

from .main import main

__all__ = ["main"]
