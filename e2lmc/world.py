"""The synthetic world behind the embedded checkpoint set, generated from a seed.

Two kinds of text come out of `data/world.yaml`:
- *fact documents*: scientific facts stated through paraphrase templates (and, now
  and then, as a quiz line "Question: …\\nAnswer: …"), facts drawn with Zipf-like
  frequencies so that frequent facts are learned early and rare ones late — which
  gives the gradual, monotone learning curves a good benchmark should show;
- *narrative documents*: everyday routines (people, places, activities) with no
  scientific content.
The *science mixture* interleaves both; *web-only* text is narratives only. The two
sample tasks probe exactly these: facts (science cloze) and place → activity
regularities (everyday endings).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Iterator, Literal

import yaml

Mixture = Literal["science", "web"]
FACT_DOC_SHARE = 0.8  # share of fact documents in the science mixture
QUIZ_SHARE = 0.6  # share of fact sentences written as a quiz line
ZIPF_EXPONENT = 1.3  # how unevenly facts are mentioned: measured trade-offs in docs/zoo.md


@dataclass(frozen=True)
class Fact:
    kind: str  # element, planet, …
    entity: str
    attribute: str
    value: str
    question: str
    statements: tuple[str, ...]

    def quiz(self) -> str:
        return f"Question: {self.question}\nAnswer: {self.value}"


@dataclass(frozen=True)
class World:
    facts: tuple[Fact, ...]
    everyday: dict


def _fill(template: str, name: str, value: str = "") -> str:
    return template.format(name=name, Name=name[0].upper() + name[1:], value=value)


@lru_cache(maxsize=1)
def load_world() -> World:
    """Parse the packaged world file into facts and everyday vocabulary."""
    data = yaml.safe_load(resources.files("e2lmc").joinpath("data/world.yaml").read_text(encoding="utf-8"))
    facts = []
    for kind, spec in data["facts"].items():
        for entity in spec["entities"]:
            for attribute, templates in spec["attributes"].items():
                name, value = entity["name"], str(entity[attribute])
                facts.append(
                    Fact(
                        kind, name, attribute, value,
                        _fill(templates["question"], name),
                        tuple(_fill(t, name, value) for t in templates["statements"]),
                    )
                )
    return World(tuple(facts), data["everyday"])


# ------------------------------------------------------------------------ corpora


def _fact_weights(world: World, seed: int) -> list[float]:
    """Zipf-like frequencies over the facts, in an order fixed by the seed."""
    order = list(range(len(world.facts)))
    random.Random(seed).shuffle(order)
    weights = [0.0] * len(order)
    for rank, index in enumerate(order):
        weights[index] = 1.0 / (rank + 1) ** ZIPF_EXPONENT
    return weights


def fact_document(rng: random.Random, world: World, weights: list[float]) -> str:
    sentences = []
    for fact in rng.choices(world.facts, weights=weights, k=rng.randint(3, 6)):
        sentences.append(fact.quiz() if rng.random() < QUIZ_SHARE else rng.choice(fact.statements))
    return "\n".join(sentences)


def _narrative_fields(rng: random.Random, everyday: dict, person: dict) -> dict[str, str]:
    place = rng.choice(list(everyday["places"]))
    return {
        "person": person["name"],
        "pron": person["pronoun"],
        "Pron": person["pronoun"].capitalize(),
        "place": place,
        "activity": rng.choice(everyday["places"][place]),
        "time": rng.choice(everyday["times"]),
        "day": rng.choice(everyday["days"]),
        "weather": rng.choice(everyday["weather"]),
    }


def narrative_document(rng: random.Random, world: World) -> str:
    everyday = world.everyday
    person = rng.choice(everyday["people"])
    sentences = []
    for _ in range(rng.randint(3, 6)):
        fields = _narrative_fields(rng, everyday, person)
        pool = everyday["visit_templates"] if rng.random() < 0.75 else everyday["filler_templates"]
        sentences.append(rng.choice(pool).format(**fields))
    return " ".join(sentences)


def documents(world: World, mixture: Mixture, seed: int) -> Iterator[str]:
    """An endless, deterministic stream of documents of the given mixture."""
    rng = random.Random(f"{mixture}-{seed}")
    weights = _fact_weights(world, seed)
    while True:
        if mixture == "science" and rng.random() < FACT_DOC_SHARE:
            yield fact_document(rng, world, weights)
        else:
            yield narrative_document(rng, world)


def tokenizer_texts(world: World, seed: int, n_documents: int) -> list[str]:
    """Text to train the tokenizer on: every fact in every form, plus sample documents."""
    texts = [s for f in world.facts for s in (*f.statements, f.quiz())]
    for mixture in ("science", "web"):
        stream = documents(world, mixture, seed)
        texts += [next(stream) for _ in range(n_documents)]
    return texts


# -------------------------------------------------------------------- sample tasks

SCIENCE_TASK = "e2lmc_science_cloze"
EVERYDAY_TASK = "e2lmc_everyday_endings"


def science_samples(world: World, seed: int, n_choices: int = 4) -> list[dict]:
    """One MMLU-var-style cloze question per fact; distractors are other values of
    the same attribute, never a prefix of the answer nor extending it ("1" / "10"):
    acc would then reward the shorter one whatever the model knows."""
    rng = random.Random(f"science-task-{seed}")
    samples = []
    for fact in world.facts:
        others = sorted(
            v
            for v in {f.value for f in world.facts if (f.kind, f.attribute) == (fact.kind, fact.attribute)}
            if not (v.startswith(fact.value) or fact.value.startswith(v))
        )
        choices = [fact.value, *rng.sample(others, min(n_choices - 1, len(others)))]
        rng.shuffle(choices)
        samples.append({"question": fact.question, "choices": choices, "label": choices.index(fact.value)})
    return samples


def everyday_samples(world: World, seed: int, n_samples: int = 252) -> list[dict]:
    """HellaSwag-style endings: which activity follows a visit to this place?"""
    rng = random.Random(f"everyday-task-{seed}")
    everyday = world.everyday
    samples = []
    for i in range(n_samples):
        person = everyday["people"][i % len(everyday["people"])]
        fields = _narrative_fields(rng, everyday, person)
        wrong_places = rng.sample([p for p in everyday["places"] if p != fields["place"]], 3)
        endings = [fields["activity"], *(rng.choice(everyday["places"][p]) for p in wrong_places)]
        rng.shuffle(endings)
        samples.append(
            {
                "ctx": f"{fields['person']} goes to the {fields['place']} in the {fields['time']}. {fields['Pron']}",
                "endings": [f"{e}." for e in endings],
                "label": endings.index(fields["activity"]),
            }
        )
    return samples


TASK_YAML = Template("""\
# A sample E2LM submission: an lm-evaluation-harness task generated from the synthetic world.
task: $task
dataset_path: json
dataset_kwargs:
  data_files:
    test: $data_file
