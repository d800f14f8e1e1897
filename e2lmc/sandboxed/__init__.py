"""Everything that runs or reads a submission's code: the trust boundary, both of its sides.

Inside a sandboxed child, after it has confined itself (`confine.py`): `child.py`,
`tasks.py`, `guards.py`, `samples.py`, and `submission.py` to read the task files. In the
trusted parent: `sandbox.py` and `isolation.py` start and bound those children,
`submission.py` opens the submission (static, bounded parsing), `confine.py` lends its
`Confinement`.
Nothing here imports the engine or the scores (tests/test_architecture.py).
"""
