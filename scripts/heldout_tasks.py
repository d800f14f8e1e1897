"""Science tasks in phrasings the embedded world never uses: how far a local score carries.

A participant writes their own prompts, not the world's templates. These tasks ask the
world's facts (every fact, the science sample's answer choices) in wordings that appear
nowhere in `e2lmc/data/world.yaml`'s statements, questions or forms (a test checks it),
so their scores on the embedded set measure whether the models learned facts or
templates. docs/zoo.md reports them (the held-out-phrasing target).

    python scripts/heldout_tasks.py OUT_DIR     # writes one submission folder per task
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from e2lmc.embedded.world import World, load_world, science_samples

# (kind, attribute) -> two cloze openings and a question, none of them the world's
CLOZE_A = {
    ("element", "symbol"): "In chemistry, {name} is represented by the letters",
    ("planet", "position"): "Ordered by distance from the Sun, {name} is the",
    ("moon", "planet"): "{Name} is a natural satellite of",
    ("animal", "group"): "In biology, the {name} is a member of the",
    ("quantity", "unit"): "The standard unit used to measure {name} is the",
    ("compound", "formula"): "The molecular formula for {name} is",
}
CLOZE_B = {
    ("element", "symbol"): "{Name}'s chemical symbol is",
    ("planet", "position"): "Among the planets, {name} is the",
    ("moon", "planet"): "The moon {name} goes around",
    ("animal", "group"): "Scientists classify the {name} as one of the",
    ("quantity", "unit"): "{Name} is usually given in units of",
    ("compound", "formula"): "Written as a formula, {name} is",
}
QUESTION = {
    ("element", "symbol"): "Give the symbol used for {name}.",
    ("planet", "position"): "Which place does {name} take in the order of the planets?",
    ("moon", "planet"): "Which planet is {name} a satellite of?",
    ("animal", "group"): "What kind of animal is the {name}?",
    ("quantity", "unit"): "Which unit would a physicist use for {name}?",
    ("compound", "formula"): "What formula represents {name}?",
}
PHRASINGS = {
    "heldout_cloze_a": ("{opening}", CLOZE_A),
    "heldout_cloze_b": ("{opening}", CLOZE_B),
    "heldout_question": ("Quiz: {opening}\nCorrect answer:", QUESTION),
    "heldout_fewshot": ("{opening}", CLOZE_A),  # five-shot: examples from a dev split
}
FEWSHOT_TASK = "heldout_fewshot"
N_SHOTS = 5


def heldout_samples(world: World, seed: int) -> dict[str, list[dict]]:
    """task name -> samples {prompt, choices, label}; the science sample's choices."""
    science = science_samples(world, seed)
    tasks = {}
    for task, (frame, openings) in PHRASINGS.items():
        tasks[task] = []
        for fact, sample in zip(world.facts, science):
            opening = openings[fact.kind, fact.attribute].format(name=fact.entity, Name=fact.entity[0].upper() + fact.entity[1:])
            tasks[task].append({"prompt": frame.format(opening=opening), **{k: sample[k] for k in ("choices", "label")}})
    return tasks


def fewshot_split(samples: list[dict]) -> tuple[list[dict], list[dict]]:
    """(dev, test): one example of each of the first kinds as shots, the rest tested."""
    dev = samples[:: len(samples) // N_SHOTS][:N_SHOTS]
    return dev, [s for s in samples if s not in dev]


def task_files(task: str, samples: list[dict]) -> dict[str, str]:
    """An lm-eval task in the starting kit's layout, as a participant writes one."""
    config = {
        "task": task, "dataset_path": "json", "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    files = {}
    if task == FEWSHOT_TASK:
        dev, test = fewshot_split(samples)
        config |= {"dataset_kwargs": {"data_files": {"dev": "dev.jsonl", "test": "test.jsonl"}}, "test_split": "test",
                   "fewshot_split": "dev", "num_fewshot": N_SHOTS, "fewshot_config": {"sampler": "first_n"},
                   "description": "Complete each statement about science.\n\n"}
        files |= {"dev.jsonl": dev, "test.jsonl": test}
    else:
        config |= {"dataset_kwargs": {"data_files": {"test": "test.jsonl"}}, "test_split": "test"}
        files["test.jsonl"] = samples
    text = {name: "".join(json.dumps(r) + "\n" for r in rows) for name, rows in files.items()}
    text[f"{task}.yaml"] = yaml.safe_dump(config, sort_keys=False)
    text["metadata.yaml"] = yaml.safe_dump({"task_name": task, "task_metric": "acc,none"})
    return text


def write_heldout_tasks(out: Path, seed: int = 0) -> list[Path]:
    folders = []
    for task, samples in heldout_samples(load_world(), seed).items():
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in task_files(task, samples).items():
            (folder / name).write_text(text, encoding="utf-8")
        folders.append(folder)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for folder in write_heldout_tasks(args.out, args.seed):
        print(folder)


if __name__ == "__main__":
    main()
