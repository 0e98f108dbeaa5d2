"""The package's shape: every import inside fastsoftmax points down, none closes a circle,
and no function outgrows a screen.

Read from the source (every import statement, those inside functions too), so a lazy
import cannot hide an upward edge.
"""

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parent.parent / "fastsoftmax"

# Bottom up: a module may import only modules of its own layer or below (and within a
# layer, no circle).  data flows data -> params -> kernels | reference -> trainer ->
# sweep -> searches, report -> CLI.
LAYERS = [
    ["fastsoftmax.host"],
    ["fastsoftmax.checks", "fastsoftmax.data"],
    ["fastsoftmax.params"],
    ["fastsoftmax.optimizers"],
    ["fastsoftmax.kernels", "fastsoftmax.reference"],
    ["fastsoftmax.trainer"],
    ["fastsoftmax.estimator", "fastsoftmax.sweep"],
    ["fastsoftmax.report", "fastsoftmax.search"],
    ["fastsoftmax.cli"],
    # the commands, and the package's own face
    ["fastsoftmax.sweep.__main__", "fastsoftmax.report.__main__", "fastsoftmax"],
]


def _module_name(path: Path) -> str:
    parts = ("fastsoftmax",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set) -> set:
    """The fastsoftmax modules ``name`` imports (a name imported from a package counts
    as its module when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "fastsoftmax"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "fastsoftmax":
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                found.add(child if child in known else source)
    return {m for m in found if m in known and m != name}


def _graph() -> dict:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} belongs to no layer: add it to LAYERS"
    return rank


def test_the_graph_reads_the_package():
    graph = _graph()
    assert "fastsoftmax.kernels.epoch" in graph and "fastsoftmax.sweep.engine" in graph
    assert "fastsoftmax.kernels.layout" in graph["fastsoftmax.kernels.epoch"]
    assert "fastsoftmax.kernels" in graph["fastsoftmax.trainer"]


def _upward(graph: dict) -> list:
    return [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
            for a, targets in sorted(graph.items()) for b in sorted(targets)
            if _layer(b) > _layer(a)]


def _circles(graph: dict) -> list:
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_every_import_points_down():
    up = _upward(_graph())
    assert not up, "\n".join(up)


def test_no_import_circle():
    circles = _circles(_graph())
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_an_upward_edge_and_a_circle_are_seen():
    """The checks themselves: the kernels reaching up into the sweep, and the circle the
    old checks <-> params pair made."""
    graph = {"fastsoftmax.kernels.epoch": {"fastsoftmax.sweep.plan"},
             "fastsoftmax.checks": {"fastsoftmax.params"},
             "fastsoftmax.params": {"fastsoftmax.checks"}}
    assert _upward(graph) == ["fastsoftmax.checks (layer 1) imports fastsoftmax.params (layer 2)",
                              "fastsoftmax.kernels.epoch (layer 4) imports fastsoftmax.sweep.plan "
                              "(layer 6)"]
    assert _circles(graph) == [["fastsoftmax.checks", "fastsoftmax.params", "fastsoftmax.checks"]]


MAX_LINES = 80  # a function a reader can hold at once, docstring included


def _long_functions(source: str, name: str) -> list:
    return [f"{name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]


def test_no_function_is_longer_than_80_lines():
    long = [row for name, path in _modules().items()
            for row in _long_functions(path.read_text(), name)]
    assert not long, "\n".join(long)


def test_a_long_function_would_be_seen():
    def source(n_lines):  # a def line and n_lines - 1 statements
        return "def f():\n" + "".join(f"    x = {i}\n" for i in range(n_lines - 1))
    assert _long_functions(source(MAX_LINES + 1), "m") == ["m:1 f: 81 lines"]
    assert _long_functions(source(MAX_LINES), "m") == []
