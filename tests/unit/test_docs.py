"""The shell blocks of README.md and docs/: every ``make`` target and variable they use exists in the Makefile,
every ``python -m`` tool takes the options they pass, every compose service, path and overlay they name exists.
(The Python blocks run against the test server: tests/integration/test_docs.py.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, code_blocks

MAKEFILE = (ROOT / "Makefile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
BLOCKS = code_blocks("bash")


def commands(block: str) -> list[list[str]]:
    """The block's commands, comments and trailing ``&`` dropped, continuation lines joined, ``&&`` split."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in text.split("\n"):
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in line.strip("()").split("&&"):
            words = shlex.split(part.replace("<", "_").replace(">", "_"))
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
                words = words[1:]
            out.append([w for w in words if w != "&"])
    return out


def test_the_docs_have_shell_blocks():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_shell_blocks_name_what_exists(where, block):
    for words in commands(block):
        tool, args = words[0], words[1:]
        if tool == "make":
            target, *assignments = args
            assert re.search(rf"^{re.escape(target)}:", MAKEFILE, re.M), f"{where}: no make target {target}"
            for assignment in assignments:
                name = assignment.split("=", 1)[0]
                assert f"$({name})" in MAKEFILE, f"{where}: make {target} has no variable {name}"
        elif tool == "python" and args[0] == "-m":
            usage = subprocess.run(
                [sys.executable, "-m", args[1], "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
            )
            assert usage.returncode == 0, f"{where}: python -m {args[1]} --help failed:\n{usage.stderr}"
            for option in (a.split("=")[0] for a in args[2:] if a.startswith("--")):
                assert option in usage.stdout, f"{where}: python -m {args[1]} takes no {option}"
        elif tool == "docker" and args[:1] == ["compose"]:
            services = [a for a in args[2:] if not a.startswith("-")]
            assert set(services) <= set(COMPOSE["services"]), f"{where}: no compose service in {services}"
        elif tool == "docker":
            assert args[0] in ("tag", "push"), f"{where}: docker {args[0]}"
        elif tool in ("kubectl", "helm", "kustomize", "cd"):
            for path in [a for a in args if "/" in a and not a.startswith(("registry.", "electra-qa-", "prometheus-"))]:
                path = path.split("=")[-1]
                assert (ROOT / path).exists(), f"{where}: {tool} names {path}, which does not exist"
        elif tool == "bash":
            assert args[0] == "gpu-kit/run.sh" and (ROOT / "perf" / "gpu_kit_run.sh").exists()
        elif tool == "npm":  # packages pinned to a release, as the test that runs the docs' JavaScript installs them
            assert args[0] == "install" and all(re.fullmatch(r"@?[\w./-]+@\d+\.\d+\.\d+", a) for a in args[1:]), words
        elif tool == "node":  # a script the docs hold as a javascript block (tests/integration/test_docs.py runs it)
            assert args[0].endswith(".js") and code_blocks("javascript"), f"{where}: node {args[0]}"
        else:
            pytest.fail(f"{where}: a shell command this test does not check: {' '.join(words)}")


def heading_anchors(path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_the_docs_reach_a_file_and_heading_that_exist():
    from tests.conftest import DOCS

    for path in (*DOCS, ROOT / "BENCHMARKS.md"):
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            linked = (path.parent / target).resolve() if target else path
            assert linked.exists(), f"{path.name}: link to {target}, which does not exist"
            if anchor and linked.suffix == ".md":
                assert anchor in heading_anchors(linked), f"{path.name}: {target}#{anchor} names no heading"
