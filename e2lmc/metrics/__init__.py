"""Trusted metrics: lm-eval's own metrics computed from the responses and plan.json alone.

Where a task names only lm-eval's metrics, aggregations and filters, this stage turns
each checkpoint's responses into the metric with lm-eval's own code, rebuilt from the
plan's recipes — the submission's code never sees a response (docs/security.md).
"""
