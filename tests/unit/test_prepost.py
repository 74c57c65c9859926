import json
import shutil
from pathlib import Path

import pytest

from perf import prepost
from serving.export import copy_repository


def test_prepost_reports_each_steps_cost_per_question_for_each_batch_size(tiny_checkpoint, tmp_path, capsys):
    repository = copy_repository(Path("model_repository"), tmp_path / "repository")
    tokenizer = repository / "tokenizer" / "1" / "tokenizer.json"
    shutil.copy(tiny_checkpoint / "tokenizer.json", tokenizer)
    out = tmp_path / "prepost.json"

    assert (
        prepost.main(["--tokenizer", str(tokenizer), "--batch", "1", "4", "--min-seconds", "0.01", "--out", str(out)])
        == 0
    )

    report = json.loads(out.read_text())
    rows = report["batches"]
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert 0 < r["tokenizer_library_us"] and 0 < r["decoder_step_us"]
        assert (
            abs(r["tokenizer_and_decoder_us"] - r["tokenizer_step_us"] - r["decoder_step_us"]) <= 0.2
        )  # each rounded to 0.1
    shared = report["shared_context"]
    assert shared["questions_per_request"] == 5 and 0 < shared["shared_context_us_per_question"]
    # the ratio of the unrounded costs; each cost is rounded to 0.1 µs in the report
    ratio = shared["shared_context_us_per_question"] / shared["one_question_per_request_us"]
    assert shared["ratio"] == pytest.approx(ratio, abs=2e-3)
    printed = capsys.readouterr().out
    assert "tokenizer+decoder us/q" in printed and "5 questions about one context per request" in printed


def test_prepost_says_what_to_do_without_an_exported_tokenizer(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        prepost.main(["--tokenizer", str(tmp_path / "tokenizer" / "1" / "tokenizer.json")])
    assert exit.value.code == 2
    assert "export a model first" in capsys.readouterr().err
