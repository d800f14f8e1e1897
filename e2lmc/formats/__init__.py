"""The base every stage reads: the files passed between stages and the rules they carry.

Each module is one format — a small versioned dataclass with one reader and one writer
(`files.py`) — or the vocabulary the formats share (`requests.py`, `rules.py`). Nothing
here imports a stage (tests/test_architecture.py). docs/formats.md documents every file.
"""