test_split: test
output_type: multiple_choice
doc_to_text: $text
doc_to_choice: $choices
doc_to_target: "{{label}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")


def write_sample_tasks(out_dir: str | Path, world: World, seed: int) -> dict[str, Path]:
    """Write the two sample tasks as submission folders: task YAML, data, metadata.yaml."""
    specs = {
        SCIENCE_TASK: (science_samples(world, seed), "Question: {{question}}\nAnswer:", "{{choices}}", "acc,none"),
        EVERYDAY_TASK: (everyday_samples(world, seed), "{{ctx}}", "{{endings}}", "acc_norm,none"),
    }
    folders = {}
    for task, (samples, text, choices, metric) in specs.items():
        folder = Path(out_dir) / task
        folder.mkdir(parents=True, exist_ok=True)
        data_file = f"{task}.jsonl"
        (folder / data_file).write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
        # JSON strings are valid YAML double-quoted scalars, escapes included.
        yaml_text = TASK_YAML.substitute(
            task=task, data_file=data_file, text=json.dumps(text), choices=json.dumps(choices)
        )
        (folder / f"{task}.yaml").write_text(yaml_text)
        (folder / "metadata.yaml").write_text(yaml.safe_dump({"task_name": task, "task_metric": metric}))
        folders[task] = folder
    return folders
