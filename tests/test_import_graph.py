"""dpot's import graph: no cycle between its modules, and the layering arrows that must never appear.

Every import executed at run time counts: module level, inside functions and methods (lazy imports), inside
``try`` / ``if`` blocks; imports under ``if TYPE_CHECKING:`` never run, so the layering arrows ignore them, but
the cycle check counts them too (a type-only cycle still says two modules need each other: bench/study/results.py
and runner.py did, until what both need went to bench/study/layout.py). ``from pkg import submodule`` counts as an
import of the submodule. A cycle makes import order matter and was how bench/cli.py and bench/study.py broke; a
lazy import is still a dependency, so it is held to the same arrows.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Layer -> the layers it never imports (a layer is a module or package prefix: "dpot.ot" covers dpot.ot.*).
NEVER: dict[str, tuple[str, ...]] = {
    # the OT core is torch + numpy: no config module but the OT section's schema (a leaf: no LeRobot), no trainer,
    # no data pipeline
    "dpot.ot": ("dpot.config", "dpot.train", "dpot.data", "dpot.policy", "dpot.analysis", "dpot.autopilot",
                "dpot.bench", "dpot.demo"),
    # the analysis reads logs only: it never imports the trainer or what the trainer is made of
    "dpot.analysis": ("dpot.train", "dpot.ot", "dpot.policy", "dpot.data", "dpot.config", "dpot.autopilot",
                      "dpot.bench", "dpot.demo"),
    # the trainer knows nothing of the tools that read or drive its runs
    "dpot.train": ("dpot.analysis", "dpot.autopilot", "dpot.bench", "dpot.demo"),
    "dpot.data": ("dpot.train", "dpot.ot", "dpot.policy", "dpot.analysis", "dpot.autopilot", "dpot.bench",
                  "dpot.demo"),
    "dpot.policy": ("dpot.train", "dpot.ot", "dpot.data", "dpot.analysis", "dpot.autopilot", "dpot.bench",
                    "dpot.demo"),
    # the autopilot trains and evaluates through the command lines (every candidate is a normal run directory)
    "dpot.autopilot": ("dpot.train", "dpot.ot", "dpot.policy", "dpot.data", "dpot.bench", "dpot.demo"),
}
# Known cycles, each closed only by lazy (in-function) imports, stated here until they are removed: the test fails
# on any other cycle, and when one of these is gone (then delete it here). None today.
KNOWN_CYCLES: list[list[str]] = []
# Leaves: modules that import nothing of dpot's but these.
LEAVES: dict[str, tuple[str, ...]] = {
    "dpot.errors": (),
    "dpot.data.seeds": (),   # the salts of every seeded stream: a leaf any layer may import (NEVER exempts it)
    "dpot.atomic": ("dpot.errors",),
    "dpot.metrics_log": ("dpot.atomic", "dpot.errors"),
    "dpot.metric_names": (),  # the OT metric names, spelled once: producers and readers import it
    "dpot.intervals": (),     # the Wilson / Newcombe intervals: evaluation, the study and the domain probe
    "dpot.policy.traits": (),  # what dpot knows of each policy type, as data: the config loader and the report read it
    # the ot section's schema (cost-term kinds, OTConfig), torch- and LeRobot-free: the OT core computes its kinds
    "dpot.config.ot": ("dpot.errors", "dpot.metric_names", "dpot.ot.registry"),  # the registry: lazily, ot.method
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports that never run."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for stmt in node.body:
                out |= {id(n) for n in ast.walk(stmt)}
    return out


def _imports(name: str, source: str, mods, *, is_package: bool = False,
             type_checking: bool = False) -> dict[str, int]:
    """dpot module -> line of its first run-time import in ``source`` (module ``name``), anywhere in the file;
    ``type_checking``: the imports under ``if TYPE_CHECKING:`` too."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source)
    skip = set() if type_checking else _type_checking_only(tree)
    deps: dict[str, int] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found = {a.name for a in node.names}
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
            found = subs if len(subs) == len(node.names) else subs | {base}
        for dep in found:
            if dep in mods and dep != name:
                deps[dep] = min(deps.get(dep, node.lineno), node.lineno)
    return deps


def _graph(type_checking: bool = False) -> dict[str, dict[str, int]]:
    mods = _modules()
    return {name: _imports(name, path.read_text(), mods, is_package=path.name == "__init__.py",
                           type_checking=type_checking)
            for name, path in mods.items()}


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_detector_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_parser_reads_lazy_imports_and_skips_type_checking():
    mods = {"p", "p.a", "p.b", "p.c", "p.d", "p.e"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import p.a\n"
        "if TYPE_CHECKING:\n    from p import e\n"
        "def f():\n    from p import b\n"
        "class K:\n    def m(self):\n        try:\n            from .c import x\n        except ImportError:\n"
        "            pass\n"
        "    def n(self):\n        from . import d\n"
    )
    assert _imports("p.z", source, mods) == {"p.a": 2, "p.b": 6, "p.c": 10, "p.d": 14}
    assert _imports("p.z", source, mods, type_checking=True) == {"p.a": 2, "p.e": 4, "p.b": 6, "p.c": 10, "p.d": 14}


def test_no_import_cycle_between_dpot_modules():
    graph = _graph()
    assert "dpot.bench.cli" in graph and "dpot.train.loop" in graph
    assert graph["dpot.train.loop"], "the import graph came out empty: the parser is broken"
    assert "dpot.train.loop" in graph["dpot.demo"], "dpot.demo's lazy import of the trainer was not seen"
    assert sorted(find_cycles({k: set(v) for k, v in graph.items()})) == sorted(KNOWN_CYCLES)


def test_no_import_cycle_even_through_type_checking_imports():
    """A cycle closed by ``if TYPE_CHECKING:`` imports never runs, but its modules still need each other: none."""
    graph = _graph(type_checking=True)
    assert graph["dpot.train.loop"], "the import graph came out empty: the parser is broken"
    assert find_cycles({k: set(v) for k, v in graph.items()}) == []


def test_layers_never_import_what_they_must_not():
    graph = _graph()
    bad = [f"{mod} -> {dep} (line {line})" for mod, deps in sorted(graph.items()) for dep, line in sorted(deps.items())
           for layer, banned in NEVER.items()
           if _in(mod, layer) and dep not in LEAVES and any(_in(dep, b) for b in banned)]
    assert bad == []
    for leaf, allowed in LEAVES.items():
        assert set(graph[leaf]) <= set(allowed), (leaf, graph[leaf])
    assert all(any(_in(m, layer) for m in graph) for layer in NEVER), "a layer of NEVER names no module"
