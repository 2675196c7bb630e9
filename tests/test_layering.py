"""The floor plan of the package (docs/explanation/architecture.md), enforced.

Every import of a workbench module counts: at module level, inside a function, and
`importlib.import_module("workbench.…")` with a literal name. One exception, the one Python's
packages are built on: a module taking names from its own package's `__init__` (an ancestor
package) is not an arrow. A package's `__init__` importing its submodules is one.

The floors, bottom up; a module imports only its own floor and the floors below, and no import
goes round in a circle:

1. foundation: errors, quiet (process set-up), settings (every typed settings section), recipe
2. Keras objects: optimizers, schedules, regularizers, callbacks, components, the GPT's layers
3. services: data (labels included), context, distribute, sharding, deploy, report, builders,
   the language-model corpus, tokenizers and packing
4. the task-family contract: tasks
5. engines, handed loss, metrics, optimizer and data by a family: training, compression,
   federated, the language-model training loop
6. families: supervised, lm, hub
7. stages
8. the command line (run) and the package's public face (workbench/__init__)
"""

import ast
import os
from pathlib import Path

import pytest

# The tree to check: this checkout, or another one (WORKBENCH_LAYERING_ROOT) to show what the
# test says of it.
ROOT = Path(os.environ.get("WORKBENCH_LAYERING_ROOT", Path(__file__).resolve().parents[1]))
PACKAGE = ROOT / "workbench"

FLOORS = {
    1: ["workbench.errors", "workbench.quiet", "workbench.settings", "workbench.recipe"],
    2: ["workbench.optimizers", "workbench.schedules", "workbench.regularizers",
        "workbench.callbacks", "workbench.components", "workbench.lm.model"],
    3: ["workbench.data", "workbench.context", "workbench.distribute", "workbench.sharding",
        "workbench.deploy", "workbench.report", "workbench.builders", "workbench.lm.corpus",
        "workbench.lm.tokenizers", "workbench.lm.packing"],
    4: ["workbench.tasks"],
    5: ["workbench.training", "workbench.compression", "workbench.federated",
        "workbench.lm.training", "workbench.lm.remat"],
    6: ["workbench.supervised", "workbench.lm", "workbench.hub"],
    7: ["workbench.stages"],
    8: ["workbench.run", "workbench"],
}
FLOOR_NAMES = {1: "foundation", 2: "Keras objects", 3: "services", 4: "task contract",
               5: "engines", 6: "families", 7: "stages", 8: "command line"}


def floor_of(module):
    """The floor of `module`: that of the longest listed prefix (a package covers its modules
    unless one of them is listed itself)."""
    best = None
    for floor, prefixes in FLOORS.items():
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (floor, prefix)
    return best[0] if best else None


def modules():
    """`{dotted name: path}` of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_names(module, path):
    """`(name, line)` of every workbench module or name `module` imports, relative imports
    resolved; `from a import b` gives both `a` and `a.b`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((source, node.lineno))
            found += [(f"{source}.{alias.name}", node.lineno) for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "workbench"]


def import_graph():
    """`{module: {imported module: first line}}` over the package's modules."""
    known = modules()
    graph = {}
    for module, path in known.items():
        edges = {}
        for name, line in imported_names(module, path):
            while name not in known and "." in name:  # `from a import b` where b is a name
                name = name.rpartition(".")[0]
            if name == module or module.startswith(name + "."):
                continue  # itself, or its own package's __init__
            edges.setdefault(name, line)
        graph[module] = edges
    return graph


def circles(graph):
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for name in graph[module]:
            if name not in index:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in on_stack:
                low[module] = min(low[module], index[name])
        if low[module] == index[module]:
            group = []
            while True:
                name = stack.pop()
                on_stack.discard(name)
                group.append(name)
                if name == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_every_module_has_a_floor():
    assert [module for module in modules() if floor_of(module) is None] == []


def test_no_import_goes_round_in_a_circle():
    graph = import_graph()
    described = []
    for group in circles(graph):
        arrows = [f"{module}:{line} -> {name}" for module in group
                  for name, line in sorted(graph[module].items()) if name in group]
        described.append(f"circle of {len(group)}: " + "; ".join(arrows))
    assert described == []


def test_no_import_goes_up_a_floor():
    upward = []
    for module, edges in sorted(import_graph().items()):
        floor = floor_of(module)
        for name, line in sorted(edges.items()):
            target = floor_of(name)
            if target is not None and target > floor:
                upward.append(f"{module}:{line} (floor {floor}, {FLOOR_NAMES[floor]}) imports "
                              f"{name} (floor {target}, {FLOOR_NAMES[target]})")
    assert upward == []


ENGINES = ("workbench.training", "workbench.compression", "workbench.federated",
           "workbench.lm.training")
FORBIDDEN_TO_ENGINES = ("workbench.tasks", "workbench.run", "workbench.recipe",
                        "workbench.supervised", "workbench.stages")


def test_engines_are_handed_what_they_need():
    # Beyond the floors: an engine reads no recipe module and no family, it is given the loss,
    # metrics, optimizer and data (the language-model loop's own corpus and model are floor 3
    # and 2 modules of the lm package, not the family).
    offenders = [f"{module}:{line} imports {name}"
                 for module, edges in sorted(import_graph().items())
                 if module.startswith(ENGINES)
                 for name, line in sorted(edges.items())
                 if name.startswith(FORBIDDEN_TO_ENGINES) or name in ("workbench.lm.task",
                                                                      "workbench.hub")]
    assert offenders == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "workbench"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("from workbench.low.a import x\n")
    (package / "low" / "a.py").write_text("x = 1\ndef f():\n    from workbench.low import b\n")
    (package / "low" / "b.py").write_text("import importlib\n"
                                          "importlib.import_module('workbench.low.a')\n")
    global ROOT, PACKAGE
    saved = ROOT, PACKAGE
    ROOT, PACKAGE = tmp_path, package
    try:
        graph = import_graph()
    finally:
        ROOT, PACKAGE = saved
    assert graph["workbench.low.a"] == {"workbench.low.b": 3}
    assert graph["workbench.low.b"] == {"workbench.low.a": 2}
    assert circles(graph) == [["workbench.low.a", "workbench.low.b"]]


@pytest.mark.parametrize("module, floor", [("workbench.lm.model", 2), ("workbench.lm.task", 6),
                                           ("workbench.settings.lm", 1), ("workbench", 8)])
def test_the_longest_prefix_decides_the_floor(module, floor):
    assert floor_of(module) == floor
