"""What the server runs is one list (serving.server_packages): the project's packages and requirements-server.txt.
The modules the model adapters import (and what those import, transitively) and the containers' probe commands
must all be in it, in the image's build context, and in the GPU kit; nothing relies on PYTHONPATH."""

from __future__ import annotations

import ast
import re
import sys

import yaml

from perf import gpu_kit
from serving import server_packages
from tests.conftest import ROOT
from tests.imports import FIRST_PARTY, closure, imported_modules, module_file
from tests.integration.image import build_context

ADAPTERS = sorted(ROOT.glob("model_repository/*/1/model.py"))


def probe_modules() -> set[str]:
    """The modules the containers run with ``python3 -m`` (the Deployment's probes and hooks)."""
    text = (ROOT / "deploy" / "k8s" / "base" / "deployment.yaml").read_text()
    commands = []
    for node in _walk(yaml.safe_load(text)):
        if isinstance(node, dict) and isinstance(node.get("command"), list):
            commands.append(node["command"])
    return {c[c.index("-m") + 1] for c in commands if "-m" in c}


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


def server_modules() -> set[str]:
    adapters = set().union(*(imported_modules(path) for path in ADAPTERS))
    return closure(adapters | probe_modules())


def missing(modules: set[str], packages: list[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] not in packages}


def test_the_adapters_and_probes_import_only_listed_packages():
    modules = server_modules()
    assert {"runtime.backend", "runtime.onnx_runner", "preprocessing.tokenize", "serving.admin"} <= modules
    assert not missing(modules, server_packages.project_packages())


def third_party_imports(modules: set[str]) -> dict[str, set[str]]:
    """The third-party top-level modules that ``modules`` import (any depth of their code): name -> importers."""
    found: dict[str, set[str]] = {}
    for module in modules:
        for node in ast.walk(ast.parse(module_file(module).read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - FIRST_PARTY - set(sys.stdlib_module_names):
                found.setdefault(top, set()).add(module)
    return found


def test_the_server_imports_only_what_the_image_installs():
    """Every third-party module the server's code imports is a package of requirements-server.txt or, for the
    torch engine, of requirements-gpu.txt (the image's gpu target adds it)."""
    installed = {
        requirement.name.replace("-", "_")
        for path in (server_packages.SERVER_REQUIREMENTS, server_packages.GPU_REQUIREMENTS)
        for requirement in server_packages.requirements(path, "3.10")
    }
    imported = third_party_imports(server_modules())
    assert {"torch", "safetensors", "tokenizers", "numpy"} <= set(imported)
    assert {name: sorted(by) for name, by in imported.items() if name not in installed} == {}


def test_a_list_without_a_package_the_adapters_import_is_caught():
    packages = [p for p in server_packages.project_packages() if p != "runtime"]
    assert "runtime.backend" in missing(server_modules(), packages)


def test_every_server_module_is_in_the_image_build_context_and_the_gpu_kit():
    context, kit = set(build_context(ROOT)), set(gpu_kit.project_files())
    files = {str(module_file(m).relative_to(ROOT)) for m in server_modules()}
    assert files <= context, files - context
    assert files <= kit, files - kit
    assert {"pyproject.toml", "requirements-server.txt"} <= context


def test_the_build_context_leaves_out_what_the_image_does_not_need():
    context = build_context(ROOT)
    assert not [f for f in context if f.startswith((".git/", ".venv", "model_repository/", "tests/", "checkpoints/"))]
    assert sum((ROOT / f).stat().st_size for f in context) < 2 * 2**20


def test_the_image_installs_the_project_with_its_server_extra_and_no_path_variable():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "PYTHONPATH" not in re.sub(r"#.*", "", dockerfile)
    assert re.search(r'pip install [^\n]*"/opt/electra_qa/src\[server\]"', dockerfile)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'optional-dependencies.server = { file = ["requirements-server.txt"] }' in pyproject


def test_no_server_code_sets_pythonpath():
    for path in [*ROOT.glob("serving/*.py"), *ROOT.glob("runtime/*.py"), *ADAPTERS]:
        assert not re.search(r"""\[["']PYTHONPATH["']\]\s*=""", path.read_text()), path


def test_the_gpu_kit_carries_the_servers_packages_but_those_it_names():
    for version in gpu_kit.PYTHON_VERSIONS:
        server = server_packages.server_distributions(version)
        assert set(gpu_kit.SERVER_PACKAGES_LEFT_OUT) <= set(server)  # no stale reasons
        assert set(server) - set(gpu_kit.SERVER_PACKAGES_LEFT_OUT) <= set(gpu_kit.site_packages(version))
