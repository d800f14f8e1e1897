"""The participant's loop on one machine: run, demo, validate, diagnose, align.

Each module is one command's work, built from the stages: the preflight, the engine, the
scoring program, the embedded set (and, for the real released checkpoints, placement).
"""
