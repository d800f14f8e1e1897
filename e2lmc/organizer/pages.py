"""The competition's pages, rendered for one bundle.

The texts live in `competition/pages/*.md`; what differs between bundles is filled in at
their `<!-- e2lmc:NAME -->` markers: which checkpoint set the phases run on (the embedded
miniature set, or the real `tiiuae/dense-*` checkpoints), which models and how many
checkpoints each phase uses, and the schedule with the bundle's own dates. The hidden
web-only model is described, never named.
"""

from __future__ import annotations

from pathlib import Path

from ..formats.reference import ReferenceData
from ..formats.series import tokens_text
from .phases import PhaseSpec, phase_reference

PAGES = (  # (title, file under competition/pages), in the order participants see them
    ("Overview", "overview.md"),
    ("Tasks and data", "tasks_and_data.md"),
    ("Evaluation", "evaluation.md"),
    ("Submission format and rules", "submission.md"),
    ("Timeline", "timeline.md"),
    ("Prizes", "prizes.md"),
    ("Organizers", "organizers.md"),
)
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DAY_FORMAT = "%d %B %Y, %H:%M"

MODELS = {
    "e2lm": "You are given three pre-trained small models (0.5B, 1B and 3B parameters, each in two\n"
            "architectures) with intermediate checkpoints up to 200B training tokens. All development\n"
            "can be done on free cloud GPU platforms.\n",
    "zoo": "This instance of the competition runs on the **embedded checkpoint set**, a miniature\n"
           "rehearsal of the real one: small Llama models trained from scratch on a synthetic world of\n"
           "scientific facts and everyday narratives, in three sizes and two architectures, with the\n"
           "same roles (released, hidden and final checkpoints, a hidden web-only twin). The real\n"
           "competition's models are 0.5B, 1B and 3B parameters with checkpoints up to 1T tokens.\n",
}
SET_INTRO = {
    "e2lm": "The phases run on the real checkpoints of the `tiiuae/dense-*` models. Released checkpoints\n"
            "are the ones you can download; hidden ones are used only for scoring.",
    "zoo": "So that everything runs offline and on Codabench's CPU queue, this bundle carries its own\n"
           "miniature checkpoint set (the embedded set): seven tiny Llama models trained from scratch on\n"
           "a synthetic world of scientific facts and everyday narratives (three sizes × two\n"
           "architectures on a science mixture, plus a web-only twin of the smallest). The starting\n"
           "kit's sample tasks are written for it, and `e2lmc run` evaluates a task on it locally.",
}


def _model_rows(full: ReferenceData) -> str:
    rows = []
    for m in full.models:
        if m.mixture == "web":
            rows.append(f"| a hidden model | {m.size} | {m.architecture} | web text only | hidden |")
            continue
        released = [c for c in m.checkpoints if c.role == "released"]
        rows.append(f"| `{m.id}` | {m.size} | {m.architecture} | science mixture | {len(released)} released "
                    f"(`{released[0].name}` … `{released[-1].name}`, up to {tokens_text(released[-1].tokens)} "
                    f"tokens), {len(m.checkpoints) - len(released)} hidden |")
    return "| model | size | architecture | training data | checkpoints |\n|---|---|---|---|---|\n" + "\n".join(rows)


def _phase_rows(full: ReferenceData, phases: tuple[PhaseSpec, ...]) -> str:
    rows = []
    for spec in phases:
        reference = phase_reference(full, spec.name)
        sizes = ", ".join(dict.fromkeys(m.size for m in reference.models))
        rows.append(f"| {spec.name} | {len(reference.models)} models (sizes {sizes}) | "
                    f"{reference.n_checkpoints} |")
    return "| phase | models | checkpoints evaluated |\n|---|---|---|\n" + "\n".join(rows)


def _schedule(phases: tuple[PhaseSpec, ...]) -> str:
    rows = []
    for spec in phases:
        total = f", {spec.max_submissions} in all" if spec.max_submissions else ""
        rows.append(f"| **{spec.name.capitalize()}** | {spec.start:{DAY_FORMAT}} | {spec.end:{DAY_FORMAT}} | "
                    f"{spec.description} | {spec.max_submissions_per_day} a day{total} |")
    return "| phase | opens | closes | checkpoints | submissions |\n|---|---|---|---|---|\n" + "\n".join(rows)


def render(kind: str, full: ReferenceData, phases: tuple[PhaseSpec, ...]) -> dict[str, str]:
    """The text that replaces each marker."""
    checkpoint_set = (f"## The checkpoints of this competition\n\n{SET_INTRO[kind]}\n\n{_model_rows(full)}\n\n"
                      f"Each phase evaluates your task on these checkpoints:\n\n{_phase_rows(full, phases)}\n")
    return {"models": MODELS[kind], "checkpoint-set": checkpoint_set, "schedule": _schedule(phases) + "\n"}


def write_pages(source: Path, dest: Path, kind: str, full: ReferenceData, phases: tuple[PhaseSpec, ...]) -> list[dict]:
    """The pages into `dest/pages`, markers filled in; their competition.yaml entries."""
    (dest / "pages").mkdir()
    filled = render(kind, full, phases)
    for _, file in PAGES:
        text = (source / file).read_text(encoding="utf-8")
        for name, value in filled.items():
            text = text.replace(f"<!-- e2lmc:{name} -->\n", value)
        (dest / "pages" / file).write_text(text, encoding="utf-8")
    return [{"title": title, "file": f"pages/{file}"} for title, file in PAGES]
