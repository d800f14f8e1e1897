"""The organizers' tools: the Codabench bundle, its phases and pages, the worker, placement, estimates.

`bundle.py` lays out and checks the bundle (`codabench.py`: Codabench's rules; `phases.py`,
`pages.py`); `placement.py` places a checkpoint series on the workers; `estimate.py` sizes
GPU time; `worker.py` and `container.py` run a submission as Codabench's compute worker does.
"""
