"""The package's imports run one way: each layer imports only from the layers below it (docs/layout.md),
no two modules import each other (directly or through others), and an import inside a function is
there only for a heavy dependency the module does not always need (named below, each with why)."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latentlit"

# lowest first: a module may import from its own layer and the layers before it
LAYERS = ["rng", "runs", "data", "models", "sampling", "aggregation", "search", "scoring", "training", "evaluation", "lit", "cli"]
# not layers: the Python API (imports what a notebook needs) and helpers for tests and smoke runs
ABOVE_ALL = {"__init__", "api", "testing"}
# (module, imported module) imported inside a function, and why
LAZY = {
    ("latentlit.evaluation.plots", "matplotlib"): "matplotlib costs ~1 s of import; only runs that draw need it",
    ("latentlit.evaluation.plots", "sklearn"): "scikit-learn (t-SNE) is needed only for --projection tsne",
    ("latentlit.cli.entry", "lightning"): "help and usage errors are answered before torch and Lightning load (~7 s)",
    ("latentlit.cli.entry", "latentlit.cli.lightning_cli"): "the same: the LightningCLI imports torch and Lightning",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, inside a function) for each import statement of ``path``."""
    tree = ast.parse(path.read_text())
    functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, id(node) in functions
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in functions


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph():
    graph = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for target, _ in _imports(path):
            if target.startswith("latentlit."):
                graph[module].add(target)
    return graph


def test_each_layer_imports_only_from_the_layers_below():
    upward = []
    for module, targets in _graph().items():
        if _layer(module) in ABOVE_ALL:
            continue
        for target in targets:
            if _layer(target) in ABOVE_ALL or LAYERS.index(_layer(target)) > LAYERS.index(_layer(module)):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    modules = {m for m in graph} | {t for ts in graph.values() for t in ts}

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                # importing a.b.c runs a/__init__ and a/b/__init__ too
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in modules if m in reach(m))
    assert cycles == []


def test_imports_inside_functions_are_only_the_listed_heavy_dependencies():
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _layer(module) == "testing":
            continue
        for target, inside in _imports(path):
            if inside:
                found.add((module, target.split(".")[0] if not target.startswith("latentlit") else target))
    assert found <= set(LAZY), sorted(found - set(LAZY))
