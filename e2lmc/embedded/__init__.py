"""The embedded checkpoint set: small Llama models trained on this machine on a synthetic world.

`world.py` generates the text and the sample tasks, `zoo.py` trains the models and writes
the set, `sets.py` says where sets live and builds one on first use. docs/zoo.md has the design.
"""
