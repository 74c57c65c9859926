"""Every Python block of README.md and docs/ runs, against the test server and on the test checkpoint: the hub id
becomes the tiny checkpoint's directory, ``localhost:8001`` (and the docs' other addresses) the test server's, and
the names a block leaves to the reader (``q1``, ``pairs``, a ``questions.jsonl``) are given. A renamed function or
option fails here."""

from __future__ import annotations

import json

import pytest

from testkit.cases import CASES
from tests.conftest import code_blocks

BLOCKS = code_blocks("python")
HUB_ID = "valhalla/electra-base-discriminator-finetuned_squadv1"


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_python_blocks_run(where, block, triton_server, tiny_checkpoint, tmp_path, monkeypatch):
    from client import TritonQA

    source = block.replace(HUB_ID, str(tiny_checkpoint))
    for address in ("localhost:8001", "qa.internal:8001"):
        source = source.replace(address, triton_server.grpc_url)
    (q1, c1), (q2, c2) = CASES["squad"], CASES["card"]
    (tmp_path / "questions.jsonl").write_text(
        "\n".join(json.dumps({"question": q, "context": c}) for q, c in CASES.values()) + "\n"
    )
    (tmp_path / "ca.pem").write_text("")  # read, not used: the block only builds its client
    monkeypatch.chdir(tmp_path)
    with TritonQA(triton_server.grpc_url, timeout_s=60) as qa:
        namespace = {"json": json, "qa": qa, "pairs": list(CASES.values()), "q1": q1, "c1": c1, "q2": q2, "c2": c2}
        namespace["TritonQA"] = TritonQA
        exec(compile(source, where, "exec"), namespace)


def test_the_javascript_block_asks_as_the_python_client_does(triton_server, reference, tmp_path):
    """docs/client.md's Node.js example, as its shell block says to run it (the descriptors from
    ``python -m client.protos``, the npm packages it pins): the pipeline's answer, and INVALID_ARGUMENT with the
    server's message for an empty question."""
    import re
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT, as_list

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed here")
    ((where, script),) = code_blocks("javascript")
    (tmp_path / "ask.js").write_text(script)
    shell = next(block for _, block in code_blocks("bash") if "node ask.js" in block)
    install = re.search(r"^npm install (.+?)\s*$", shell, re.M).group(1).split()
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", *install],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run([sys.executable, "-m", "client.protos", str(tmp_path / "triton.protoset")], cwd=ROOT, check=True)

    def node(question, context):
        run = subprocess.run(
            ["node", "ask.js", triton_server.grpc_url, question, context],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return run.returncode, json.loads(run.stdout)

    question, context = CASES["squad"]
    status, answer = node(question, context)
    (expected,) = as_list(reference(question=question, context=context))
    assert status == 0, answer
    assert (answer["answer"], answer["start"], answer["end"]) == (
        expected["answer"],
        expected["start"],
        expected["end"],
    )
    assert answer["score"] == pytest.approx(expected["score"], rel=1e-4)
    status, refused = node("  ", context)
    assert status == 1 and refused["status"] == "INVALID_ARGUMENT", refused
    assert "question 0 is empty or only whitespace" in refused["message"], where
