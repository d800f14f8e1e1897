"""The trust boundary and the stages' layers, read from every module's imports.

The layers are written once, here (`LAYERS`), and described in docs/architecture.md. Each
module's imports of e2lmc are read with `ast` — at module level and inside functions
alike, since a lazy import is an import — and each must go to the module's own package,
to the base, or to a package its layer allows.
"""

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "e2lmc"
BASE = "base"  # the package's top-level modules (errors, limits, the version) and formats/: they import no stage
LAYERS = {  # package -> the stages its modules may import, besides its own package and the base
    "sandboxed": set(),  # runs or reads the submission's code: nothing trusted, no engine, no scores
    "engine": set(),  # trusted evaluation: never the sandboxed side
    "metrics": set(),  # trusted metrics from responses and the plan: never the submission's code
    "scoring": set(),  # results + reference -> scores: neither the submission's code nor models
    "embedded": set(),  # the embedded checkpoint set
    "ingestion": {"sandboxed", "engine", "metrics"},
    "organizer": {"sandboxed", "engine", "metrics", "scoring", "ingestion", "embedded"},
    "participant": {"sandboxed", "engine", "metrics", "scoring", "ingestion", "embedded", "organizer"},
    "cli": {"sandboxed", "engine", "metrics", "scoring", "ingestion", "embedded", "organizer", "participant"},
}
CHILD_ENTRY = ("e2lmc.sandboxed.confine", "e2lmc.sandboxed.child")  # what a sandboxed child process starts with
METRIC_ENTRY = ("e2lmc.sandboxed.confine", "e2lmc.metrics.child")  # the trusted metric's child


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """The e2lmc modules (or packages) a file imports, wherever in the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            modules = [f"{target}.{a.name}" for a in node.names
                       if (root.parent / target.replace(".", "/") / f"{a.name}.py").is_file()
                       or (root.parent / target.replace(".", "/") / a.name).is_dir()]
            found |= set(modules) or {target}
    return {m for m in found if m == root.name or m.startswith(root.name + ".")}


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p, root): imports(p, root) for p in sorted(root.rglob("*.py"))}


def layer(module: str, root: Path = PACKAGE) -> str:
    """A module's package under e2lmc, or BASE for the top-level modules and formats/."""
    parts = module.split(".")
    if len(parts) == 1 or not (root / parts[1]).is_dir() or parts[1] == "formats":
        return BASE
    return parts[1]


def forbidden_arrows(edges: dict[str, set[str]], root: Path = PACKAGE) -> list[str]:
    """Every import that crosses the layers against LAYERS, as 'a -> b'."""
    wrong = []
    for module, targets in edges.items():
        own = layer(module, root)
        allowed = {own, BASE} | LAYERS.get(own, set())
        wrong += [f"{module} -> {target}" for target in sorted(targets) if layer(target, root) not in allowed]
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def closure(edges: dict[str, set[str]], start: tuple[str, ...]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += edges.get(module, ())
    return seen


def test_every_import_keeps_to_the_layers():
    edges = graph()
    assert len(edges) > 40  # the whole package was read
    assert forbidden_arrows(edges) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_a_sandboxed_child_runs_only_sandboxed_and_base_code():
    """What a child process imports, all the way down, from its first module on."""
    reached = closure(graph(), CHILD_ENTRY)
    assert {"e2lmc.sandboxed.tasks", "e2lmc.sandboxed.samples", "e2lmc.formats.plan"} <= reached
    assert sorted(m for m in reached if layer(m) not in (BASE, "sandboxed")) == []


def test_the_trusted_metric_child_runs_no_code_that_reads_the_submission():
    """It is confined by `confine` (a module with no import of the package beyond itself),
    then runs the metrics package and the base only: nothing that loads the task."""
    reached = closure(graph(), METRIC_ENTRY)
    assert "e2lmc.metrics.trusted" in reached
    assert sorted(m for m in reached if layer(m) not in (BASE, "metrics") and m != "e2lmc.sandboxed.confine") == []


def test_every_package_has_a_layer_and_every_module_a_docstring():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) | {"formats"}
    undocumented = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
                    if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert undocumented == []


@pytest.mark.parametrize("planted, arrow", [
    ("sandboxed/tasks.py", "from ..scoring.formulas import signal_quality"),  # untrusted code reaching the formulas
    ("engine/runner.py", "from ..sandboxed import tasks"),  # the trusted engine reaching submission code
    ("formats/plan.py", "from ..ingestion.program import ingest"),  # the base importing a stage
    ("scoring/report.py", "import e2lmc.participant.run"),  # a lower stage importing a higher one
])
def test_a_planted_forbidden_import_is_caught(tmp_path, planted, arrow):
    """The checks above attacked: a copy of the package with one forbidden line added,
    inside a function (a lazy import counts too)."""
    import shutil

    root = Path(shutil.copytree(PACKAGE, tmp_path / "e2lmc", ignore=shutil.ignore_patterns("__pycache__")))
    with open(root / planted, "a", encoding="utf-8") as f:
        f.write(f"\n\ndef _planted() -> None:\n    {arrow}\n")
    assert forbidden_arrows(graph(root), root) != []


def test_a_planted_cycle_is_caught(tmp_path):
    import shutil

    root = Path(shutil.copytree(PACKAGE, tmp_path / "e2lmc", ignore=shutil.ignore_patterns("__pycache__")))
    with open(root / "errors.py", "a", encoding="utf-8") as f:
        f.write("\n\nfrom .limits import Limits  # noqa\n")
    with open(root / "limits.py", "a", encoding="utf-8") as f:
        f.write("\n\nfrom .errors import UserError  # noqa\n")
    assert ["e2lmc.errors", "e2lmc.limits"] in cycles(graph(root))
