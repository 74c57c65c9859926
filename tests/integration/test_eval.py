"""make eval end to end: a small SQuAD file through the running server, predictions in the official format,
and EM/F1 equal to an independent computation on the predictions it wrote."""

import collections
import json
import re
import string
import subprocess

import pytest

from testkit.cases import CASES
from tests.conftest import ROOT


def independent_scores(dataset, predictions):
    """A separate, plain re-statement of the official v1.1 metric (not offline.metric)."""

    def norm(s):
        s = s.lower()
        s = "".join(c for c in s if c not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(p, g):
        p, g = norm(p).split(), norm(g).split()
        same = sum((collections.Counter(p) & collections.Counter(g)).values())
        return 0.0 if same == 0 else 2 * (same / len(p)) * (same / len(g)) / (same / len(p) + same / len(g))

    em = f = n = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa["answers"]]
                em += max(float(norm(predictions[qa["id"]]) == norm(g)) for g in golds)
                f += max(f1(predictions[qa["id"]], g) for g in golds)
                n += 1
    return 100 * em / n, 100 * f / n


@pytest.fixture
def squad_file(tmp_path, reference):
    """Half the gold answers are what the model answers (so EM is neither 0 nor 100), half are not."""
    qas = []
    for i, (name, (question, context)) in enumerate(CASES.items()):
        predicted = reference(question=question, context=context)["answer"]
        gold = predicted if i % 2 == 0 else context.split()[0]
        qas.append(
            {
                "context": context,
                "qas": [
                    {
                        "id": f"q{i}-{name}",
                        "question": question,
                        "answers": [{"text": gold, "answer_start": context.find(gold)}],
                    }
                ],
            }
        )
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "cases", "paragraphs": qas}]}))
    return path


def make_eval(triton_server, data, out) -> subprocess.CompletedProcess:
    """``make eval`` against the test server; it must succeed."""
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "eval",
            f"DATA={data}",
            f"OUT={out}",
            f"URL={triton_server.grpc_url}",
            f"REPOSITORY={triton_server.repository}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_make_eval_writes_official_predictions_and_prints_em_f1(triton_server, squad_file, tmp_path):
    out = tmp_path / "predictions.json"
    result = make_eval(triton_server, squad_file, out)
    dataset, predictions = json.loads(squad_file.read_text()), json.loads(out.read_text())
    ids = [qa["id"] for p in dataset["data"][0]["paragraphs"] for qa in p["qas"]]
    assert sorted(predictions) == sorted(ids) and all(isinstance(v, str) for v in predictions.values())
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"EM (\d+\.\d\d) F1 (\d+\.\d\d)", last)
    assert match, last
    em, f1 = independent_scores(dataset, predictions)
    assert (float(match.group(1)), float(match.group(2))) == (round(em, 2), round(f1, 2))
    assert 0 < em < 100
    assert "not the model card's" in result.stdout and "electra-qa-tiny" in result.stdout


def test_make_eval_without_data_explains_its_usage():
    result = subprocess.run(["make", "--no-print-directory", "eval"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "usage: make eval DATA=" in result.stderr


def test_make_eval_on_squad_v2_reports_has_answer_and_no_answer_splits(triton_server, tmp_path):
    question, context = CASES["squad"]
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "has",
                                "question": question,
                                "is_impossible": False,
                                "answers": [{"text": "Denver Broncos", "answer_start": context.find("Denver Broncos")}],
                            },
                            {
                                "id": "none",
                                "question": "What is the capital of Mars?",
                                "is_impossible": True,
                                "answers": [],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    path, out = tmp_path / "v2.json", tmp_path / "predictions.json"
    path.write_text(json.dumps(data))
    result = make_eval(triton_server, path, out)
    scores = json.loads(result.stdout[result.stdout.index("{") : result.stdout.index("}") + 1])
    assert scores["HasAns_total"] == 1 and scores["NoAns_total"] == 1
    assert set(json.loads(out.read_text())) == {"has", "none"}
    assert "SQuAD v2.0" in result.stderr
