"""Write the demo's sample ingestion results and their reference data.

The values are SYNTHETIC (a noisy log-tokens growth law, fixed seed), laid out like
the real competition: six science models (3 sizes x 2 architectures) and a hidden
web-only 0.5B model, released checkpoints every 2000 iterations up to 56000
(~206B tokens), hidden ones every 16000 after that, a final one at 240000 (~1T).
They let the scoring program and its report be tried before any model runs.

    python scripts/make_sample_results.py [--out-results DIR] [--out-reference DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from e2lmc.formats.plan import LeakageExample
from e2lmc.formats.reference import (
    Checkpoint,
    ComplianceSelection,
    Model,
    ReferenceData,
    ScoreSelections,
    Selection,
    write_reference,
)
from e2lmc.formats.results import CheckpointResult, IngestionResults, PreflightFindings, write_results
from e2lmc.formats.series import iterations_to_tokens

SEED = 2025
RELEASED = range(2000, 56001, 2000)
HIDDEN = range(64000, 224001, 16000)
FINAL = 240000
# (size, architecture, mixture, growth of accuracy per decade of training tokens)
MODELS = [
    ("500m", "arch1", "science", 0.050),
    ("500m", "arch2", "science", 0.046),
    ("1b", "arch1", "science", 0.070),
    ("1b", "arch2", "science", 0.066),
    ("3b", "arch1", "science", 0.100),
    ("3b", "arch2", "science", 0.094),
    ("500m", "arch1", "web", 0.020),
]


def model_id(size: str, arch: str, mixture: str) -> str:
    return f"dense-{size}-{arch}" + ("-web" if mixture == "web" else "")


def sample_reference() -> ReferenceData:
    models = []
    for size, arch, mixture, _ in MODELS:
        checkpoints = [
            Checkpoint(f"iter_{it:07d}", it, float(iterations_to_tokens(it)), role)
            for its, role in ((RELEASED, "released"), (HIDDEN, "hidden"), ([FINAL], "final"))
            for it in its
        ]
        if mixture == "web":  # the web-only model is hidden from participants entirely
            checkpoints = [Checkpoint(c.name, c.iteration, c.tokens, "final" if c.role == "final" else "hidden")
                           for c in checkpoints]
        models.append(Model(model_id(size, arch, mixture), size, arch, mixture, checkpoints))
    science = [m.id for m in models if m.mixture == "science"]
    return ReferenceData(
        phase="sample",
        description="Reference for the synthetic sample results (real competition layout).",
        models=models,
        scores=ScoreSelections(
            signal_quality=Selection(science, ["released"], every_iterations=4000, max_tokens=206e9),
            ranking_consistency=Selection(science, ["hidden", "final"]),
            scientific_compliance=ComplianceSelection("dense-500m-arch1", "dense-500m-arch1-web"),
        ),
    )


def sample_results(reference: ReferenceData) -> IngestionResults:
    rng = np.random.default_rng(SEED)
    growth = {model_id(s, a, m): g for s, a, m, g in MODELS}
    checkpoints = []
    for model in reference.models:
        for ckpt in model.checkpoints:
            acc = 0.25 + growth[model.id] * np.log10(1 + ckpt.tokens / 1e9) + rng.normal(0, 0.004)
            checkpoints.append(
                CheckpointResult(
                    model.checkpoint_id(ckpt),
                    {"acc,none": round(float(acc), 6), "acc_stderr,none": 0.0125},
                    seconds=0.0,
                )
            )
    return IngestionResults(
        task_name="sample_science_cloze",
        task_metric="acc,none",
        higher_is_better=True,
        n_samples=1200,
        validation=PreflightFindings(
            max_prompt_tokens=187,
            longest_prompt_sample=1033,
            leakage_count=2,
            leakage_examples=[
                LeakageExample(17, "oxygen", "Question: Which gas, like oxygen, do plants release?\nAnswer:"),
                LeakageExample(402, "Mars", "Question: Mars is the fourth planet. Which planet is fourth?\nAnswer:"),
            ],
        ),
        checkpoints=checkpoints,
        complete=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-results", type=Path, default=Path("starting_kit/sample_results"))
    parser.add_argument("--out-reference", type=Path, default=Path("reference_data/sample"))
    args = parser.parse_args()
    reference = sample_reference()
    print(write_reference(reference, args.out_reference))
    print(write_results(sample_results(reference), args.out_results))


if __name__ == "__main__":
    main()
