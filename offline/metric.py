"""The official SQuAD metric (v1.1 evaluate script; v2.0 adds HasAns / NoAns splits).

Normalisation: lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace. EM is
normalised string equality, F1 the token-level overlap; each takes the max over a question's gold answers.
A v2.0 question without answers has the single gold answer "".

The two official scripts differ on answers that normalise to nothing (say ": the"): v1.1 gives them F1 0
even against an identical gold answer, v2.0 gives F1 1 when both are empty. Each dataset is scored by its
own version's rule.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Iterable

PUNCTUATION = set(string.punctuation)
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, v2: bool = False) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if v2 and (not predicted or not expected):  # v2.0: an empty answer only matches an empty answer
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best(metric, prediction: str, golds: Iterable[str]) -> float:
    return max(metric(prediction, gold) for gold in golds)


def is_v2(dataset: dict) -> bool:
    """SQuAD v2.0 data: its version says so, or its questions carry ``is_impossible``."""
    return str(dataset.get("version", "")).lstrip("v").startswith("2") or any(
        "is_impossible" in qa for article in dataset["data"] for p in article["paragraphs"] for qa in p["qas"]
    )


def questions(dataset: dict) -> list[dict]:
    """Every question of a SQuAD-format dataset: id, question, context, gold answers ([""] if none)."""
    found = []
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa.get("answers", [])]
                impossible = qa.get("is_impossible", False) or not golds
                found.append(
                    {
                        "id": qa["id"],
                        "question": qa["question"],
                        "context": paragraph["context"],
                        "golds": [""] if impossible else golds,
                        "has_answer": not impossible,
                    }
                )
    return found


def evaluate(dataset: dict, predictions: dict[str, str]) -> dict[str, float]:
    """EM and F1 in percent (the official scripts' scale); for v2.0 data also HasAns_* and NoAns_*.
    A question without a prediction scores 0."""
    v2 = is_v2(dataset)
    scores = {"all": [], "has": [], "no": []}
    for q in questions(dataset):
        prediction = predictions.get(q["id"])
        pair = (
            (0.0, 0.0)
            if prediction is None
            else (best(exact_match, prediction, q["golds"]), max(f1(prediction, gold, v2) for gold in q["golds"]))
        )
        scores["all"].append(pair)
        scores["has" if q["has_answer"] else "no"].append(pair)
    result = _summary(scores["all"], "")
    if v2:
        result.update(_summary(scores["has"], "HasAns_"))
        result.update(_summary(scores["no"], "NoAns_"))
    return result


def _summary(pairs: list[tuple[float, float]], prefix: str) -> dict[str, float]:
    n = len(pairs)
    return {
        f"{prefix}exact_match": 100.0 * sum(p[0] for p in pairs) / n if n else 0.0,
        f"{prefix}f1": 100.0 * sum(p[1] for p in pairs) / n if n else 0.0,
        f"{prefix}total": n,
    }
