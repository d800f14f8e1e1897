"""Trusted evaluation: a task's recorded requests computed on model checkpoints.

It sees request texts and weights, never submission code: `checkpoints.py` finds each
checkpoint's folder, `packing.py` turns the requests into token work once per tokenizer,
`runner.py` computes it on one device, `engine.py` shares checkpoints among devices.
docs/engine.md has the design and its measurements.
"""
