"""The inference key of the tools that ask the server (``offline.bulk``, ``offline.squad``,
``perf.load_test``): ``--api-key HEADER=VALUE``, else $ELECTRA_QA_API_KEY, parsed in one place and handed to
``TritonQA(api_key=...)`` (no server needed)."""

import argparse
import json

import pytest

import offline.bulk
import offline.squad
import perf.load_test
from client import QAError, TritonQA
from client._protocol import request_headers
from serving.admin import API_KEY_ENV, add_api_key_option

SECRET = "s3cret-value"
SUMMARY = ("skipped", "answered", "failed", "seconds", "questions_per_s")  # of offline.bulk.run


def parse(argv, monkeypatch, env=None):
    if env is None:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(API_KEY_ENV, env)
    parser = argparse.ArgumentParser()
    add_api_key_option(parser)
    return parser.parse_args(argv).api_key


def test_the_flag_then_the_environment_give_the_key_as_a_header_value_pair(monkeypatch):
    assert parse([], monkeypatch) is None
    assert parse([], monkeypatch, env="") is None
    assert parse(["--api-key", f"x-api-key={SECRET}"], monkeypatch) == ("x-api-key", SECRET)
    assert parse([], monkeypatch, env=f"x-team-key={SECRET}") == ("x-team-key", SECRET)
    assert parse(["--api-key", "x-api-key=flag"], monkeypatch, env=f"x-team-key={SECRET}") == ("x-api-key", "flag")
    assert parse(["--api-key", "x-api-key=a=b"], monkeypatch) == ("x-api-key", "a=b")


@pytest.mark.parametrize(("argv", "env"), [(["--api-key", SECRET], None), ([], SECRET), (["--api-key", "x="], None)])
def test_a_key_not_in_header_value_form_is_a_usage_error_that_does_not_show_it(monkeypatch, capsys, argv, env):
    with pytest.raises(SystemExit) as stopped:
        parse(argv, monkeypatch, env)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--api-key: takes HEADER=VALUE" in err and SECRET not in err


def test_the_client_takes_the_pair_and_sends_it_where_tritons_restricted_protocol_reads_it():
    assert request_headers(None, ("x-team-key", SECRET), "x-api-key") == {"triton-grpc-protocol-x-team-key": SECRET}
    with TritonQA("localhost:1", api_key=("x-team-key", SECRET)) as qa:
        assert qa.headers == {"triton-grpc-protocol-x-team-key": SECRET}


def test_make_bulk_passes_the_key_to_its_client(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(offline.bulk, "run", lambda *a, **kw: seen.update(kw) or dict.fromkeys(SUMMARY, 0))
    monkeypatch.setenv(API_KEY_ENV, f"x-api-key={SECRET}")
    assert offline.bulk.main([str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")]) == 0
    assert seen["api_key"] == ("x-api-key", SECRET)


def test_make_eval_passes_the_key_to_its_client(monkeypatch, tmp_path):
    seen = {}

    def predict(*args, **kwargs):
        seen.update(kwargs)
        raise QAError("stop here")

    data = tmp_path / "squad.json"
    data.write_text(json.dumps({"data": []}))
    monkeypatch.setattr(offline.squad, "predict", predict)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    argv = ["--data", str(data), "--out", str(tmp_path / "p.json"), "--api-key", f"x-api-key={SECRET}"]
    assert offline.squad.main(argv) == 2
    assert seen["api_key"] == ("x-api-key", SECRET)


def test_make_perf_sends_the_key_to_perf_analyzer_as_a_grpc_header(monkeypatch, tmp_path):
    seen = {}

    def measure(perf_analyzer, admin, headers, *args, **kwargs):
        seen.update(headers)
        raise perf.load_test.PerfAnalyzerError(3, "stop here")

    monkeypatch.setattr(perf.load_test, "find_perf_analyzer", lambda: "perf_analyzer")
    monkeypatch.setattr(perf.load_test, "composing_models", lambda admin, model: [])
    monkeypatch.setattr(perf.load_test, "measure", measure)
    monkeypatch.setenv(API_KEY_ENV, f"x-api-key={SECRET}")
    argv = ["--admin-key", "x-admin-key=admin", "--out", str(tmp_path / "perf")]
    assert perf.load_test.main(argv) == 3
    assert seen == {"triton-grpc-protocol-x-admin-key": "admin", "triton-grpc-protocol-x-api-key": SECRET}
