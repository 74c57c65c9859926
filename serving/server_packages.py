"""What the server runs, as one list: this project's packages (``pyproject.toml``, ``[tool.setuptools]
packages``) with the pins of its ``server`` extra (``requirements-server.txt``), and on a GPU the torch engine's
packages beside them (``requirements-gpu.txt``, the image's gpu target).

The image installs ``.[server]`` (docker/Dockerfile), make serve's environments install the same requirements
and the project, and the GPU kit carries the packages and pins read here; tests/unit/test_server_packages.py
derives what the model adapters import and fails when this list misses a module.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
SERVER_REQUIREMENTS = ROOT / "requirements-server.txt"
GPU_REQUIREMENTS = ROOT / "requirements-gpu.txt"


def project_packages(pyproject: Path = PYPROJECT) -> list[str]:
    """The top-level packages the project's wheel holds."""
    return list(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"])


def requirements(path: Path, python_version: str) -> list[Requirement]:
    """The requirements of a requirements file (no options, no nested files) that apply on ``python_version``."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        environment = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
        if requirement.marker is None or requirement.marker.evaluate(environment):
            found.append(requirement)
    return found


def pins(paths: list[Path], python_version: str) -> dict[str, str]:
    """name -> the pinned (``==``) version of every requirement of ``paths`` on ``python_version``."""
    found = {}
    for path in paths:
        for requirement in requirements(path, python_version):
            version = next((s.version for s in requirement.specifier if s.operator == "=="), None)
            if version:
                found[canonicalize_name(requirement.name)] = version
    return found


def server_distributions(python_version: str) -> list[str]:
    """The server's third-party distributions on ``python_version`` (canonical names)."""
    return [canonicalize_name(r.name) for r in requirements(SERVER_REQUIREMENTS, python_version)]
