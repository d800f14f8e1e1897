"""Everything that runs or reads a submission's code — the untrusted side of the trust boundary.

`submission.py` opens a submission statically in the trusted process; `sandbox.py` and
`isolation.py` start and bound the child processes (the parent's side); `confine.py`,
`child.py`, `tasks.py`, `guards.py` and `samples.py` run inside such a child, after it has
confined itself. Nothing here imports the engine or the scores (tests/test_architecture.py).
"""
