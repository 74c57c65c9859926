"""The code is layered in floors that import downward only: per-pair code (no Triton) at the bottom, per-execute
batching and the engines above it, tooling and the adapters on top. No module imports itself back, by any path."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.imports import FIRST_PARTY, imported_modules, module_file

# each package's floor: a module imports its own package and lower floors only
FLOORS = {
    "preprocessing": 0,  # per pair: windows, spans, request options and limits
    "client": 0,  # the public client: Answer, TritonQA, AsyncTritonQA
    "runtime": 1,  # per execute: batching of requests, budgets, tensors, the model step's engines
    "serving": 2,  # tooling: export, make serve, admin, supervision
    "offline": 3,  # make bulk, make eval, over the client
    "testkit": 3,  # random checkpoints, cases, inputs and the server launcher the tests and benchmarks share
    "perf": 4,  # benchmarks, load tests, the GPU run
}
ADAPTERS = sorted(ROOT.glob("model_repository/*/1/model.py"))
ADAPTER_PACKAGES = {"preprocessing", "runtime"}


def project_modules() -> dict[str, set[str]]:
    """Every module of the project's packages -> the project's modules it imports (at any depth of its code)."""
    graph = {}
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            graph[name] = {_owning_module(m) for m in imported_modules(path)} - {name}
    return graph


def _owning_module(name: str) -> str:
    """``package.module`` for ``from package.module import function``: the longest prefix that is a module."""
    while not module_file(name):
        name = name.rpartition(".")[0]
    return name


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    def floor(module: str) -> int:
        return FLOORS[module.split(".")[0]]

    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if module.split(".")[0] != target.split(".")[0] and floor(target) >= floor(module)
    )


def test_every_package_has_a_floor():
    assert FIRST_PARTY - {"tests"} == set(FLOORS)


def test_no_module_imports_itself_back():
    assert cycles(project_modules()) == []


def test_packages_import_only_lower_floors():
    assert upward_imports(project_modules()) == []


def test_per_pair_code_imports_neither_triton_nor_torch():
    graph = project_modules()
    per_pair = [m for m in graph if m.startswith("preprocessing")]
    for module in per_pair:
        source = module_file(module).read_text()
        assert "triton_python_backend_utils" not in source and "import torch" not in source, module


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda p: p.parts[-3])
def test_the_adapters_sit_on_top_of_the_per_pair_and_per_execute_floors(adapter):
    assert {m.split(".")[0] for m in imported_modules(adapter)} <= ADAPTER_PACKAGES


def test_a_cycle_and_an_upward_import_are_caught():
    graph = {"runtime.a": {"preprocessing.b"}, "preprocessing.b": {"preprocessing.c"}, "preprocessing.c": {"runtime.a"}}
    assert cycles(graph) == [["preprocessing.b", "preprocessing.c", "runtime.a"]]
    assert upward_imports(graph) == ["preprocessing.c -> runtime.a"]
