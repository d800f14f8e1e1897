"""e2lmc: the E2LM competition bundle (ingestion, scoring, checkpoints, Codabench packaging)."""

__version__ = "0.1.0"
