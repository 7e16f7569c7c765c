"""The architecture as tests: no import cycles (lazy imports included), the driver side imports
no torch, every module's docstring-level contract holds (one module per job of the flow)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "seqbench"
# the driver side: spec loading, executors, the store, results, reports, the CLI's parsing
DRIVER_MODULES = [
    "seqbench.catalog", "seqbench.config", "seqbench.config.load", "seqbench.config.expand",
    "seqbench.config.overrides", "seqbench.config.resolve", "seqbench.execution.sweep",
    "seqbench.execution.local", "seqbench.execution.frontier", "seqbench.execution.nightly",
    "seqbench.execution.ray_executor", "seqbench.recording.store", "seqbench.recording.reader",
    "seqbench.recording.validate", "seqbench.recording.rows", "seqbench.results",
    "seqbench.results.report", "seqbench.results.plots", "seqbench.results.compare",
    "seqbench.results.complexity", "seqbench.cli", "seqbench.cli.progress",
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the seqbench modules it imports anywhere (module level or inside functions)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for target in targets:
                if target.startswith("seqbench"):
                    found = resolve(target)
                    # a package's __init__ importing its own submodules is not a cycle
                    if found and found != name and not found.startswith(name + "."):
                        edges.add(found)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle_even_through_lazy_imports():
    graph = import_graph()
    assert len(graph) > 40
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_driver_side_does_not_import_torch_or_model_code():
    code = ("import importlib, json, sys\n"
            f"for name in {DRIVER_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "from seqbench.cli import build_parser\n"
            "from seqbench.cli import COMMANDS\n"
            "for command in COMMANDS:\n"
            "    build_parser(command)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or\n"
            "      m.startswith(('torch.', 'seqbench.worker')))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


def test_worker_modules_never_import_driver_only_packages():
    """The worker side may use the torch-free contracts (config's Job, recording's rows) but
    never the executors, the results/report code or the CLI."""
    graph = import_graph()
    forbidden = ("seqbench.execution.sweep", "seqbench.execution.frontier",
                 "seqbench.execution.nightly", "seqbench.results", "seqbench.cli")
    for name, edges in graph.items():
        if name.startswith("seqbench.worker"):
            bad = [e for e in edges if e.startswith(forbidden)]
            assert not bad, f"{name} imports {bad}"
