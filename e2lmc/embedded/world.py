"""The synthetic world behind the embedded checkpoint set, generated from a seed.

Two kinds of text come out of `data/world.yaml`:
- *fact documents*: scientific facts, each mention in one of many surface forms
  (statements in several word orders, questions and answers in several formats,
  fill-in-the-blank, lettered multiple choice, tables and lists) so that the models
  learn facts, not one template, and a participant's own phrasing finds them; facts
  are drawn with Zipf-like frequencies so that frequent facts are learned early and
  rare ones late — the gradual, monotone learning curves a good benchmark should show;
- *narrative documents*: everyday routines (people, places, activities) with no
  scientific content.
The *science mixture* interleaves both; *web-only* text is narratives only. The two
sample tasks probe exactly these: facts (science cloze) and place → activity
regularities (everyday endings).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Iterator, Literal

import yaml

Mixture = Literal["science", "web"]
FACT_DOC_SHARE = 0.9  # share of fact documents in the science mixture
TABLE_DOC_SHARE = 0.3  # share of fact documents written as a table or list of one attribute
# How often a fact mention takes each surface form (declarative statement, quiz line,
# fill-in-the-blank, lettered multiple choice): no phrasing dominates, so a task in a
# phrasing of its own still finds the facts (measured: docs/zoo.md).
FORM_WEIGHTS = {"statement": 0.55, "quiz": 0.3, "cloze": 0.1, "exam": 0.05}
ZIPF_EXPONENT = 1.0  # how unevenly facts are mentioned: measured trade-offs in docs/zoo.md
LETTERS = "ABCD"


@dataclass(frozen=True)
class Fact:
    kind: str  # element, planet, …
    entity: str
    attribute: str
    value: str
    question: str  # the canonical question: the one the science sample asks
    questions: tuple[str, ...]  # every question about the fact, the canonical one first
    statements: tuple[str, ...]
    labels: dict[str, str]  # kind / Kind / label / Label, for tables and lists

    def quiz(self) -> str:
        return f"Question: {self.question}\nAnswer: {self.value}"

    def blanks(self) -> list[str]:
        """The statements with the value replaced by a blank, where it appears once as a word."""
        word = re.compile(rf"(?<!\w){re.escape(self.value)}(?!\w)")
        return [word.sub("____", s) for s in self.statements if len(word.findall(s)) == 1]


@dataclass(frozen=True)
class World:
    facts: tuple[Fact, ...]
    forms: dict
    everyday: dict

    def values(self, fact: Fact) -> list[str]:
        """Every value of the fact's attribute in the world, sorted."""
        return sorted({f.value for f in self.facts if (f.kind, f.attribute) == (fact.kind, fact.attribute)})


def _capitalized(text: str) -> str:
    return text[0].upper() + text[1:]


def _fill(template: str, name: str, value: str = "") -> str:
    return template.format(name=name, Name=_capitalized(name), value=value)


@lru_cache(maxsize=1)
def load_world() -> World:
    """Parse the packaged world file into facts, surface forms and everyday vocabulary."""
    data = yaml.safe_load(resources.files("e2lmc").joinpath("data/world.yaml").read_text(encoding="utf-8"))
    facts = []
    for kind, spec in data["facts"].items():
        for entity in spec["entities"]:
            for attribute, templates in spec["attributes"].items():
                name, value = entity["name"], str(entity[attribute])
                questions = (templates["question"], *templates["questions"])
                labels = {"kind": spec["label"], "Kind": _capitalized(spec["label"]),
                          "label": templates["label"], "Label": _capitalized(templates["label"])}
                facts.append(
                    Fact(
                        kind, name, attribute, value, _fill(templates["question"], name),
                        tuple(_fill(q, name) for q in questions),
                        tuple(_fill(t, name, value) for t in templates["statements"]), labels,
                    )
                )
    return World(tuple(facts), data["forms"], data["everyday"])


# ------------------------------------------------------------------------ corpora


def _fact_weights(world: World, seed: int) -> list[float]:
    """Zipf-like frequencies over the facts, in an order fixed by the seed."""
    order = list(range(len(world.facts)))
    random.Random(seed).shuffle(order)
    weights = [0.0] * len(order)
    for rank, index in enumerate(order):
        weights[index] = 1.0 / (rank + 1) ** ZIPF_EXPONENT
    return weights


def fact_sentence(rng: random.Random, world: World, fact: Fact) -> str:
    """One mention of a fact, in a surface form drawn by FORM_WEIGHTS."""
    form = rng.choices(list(FORM_WEIGHTS), weights=list(FORM_WEIGHTS.values()))[0]
    blanks = fact.blanks() if form == "cloze" else []
    if form == "statement" or (form == "cloze" and not blanks):
        return rng.choice(fact.statements)
    fields = {"question": rng.choice(fact.questions), "value": fact.value, "Value": _capitalized(fact.value)}
    if form == "quiz":
        return rng.choice(world.forms["quiz"]).format(**fields)
    if form == "cloze":
        return rng.choice(world.forms["cloze"]).format(blank=rng.choice(blanks), **fields)
    others = [v for v in world.values(fact) if v != fact.value]
    options = [fact.value, *rng.sample(others, min(len(LETTERS) - 1, len(others)))]
    rng.shuffle(options)
    letter = LETTERS[options.index(fact.value)]
    lines = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
    return rng.choice(world.forms["exam"]).format(options=lines, letter=letter, **fields)


