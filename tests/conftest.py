"""Shared fixtures: a random-weight tiny ELECTRA QA checkpoint (fixed seed, real vocabulary) and the
reference pipeline on it (transformers 4.57.6)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.checkpoints import build_random_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def tokenizer_config() -> dict[str, str]:
    """The checked-in tokenizer config's parameters: the tests' windowing and limits come from it, as the
    server's do."""
    from runtime.backend import config_file_parameters

    return config_file_parameters(ROOT / "model_repository" / "tokenizer" / "config.pbtxt")


def qa_tokenizer(tokenizer_file: Path, **options):
    """``QATokenizer`` on ``tokenizer_file`` with the checked-in config's windowing."""
    from preprocessing import QATokenizer, WindowSettings

    return QATokenizer(tokenizer_file, WindowSettings.from_config(tokenizer_config()), **options)


SCORE_RTOL = 1e-4


def family_checkpoint(out: Path, family: str) -> Path:
    """The tiny random checkpoint of ``family`` (``python -m testkit.checkpoints --family``) in ``out``, built in a
    process of its own: sentencepiece's trainer and loader crash beside the test process's other native
    libraries."""
    command = [sys.executable, "-m", "testkit.checkpoints", "--size", "tiny", "--family", family, "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "electra-qa-tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def reference(tiny_checkpoint):
    """``pipeline('question-answering')`` as the model card uses it, on the same weights."""
    from transformers import pipeline

    return pipeline("question-answering", model=str(tiny_checkpoint), tokenizer=str(tiny_checkpoint), device=-1)


def as_list(result) -> list[dict]:
    return result if isinstance(result, list) else [result]


def assert_same_answers(got: list[tuple[str, float, int, int]], expected: list[dict]) -> None:
    """Same answers (text, start, end) in the same order, scores within SCORE_RTOL relative."""
    assert [(t, s, e) for t, _, s, e in got] == [(x["answer"], x["start"], x["end"]) for x in expected]
    for (_, score, _, _), x in zip(got, expected):
        assert math.isclose(score, x["score"], rel_tol=SCORE_RTOL), (score, x["score"])


DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def code_blocks(language: str) -> list[tuple[str, str]]:
    """(``file:line``, text) of every fenced ``language`` block of README.md and docs/*.md."""
    blocks = []
    for path in DOCS:
        lines, inside = path.read_text().split("\n"), None
        for number, line in enumerate(lines, start=1):
            if inside is None and line.strip() == f"```{language}":
                inside, start = [], number
            elif inside is not None and line.strip() == "```":
                blocks.append((f"{path.relative_to(ROOT)}:{start}", "\n".join(inside)))
                inside = None
            elif inside is not None:
                inside.append(line)
    return blocks
