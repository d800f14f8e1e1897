"""The ingestion program (Codabench's prediction step) and its preflight.

`preflight.py` opens, plans and checks a submission before any model runs — every
command that needs a task's requests goes through it; `program.py` runs the three stages
(plan, evaluate, score) over a manifest's checkpoints and writes ingestion_results.json.
"""