def table_document(rng: random.Random, world: World, weights: list[float]) -> str:
    """A table or list of facts of one attribute (the first fact drawn picks it)."""
    first = rng.choices(world.facts, weights=weights)[0]
    same = [(f, w) for f, w in zip(world.facts, weights) if (f.kind, f.attribute) == (first.kind, first.attribute)]
    rows = [first]
    for fact in rng.choices([f for f, _ in same], weights=[w for _, w in same], k=rng.randint(2, 7)):
        if fact not in rows:
            rows.append(fact)
    rng.shuffle(rows)
    table = rng.choice(world.forms["tables"])
    lines = [table["heading"].format(**first.labels)]
    lines += [table["row"].format(name=f.entity, Name=_capitalized(f.entity), value=f.value) for f in rows]
    return "\n".join(lines)


def fact_document(rng: random.Random, world: World, weights: list[float]) -> str:
    if rng.random() < TABLE_DOC_SHARE:
        return table_document(rng, world, weights)
    facts = rng.choices(world.facts, weights=weights, k=rng.randint(3, 6))
    return "\n".join(fact_sentence(rng, world, fact) for fact in facts)


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
    texts = [s for f in world.facts for s in (*f.statements, *f.questions, f.quiz())]
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
        others = [v for v in world.values(fact) if not (v.startswith(fact.value) or fact.value.startswith(v))]
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


TEMPLATE_TASK = "e2lmc_mmluvar_template"
PATCH_TASK = "e2lmc_science_patch"

TEMPLATE_YAML = """\
# An MMLU-var-style task to adapt: the cloze formulation of multiple-choice questions
# (each answer choice scored as a continuation of the question, no A/B/C/D letters),
# which gives small models a usable signal long before they can handle letter answers.
# Replace dev.jsonl / test.jsonl with your own questions in the same layout:
#   {"question": ..., "subject": ..., "choices": [...], "answer": <index of the right choice>}
task: $task
dataset_path: json              # lm-eval reads local json/jsonl/csv/parquet files
dataset_kwargs:
  data_files:                   # paths relative to this YAML file
    dev: dev.jsonl
    test: test.jsonl
test_split: test
fewshot_split: dev              # the few-shot examples come from here, never from test
num_fewshot: 5
fewshot_config:
  sampler: first_n              # the same examples for every question: deterministic
process_docs: !function utils.process_docs   # a helper of your own, in utils.py next to this file
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
output_type: multiple_choice
metric_list:
  - metric: acc                 # sum of the choice's token log-probabilities
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm            # per-byte normalised: fairer between short and long choices
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

TEMPLATE_UTILS = '''"""Helpers of the template task: lm-eval calls process_docs on every split once."""


def process_docs(dataset):
    """Tidy the questions; a place to filter or reshape your data."""
    return dataset.map(lambda doc: {"question": " ".join(doc["question"].split())})
'''


def git_new_file(path: str, text: str) -> str:
    """One file of a `git diff` that creates it."""
    blob = hashlib.sha1(f"blob {len(text.encode())}\0".encode() + text.encode()).hexdigest()
    lines = text.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..{blob[:7]}\n"
            f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}")


def _write_task(folder: Path, files: dict[str, str], task: str, metric: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "metadata.yaml").write_text(yaml.safe_dump({"task_name": task, "task_metric": metric}))
    return folder


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _simple_task(task: str, samples: list[dict], text: str, choices: str) -> dict[str, str]:
    """A zero-shot task YAML and its data file."""
    data_file = f"{task}.jsonl"
    # JSON strings are valid YAML double-quoted scalars, escapes included.
    yaml_text = TASK_YAML.substitute(task=task, data_file=data_file, text=json.dumps(text), choices=json.dumps(choices))
    return {f"{task}.yaml": yaml_text, data_file: _jsonl(samples)}


def write_sample_tasks(out_dir: str | Path, world: World, seed: int) -> dict[str, Path]:
    """Write the sample submissions, each a folder ready to zip: the science and the
    everyday task, the MMLU-var-style template, and the science task again in the real
    competition's `evaluation.patch` format."""
    out = Path(out_dir)
    science = science_samples(world, seed)
    question = "Question: {{question}}\nAnswer:"
    mmlu = [{"question": s["question"], "subject": f.kind, "choices": s["choices"], "answer": s["label"]}
            for s, f in zip(science, world.facts)]
    # five few-shot examples, the first question of five kinds of fact (never tested)
    first_of_kind: dict[str, int] = {}
    for i, fact in enumerate(world.facts):
        first_of_kind.setdefault(fact.kind, i)
    shots = sorted(first_of_kind.values())[:5]
    patch_files = _simple_task(PATCH_TASK, science, question, "{{choices}}")
    patch = "".join(git_new_file(f"lm_eval/tasks/{PATCH_TASK}/{name}", text) for name, text in patch_files.items())
    return {
        SCIENCE_TASK: _write_task(out / SCIENCE_TASK, _simple_task(SCIENCE_TASK, science, question, "{{choices}}"),
                                  SCIENCE_TASK, "acc,none"),
        EVERYDAY_TASK: _write_task(out / EVERYDAY_TASK, _simple_task(
            EVERYDAY_TASK, everyday_samples(world, seed), "{{ctx}}", "{{endings}}"), EVERYDAY_TASK, "acc_norm,none"),
        TEMPLATE_TASK: _write_task(out / TEMPLATE_TASK, {
            f"{TEMPLATE_TASK}.yaml": Template(TEMPLATE_YAML).substitute(task=TEMPLATE_TASK),
            "utils.py": TEMPLATE_UTILS, "dev.jsonl": _jsonl([mmlu[i] for i in shots]),
            "test.jsonl": _jsonl([q for i, q in enumerate(mmlu) if i not in shots]),
        }, TEMPLATE_TASK, "acc_norm,none"),
        PATCH_TASK: _write_task(out / PATCH_TASK, {"evaluation.patch": patch}, PATCH_TASK, "acc,none"),
    }
