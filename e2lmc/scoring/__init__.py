"""Trusted scoring: ingestion results + a phase's reference data -> the leaderboard and the report.

`formulas.py` (SQ, RC, CS, the rules' verdict), `evaluation.py` (curves, selections,
every score), `program.py` (Codabench's scoring step), `report.py` and `html.py` (the
detailed results page), `advice.py` (what to improve), `judge.py` (the alignment judge),
`curves.py` (SQ of curves a participant measured). docs/scoring.md has the formulas.
"""
