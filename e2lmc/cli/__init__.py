"""The `e2lmc` command: argument parsing only, one file per audience (`main.py` assembles them).

Handlers parse options and call the stage packages; `python -m e2lmc.cli` runs it too.
"""
