"""Bulk answering against the real server: a long generator with flat client memory and bounded requests in
flight, the async stream, and ``python -m offline.bulk`` / ``make bulk`` end to end with resume."""

import asyncio
import json
import math
import signal
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest

from client import AsyncTritonQA, TritonQA
from testkit.cases import CASES
from tests.conftest import ROOT, as_list, assert_same_answers

SHORT = [
    (f"Who built bridge {i}?", f"Bridge {i} was built by the engineer Ana Núñez in {1800 + i}.") for i in range(10)
]


class CountingQA(TritonQA):
    """A client that records the most requests it ever had outstanding."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock, self.outstanding, self.most = threading.Lock(), 0, 0

    def _run(self, call):
        with self.lock:
            self.outstanding += 1
            self.most = max(self.most, self.outstanding)
        try:
            return super()._run(call)
        finally:
            with self.lock:
                self.outstanding -= 1


def test_ten_thousand_examples_from_a_generator_in_flat_memory(triton_server):
    n, batch_size, in_flight = 10_000, 32, 4
    pulled = [0]

    def examples():
        for i in range(n):
            pulled[0] += 1
            question, context = SHORT[i % len(SHORT)]
            yield {"question": question, "context": context}

    with CountingQA(triton_server.grpc_url, timeout_s=60) as qa:
        expected = [qa.ask(question, context).text for question, context in SHORT]
        ahead = 0
        tracemalloc.start()
        try:
            started = time.monotonic()
            for i, answer in enumerate(qa.ask_stream(examples(), batch_size=batch_size, in_flight=in_flight)):
                assert answer.text == expected[i % len(SHORT)]
                ahead = max(ahead, pulled[0] - (i + 1))
            seconds = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert i + 1 == n
    assert qa.most <= in_flight
    assert ahead <= in_flight * batch_size  # the generator is read only as far as the requests in flight hold
    # streaming peaks at ~0.15 MB; holding the 10,000 answers (list(ask_stream(...))) at ~2.3 MB
    assert peak < 1_000_000, f"peak {peak / 1e6:.2f} MB"
    print(f"{n} answers in {seconds:.1f} s ({n / seconds:.0f}/s), traced peak {peak / 1e3:.0f} kB")


def test_async_stream_matches_the_sync_answers(triton_server, qa):
    async def examples():
        for question, context in CASES.values():
            await asyncio.sleep(0)
            yield {"question": question, "context": context}

    async def main():
        async with AsyncTritonQA(triton_server.grpc_url) as aqa:
            return [answers async for answers in aqa.ask_stream(examples(), top_k=2, batch_size=3, in_flight=2)]

    got = asyncio.run(main())
    assert len(got) == len(CASES)
    for answers, (question, context) in zip(got, CASES.values()):
        expected = qa.top_answers(question, context, 2)
        assert [(a.text, a.start, a.end) for a in answers] == [(a.text, a.start, a.end) for a in expected]


def write_jsonl(path, n):
    """``n`` questions cycling through the parity cases, every third without an id (its line number is)."""
    names = list(CASES)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            question, context = CASES[names[i % len(names)]]
            item = {"question": question, "context": context} | ({} if i % 3 == 0 else {"id": f"q{i}"})
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return [i + 1 if i % 3 == 0 else f"q{i}" for i in range(n)], [names[i % len(names)] for i in range(n)]


def bulk(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "offline.bulk", *map(str, args), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bulk_command_answers_a_file_as_the_pipeline_does_and_resumes_after_a_kill(triton_server, reference, tmp_path):
    source, out = tmp_path / "questions.jsonl", tmp_path / "answers.jsonl"
    ids, cases = write_jsonl(source, 1500)
    # interrupted (SIGKILL) once some answers are written
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "offline.bulk",
            str(source),
            str(out),
            "--url",
            triton_server.grpc_url,
            "--batch-size",
            "4",
            "--in-flight",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (not out.exists() or out.stat().st_size < 20_000) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = len(out.read_bytes().splitlines())
    assert 0 < first < 1500, "the run was not interrupted midway"
    # resumed with make bulk: the answered questions are skipped, a partial last line is rewritten
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "bulk",
            f"IN={source}",
            f"OUT={out}",
            f"URL={triton_server.grpc_url}",
            "BULK_ARGS=--no-progress --batch-size 8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already in" in result.stderr
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == ids  # each question once, in input order
    expected = {name: reference(question=CASES[name][0], context=CASES[name][1]) for name in CASES}
    for line, name in zip(lines, cases):
        assert_same_answers([(line["answer"], line["score"], line["start"], line["end"])], [expected[name]])
    # a finished file: nothing left to do
    again = bulk(source, out, "--url", triton_server.grpc_url)
    assert again.returncode == 0 and "0 answered, 0 failed, 1500 already in" in again.stderr
    assert read_jsonl(out) == lines


def test_bulk_command_reports_bad_lines_in_place_and_reads_squad_json(triton_server, reference, tmp_path):
    question, context = CASES["squad"]
    source, out = tmp_path / "mixed.jsonl", tmp_path / "mixed-answers.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "question": question, "context": context}),
                "{not json",
                json.dumps({"id": "empty", "question": " ", "context": context}),
                "",
                json.dumps({"id": "b", "context": context}),
                json.dumps({"id": "c", "question": question, "context": context}),
            ]
        )
        + "\n"
    )
    result = bulk(source, out, "--url", triton_server.grpc_url, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == ["a", 2, "empty", "b", "c"]
    expected = as_list(reference(question=question, context=context, top_k=2))
    for line in (lines[0], lines[4]):
        assert_same_answers([(x["answer"], x["score"], x["start"], x["end"]) for x in line["answers"]], expected)
    assert lines[1] == {"id": 2, "error": "InvalidInputError", "message": lines[1]["message"]}
    assert lines[1]["message"].startswith("line 2: not JSON")
    assert lines[2]["error"] == "InvalidInputError" and lines[2]["message"] == "question is empty or only whitespace"
    assert lines[3]["message"] == "question must be a string, got NoneType"
    assert "3 answered, 2 failed" not in result.stderr and "2 answered, 3 failed" in result.stderr

    squad = tmp_path / "squad.json"
    squad.write_text(
        json.dumps(
            {
                "version": "1.1",
                "data": [
                    {
                        "title": "t",
                        "paragraphs": [
                            {
                                "context": context,
                                "qas": [
                                    {"id": "s1", "question": question, "answers": []},
                                    {"id": "s2", "question": "Who lost?", "answers": []},
                                ],
                            },
                            {
                                "context": CASES["card"][1],
                                "qas": [{"id": "s3", "question": CASES["card"][0], "answers": []}],
                            },
                        ],
                    }
                ],
            }
        )
    )
    out = tmp_path / "squad-answers.jsonl"
    result = bulk(squad, out, "--url", triton_server.grpc_url)
    assert result.returncode == 0, result.stderr
    lines = read_jsonl(out)
    assert [line["id"] for line in lines] == ["s1", "s2", "s3"]
    assert lines[2]["answer"] == reference(question=CASES["card"][0], context=CASES["card"][1])["answer"]


def test_bulk_command_takes_any_json_id_and_bad_bytes_and_resumes_with_them(triton_server, tmp_path):
    question, context = CASES["squad"]
    ids = ["\ud800", math.nan, None, 7, 2.5, {"k": "é"}, "ü"]
    good = [json.dumps({"id": i, "question": question, "context": context}).encode() + b"\n" for i in ids]
    source, out = tmp_path / "odd.jsonl", tmp_path / "odd-answers.jsonl"
    source.write_bytes(
        b"".join(good[:3])
        + b'{"id": "latin-1", "question": "Qui a \xe9crit?", "context": "Ada."}\n'
        + b'{"id": "surrogate", "question": "\\udc00?", "context": "Ada."}\n'
        + b"".join(good[3:])
        + b'{"id": "cut", "question": "Wh'
    )
    result = bulk(source, out, "--url", triton_server.grpc_url, "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "7 answered, 3 failed" in result.stderr
    full = out.read_bytes()
    assert full.isascii()
    lines = read_jsonl(out)
    assert [json.dumps(line["id"]) for line in lines] == [
        json.dumps(i) for i in ids[:3] + [4, "surrogate"] + ids[3:] + [10]
    ]
    errors = {line["message"].split(" (")[0]: line["error"] for line in lines if "error" in line}
    assert errors == {
        "line 4: not UTF-8": "InvalidInputError",
        "question cannot be encoded as UTF-8: surrogates not allowed": "InvalidInputError",
        "line 10: not JSON": "InvalidInputError",
    }
    assert len({line["answer"] for line in lines if "answer" in line}) == 1
    # interrupted after three lines and part of the fourth: the rerun writes the same file
    kept = full.splitlines(keepends=True)
    out.write_bytes(b"".join(kept[:3]) + kept[3][:10])
    again = bulk(source, out, "--url", triton_server.grpc_url)
    assert again.returncode == 0 and "4 answered, 3 failed, 3 already in" in again.stderr, again.stderr
    assert out.read_bytes() == full
    assert "0 answered, 0 failed, 10 already in" in bulk(source, out, "--url", triton_server.grpc_url).stderr


def test_bulk_command_stops_when_the_server_is_gone_and_says_how_to_resume(tmp_path):
    from tests.integration.conftest import free_port

    source, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    write_jsonl(source, 5)
    result = bulk(source, out, "--url", f"localhost:{free_port()}", "--timeout-s", "2")
    assert result.returncode == 2
    assert "ServerUnavailableError" in result.stderr and "run the same command again to resume" in result.stderr
    assert out.read_text() == ""


def test_a_second_run_on_the_same_output_is_refused_naming_the_first_which_finishes_alone(triton_server, tmp_path):
    source, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    ids, _ = write_jsonl(source, 2000)  # one question per request, one at a time: the first run lasts seconds
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "offline.bulk",
            str(source),
            str(out),
            "--url",
            triton_server.grpc_url,
            "--no-progress",
            "--batch-size",
            "1",
            "--in-flight",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not out.exists() or not out.stat().st_size:  # the first run holds the file
            assert first.poll() is None, "the first run ended before it wrote"
            time.sleep(0.02)
        second = bulk(source, out, "--url", triton_server.grpc_url)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"refused: {out} is being written by another run (process {first.pid}): wait for it to end, or write "
            "elsewhere"
        ]
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    assert [line["id"] for line in read_jsonl(out)] == ids  # each question once, in input order


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_resumes_it(triton_server, tmp_path):
    """The output on a 64 KiB filesystem of its own (tmpfs, in a mount namespace): the run stops with exit
    status 2 and one line; with room again, the same command finishes it, each question once."""
    source, full = tmp_path / "q.jsonl", tmp_path / "full"
    ids, _ = write_jsonl(source, 3000)  # ~250 KiB of answers
    full.mkdir()
    command = [
        sys.executable,
        "-m",
        "offline.bulk",
        str(source),
        str(full / "a.jsonl"),
        "--url",
        triton_server.grpc_url,
        "--no-progress",
    ]
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {full} && {' '.join(command)}; status=$?; "
        f"cp {full}/a.jsonl {tmp_path}/a.jsonl; exit $status"
    )
    stopped = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith(f"stopped: no space left to write {full / 'a.jsonl'} (No space left on device)")
    assert "run the same command again to resume" in line
    out = tmp_path / "a.jsonl"
    assert 0 < len(read_jsonl_prefix(out)) < 3000
    resumed = bulk(source, out, "--url", triton_server.grpc_url)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [line["id"] for line in read_jsonl(out)] == ids


def read_jsonl_prefix(path):
    """The complete lines of a file a stopped run left (its last may be cut short)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def test_make_bulk_without_files_explains_its_usage():
    result = subprocess.run(
        ["make", "--no-print-directory", "bulk", "IN=x.jsonl"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0 and "usage: make bulk IN=" in result.stderr


@pytest.mark.parametrize("lines", [1, 7])
def test_resume_keeps_complete_lines_and_checks_ids(tmp_path, lines):
    from offline.bulk import resume
    from offline.records import jsonl_records

    source, out = tmp_path / "q.jsonl", tmp_path / "a.jsonl"
    ids, _ = write_jsonl(source, 10)
    written = "".join(json.dumps({"id": i, "answer": "x"}) + "\n" for i in ids[:lines])
    out.write_text(written + '{"id": "q')  # a run killed mid-line
    records = jsonl_records(source)
    assert resume(out, records) == lines
    assert out.read_text() == written and next(records).id == ids[lines]
    out.write_text(json.dumps({"id": "other"}) + "\n")
    with pytest.raises(SystemExit, match="written from another input"):
        resume(out, jsonl_records(source))
