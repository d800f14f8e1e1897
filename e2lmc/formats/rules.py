"""The competition's submission rules: sample count, prompt length, leakage.

Applied where a submission is judged, with the same defaults everywhere: before any model
runs, the plan child refuses a sample count out of range (and `sandboxed/guards.py` stops
reading a data file with more rows), the preflight a prompt that is too long,
`e2lmc validate` reports leakage; after evaluation, the scoring program's verdict
(`scoring.formulas.check_rules`) applies the phase's own rules, the reference data's
`validation` block, to all of them (and to alignment, where a judge was asked). The
prediction step never sees the reference data, so the rules before any model are the
defaults below, which are the real competition's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubmissionRules:
    """The `validation` block of reference.yaml: the real competition's rules by default."""

    min_samples: int = 100
    max_samples: int = 15_000
    max_prompt_tokens: int = 2048
    max_leakage_fraction: float = 0.05

    def sample_count_problem(self, n_samples: int) -> str | None:
        """What is wrong with the sample count (to follow the task's name), if anything."""
        if self.min_samples <= n_samples <= self.max_samples:
            return None
        return f"has {n_samples:,} samples; the rules allow {self.min_samples:,} to {self.max_samples:,}"

    def prompt_length_problem(self, tokens: int) -> str | None:
        """What is wrong with a prompt's length (to follow the prompt's name), if anything."""
        if tokens <= self.max_prompt_tokens:
            return None
        return f"has {tokens:,} tokens; the limit is {self.max_prompt_tokens:,}"
