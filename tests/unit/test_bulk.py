"""``python -m offline.bulk``'s input and resume, without a server: bad lines become error records, a file that is
neither JSON Lines nor SQuAD JSON is refused in one line, and any JSON id resumes."""

import json
import math

import pytest

from offline.bulk import main, resume
from offline.records import read_records

QUESTION = {"question": "Who wrote it?", "context": "Ada wrote it."}


def line(**item) -> bytes:
    return json.dumps(QUESTION | item).encode() + b"\n"


def test_lines_not_utf8_or_not_json_become_error_records_and_the_rest_is_read(tmp_path):
    source = tmp_path / "q.jsonl"
    source.write_bytes(
        b'{"id": "latin-1", "question": "Qui a \xe9crit?", "context": "Ada."}\n'  # an invalid UTF-8 byte, first line
        + line(id="a")
        + b"{not json\n"
        + b'{"id": "\\ud800", "question": "Who?", "context": "Ada."}\n'  # a lone surrogate, as a JSON escape
        + b"[1, 2]\n"
        + b"\n"
        + line(id=None)
        + b'{"id": "cut", "question": "Wh'  # a last line cut short
    )
    records, total = read_records(source)
    records = list(records)
    assert total == len(records) == 7
    assert [r.id for r in records] == [1, "a", 3, "\ud800", 5, None, 8]
    problems = [r.problem for r in records]
    assert problems[0] == "line 1: not UTF-8 (byte 38: invalid continuation byte)"
    assert problems[2].startswith("line 3: not JSON (")
    assert problems[4] == "line 5: not a JSON object"
    assert problems[6].startswith("line 8: not JSON (Unterminated string")
    assert problems[1] is problems[3] is problems[5] is None
    assert (records[1].question, records[1].context) == (QUESTION["question"], QUESTION["context"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"version": "1.1", "data": [{"title": "t", "paragraphs": [{"con', "is neither SQuAD JSON (Unterminated"),
        (b'{\n  "data": [\n', "is neither SQuAD JSON (Expecting value: line 3"),
        (b'{"question": "Who?", "cont\n' + line(id="b"), "nor JSON Lines (its first line is not a JSON object)"),
        (
            b'{"data": [{"title": "t"}]}',
            "is not SQuAD JSON (data, paragraphs, qas with id, question): no key 'paragraphs'",
        ),
        (b'{\n "data": "caf\xe9"}', "is not UTF-8 (byte 16: invalid continuation byte)"),
    ],
    ids=["squad-cut-short", "pretty-squad-cut-short", "first-line-cut-short", "not-squad-shaped", "not-utf8"],
)
def test_a_file_neither_jsonl_nor_squad_is_refused_in_one_line_with_exit_status_2(tmp_path, capsys, content, message):
    source, out = tmp_path / "in.json", tmp_path / "out.jsonl"
    source.write_bytes(content)
    assert main([str(source), str(out), "--url", "127.0.0.1:1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"refused: {source} ") and message in err, err
    assert not out.exists() or out.read_text() == ""


def test_a_missing_input_is_refused_with_exit_status_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.jsonl"), str(tmp_path / "out.jsonl"), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"refused: cannot read {tmp_path / 'none.jsonl'}: No such file or directory\n"


IDS = ["\ud800", math.nan, None, 3, 2.5, -0.0, math.inf, {"k": [1, "é"]}, [], True, "ü"]


def test_resume_accepts_any_json_id_nan_and_lone_surrogates_included(tmp_path):
    source, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    source.write_bytes(b"".join(line(id=i) for i in IDS) + line(id="next"))
    out.write_text("".join(json.dumps({"id": i, "answer": "x"}) + "\n" for i in IDS))
    records, _ = read_records(source)
    assert resume(out, records) == len(IDS)
    assert next(records).id == "next"


@pytest.mark.parametrize(("given", "written"), [(1, 1.0), (1, True), (0, None), ("1", 1), (math.nan, None)])
def test_resume_tells_ids_apart_by_their_json_value(tmp_path, given, written):
    source, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    source.write_bytes(line(id=given))
    out.write_text(json.dumps({"id": written, "answer": "x"}) + "\n")
    with pytest.raises(SystemExit, match="written from another input"):
        resume(out, read_records(source)[0])
