"""Everything that runs or reads a submission's code: the trust boundary, both of its sides.

Inside a sandboxed child, after it has confined itself (`confine.py`): `child.py`,
`tasks.py`, `guards.py`, `samples.py`. In the trusted parent: `sandbox.py` and
`isolation.py` start and bound those children, `submission.py` opens the submission
statically (the child reads task files with it too), `confine.py` lends its `Confinement`.
Nothing here imports the engine or the scores (tests/test_architecture.py).
"""
