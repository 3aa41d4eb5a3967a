"""The layering of the package (docs/architecture.md), read from every module's imports with ``ast``.

Rules: a module imports only its own layer and the layers below it (``render`` and ``deploy`` share
a rank and do not import each other); nothing but ``__main__`` imports ``cli``; only ``model``,
``evaluators`` and ``run`` import Keras or TensorFlow; the modules import each other without a cycle.
Imports inside functions and under ``TYPE_CHECKING`` count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "optsearch"

#: Every top-level part of the package and its rank, lowest first.
RANKS = {
    "core": 0,
    "methods": 1,
    "settings": 2,
    "model": 3,
    "data": 4,
    "evaluators": 5,
    "results": 6,
    "render": 7,
    "deploy": 7,
    "config": 8,
    "run": 9,
    "api": 10,
    "quantizer_layer": 10,  # the 0.1.0 import path of the Keras layer, kept for saved models
    "__init__": 11,  # the public names, imported lazily from api and the layers below
    "cli": 12,
    "__main__": 13,  # ``python -m optsearch``: the command line's entry point
}
KERAS_OWNERS = {"model", "evaluators", "run"}
FRAMEWORKS = ("keras", "tensorflow", "tf_keras")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """The absolute names ``path`` imports (relative imports resolved against ``module``)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _part(module: str) -> str:
    """``core`` for ``optsearch.core.costs``; ``__init__`` for ``optsearch`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = _modules()
GRAPH = {
    name: {
        target
        for target in _imports(path, name)
        if target in MODULES and target != name and _part(target) != "__init__"
    }
    for name, path in MODULES.items()
}


def test_every_part_has_a_rank() -> None:
    unknown = sorted({_part(name) for name in MODULES} - set(RANKS))
    assert not unknown, f"add {unknown} to RANKS here and to docs/architecture.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module: str) -> None:
    here = _part(module)
    for target in sorted(GRAPH[module]):
        there = _part(target)
        if there == here:
            continue
        assert there != "cli" or here == "__main__", f"{module} imports {target}: nothing imports the CLI"
        assert RANKS[there] < RANKS[here], (
            f"{module} ({here}, rank {RANKS[here]}) imports {target} ({there}, rank {RANKS[there]}): "
            "a layer imports only the layers below it"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_model_evaluators_and_run_layers_import_keras(module: str) -> None:
    if _part(module) in KERAS_OWNERS:
        return
    frameworks = {name for name in _imports(MODULES[module], module) if name.split(".")[0] in FRAMEWORKS}
    assert not frameworks, f"{module} imports {sorted(frameworks)}; only {sorted(KERAS_OWNERS)} may"


def test_no_import_cycles() -> None:
    """Depth-first search over the module graph; a back edge is a cycle, printed in full."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """The checks above read real imports: a lazy upward import and a Keras import are seen."""
    source = tmp_path / "mod.py"
    source.write_text(
        "def f():\n    from optsearch.cli.main import cli\n    import keras\nfrom ..run import runner\n"
    )
    found = _imports(source, "optsearch.core.mod")
    assert {"optsearch.cli.main", "keras", "optsearch.run", "optsearch.run.runner"} <= found
