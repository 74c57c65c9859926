"""Every Python block of README.md and docs/ runs, against the test server and on the test checkpoint: the hub id
becomes the tiny checkpoint's directory, ``localhost:8001`` (and the docs' other addresses) the test server's, and
the names a block leaves to the reader (``q1``, ``pairs``, a ``questions.jsonl``) are given. A renamed function or
option fails here."""

from __future__ import annotations

import json

import pytest

from perf.cases import CASES
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
