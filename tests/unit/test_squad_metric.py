"""The official SQuAD metric on hand-made cases whose values are worked out by hand."""

import pytest

from offline.metric import best, evaluate, exact_match, f1, normalize_answer


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1_value"),
    [
        ("the Denver Broncos", "Denver Broncos", 1.0, 1.0),  # articles dropped
        ("Denver Broncos!", "denver broncos", 1.0, 1.0),  # punctuation and case
        ("an apple a day", "apple   day", 1.0, 1.0),  # all three articles, whitespace collapsed
        ("Denver", "Denver Broncos", 0.0, 2 / 3),  # P = 1, R = 1/2
        ("Denver Broncos team", "the Broncos", 0.0, 0.5),  # P = 1/3, R = 1: 2PR/(P+R) = 0.5
        ("Zoë\u2019s café", "zoë's café", 0.0, 0.5),  # ' is punctuation, ’ is not: 1 of 2 tokens shared
        ("", "Denver", 0.0, 0.0),  # empty prediction
        (": the", ": the", 1.0, 0.0),  # v1.1: normalises to nothing, so no token in common
    ],
)
def test_exact_match_and_f1_of_one_pair(prediction, gold, em, f1_value):
    assert exact_match(prediction, gold) == em
    assert f1(prediction, gold) == pytest.approx(f1_value)


@pytest.mark.parametrize(
    ("prediction", "gold", "f1_value"),
    [
        ("", "", 1.0),  # no answer predicted for a question without answer
        ("Denver", "", 0.0),  # an answer where there is none
        (": the", ": the", 1.0),  # both normalise to nothing: a match in v2.0
        ("Denver", "Denver Broncos", 2 / 3),
    ],
)
def test_v2_f1_treats_empty_answers_as_the_official_v2_script_does(prediction, gold, f1_value):
    assert f1(prediction, gold, v2=True) == pytest.approx(f1_value)


def test_normalize_answer_matches_the_official_script():
    assert normalize_answer("  The  Cat, the HAT (and a bat).  ") == "cat hat and bat"
    assert normalize_answer("théâtre") == "théâtre"  # non-ASCII letters stay


def test_best_takes_the_max_over_gold_answers():
    assert best(exact_match, "Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert best(f1, "Denver", ["Broncos", "Denver Broncos"]) == pytest.approx(2 / 3)


def dataset(qas, version="1.1"):
    return {"version": version, "data": [{"title": "t", "paragraphs": [{"context": "ctx", "qas": qas}]}]}


def test_evaluate_scores_in_percent_and_missing_predictions_score_zero():
    data = dataset(
        [
            {"id": "a", "question": "?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]},
            {"id": "b", "question": "?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]},
        ]
    )
    scores = evaluate(data, {"a": "Denver"})
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(100 * (2 / 3) / 2)
    assert scores["total"] == 2 and "HasAns_exact_match" not in scores


def test_evaluate_v2_splits_has_answer_and_no_answer():
    data = dataset(
        [
            {"id": "a", "question": "?", "answers": [{"text": "Denver", "answer_start": 0}], "is_impossible": False},
            {"id": "b", "question": "?", "answers": [], "is_impossible": True},
            {"id": "c", "question": "?", "answers": [], "is_impossible": True},
        ],
        version="v2.0",
    )
    scores = evaluate(data, {"a": "Denver", "b": "", "c": "something"})
    assert scores["exact_match"] == pytest.approx(100 * 2 / 3)
    assert (scores["HasAns_exact_match"], scores["HasAns_total"]) == (100.0, 1)
    assert (scores["NoAns_exact_match"], scores["NoAns_total"]) == (50.0, 2)
