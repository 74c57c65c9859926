"""Shared fixtures: a random-weight tiny ELECTRA QA checkpoint (fixed seed, real vocabulary) and the
reference pipeline on it (transformers 4.57.6)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from serving.checkpoints import build_random_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SCORE_RTOL = 1e-4


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
