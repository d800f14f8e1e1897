"""The embedded checkpoint set: small Llama models trained on this machine on a synthetic world.

`world.py` generates the text and the sample tasks, `zoo.py` trains the models and writes
the set, `kernels.py` pins the kernels it trains on (the same weights whatever the
environment says, and on the processors measured: docs/zoo.md says which), `sets.py` says
where sets live, builds one on first use and tells the organizers' set from another.
docs/zoo.md has the design.
"""
