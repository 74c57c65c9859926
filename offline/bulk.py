"""Answer a file of questions through the server: one answer per line, resumable.

    python -m offline.bulk IN OUT [--url localhost:8001] [--top-k K] [--batch-size 16] [--in-flight 4]
                                  [--api-key HEADER=VALUE]   (default: $ELECTRA_QA_API_KEY)

IN is JSON Lines — one ``{"question": ..., "context": ...}`` object per line, with an optional ``id`` (any JSON
value; else the line number, from 1, is the id) — or a SQuAD-format JSON file (v1.1 or v2.0; ids from the
dataset); a file that is neither (a SQuAD file cut short) is refused with exit status 2. OUT gets one JSON object
per question, in input order, in ASCII (other characters as ``\\u`` escapes, so that any string round-trips):

    {"id": ..., "answer": "...", "score": 0.93, "start": 17, "end": 29}          (the best answer)
    {"id": ..., "answers": [{"answer": ..., "score": ..., "start": ..., "end": ...}, ...]}   (--top-k K)
    {"id": ..., "error": "InvalidInputError", "message": "..."}                   (an example that cannot be answered)

Questions go ``--batch-size`` per request with ``--in-flight`` requests outstanding (``TritonQA.ask_stream``);
memory stays flat whatever the size of IN. An invalid example (a line that is not UTF-8 or not JSON, a last line
cut short, an empty question, a context over the server's limits) gets its error line and the run goes on; any
other failure (the server unreachable or not answering within ``--timeout-s``, after retries; a full disk) stops
the run with exit status 2 and one line saying why. Rerunning the same command resumes: OUT is kept up to its last
complete line and the questions it answers are skipped (their ids are checked against IN's, as JSON values: NaN is
NaN). A run holds OUT exclusively (a lock on it) from start to end: a second run on the same OUT is refused,
naming the first one's process.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from client import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_IN_FLIGHT,
    DEFAULT_URL,
    Answer,
    InvalidInputError,
    QAError,
    RetryPolicy,
    TritonQA,
)
from offline.progress import Progress
from offline.records import InputFileError, Record, answer_records, read_records
from serving.admin import add_api_key_option


def output_line(record: Record, result: Answer | list[Answer] | QAError) -> dict:
    if isinstance(result, QAError):
        return {"id": record.id, "error": type(result).__name__, "message": getattr(result, "reason", str(result))}
    if isinstance(result, Answer):
        return {"id": record.id, **result.as_pipeline_dict()}
    return {"id": record.id, "answers": [answer.as_pipeline_dict() for answer in result]}


class OutputBusy(RuntimeError):
    """Another run is writing the same output file."""


def hold(sink: io.TextIOBase, out: Path) -> None:
    """An exclusive lock on ``out`` (``sink``'s file) for as long as ``sink`` is open, or ``OutputBusy`` naming
    the process that holds it."""
    try:
        fcntl.flock(sink.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(out)
        raise OutputBusy(
            f"{out} is being written by another run{f' (process {holder})' if holder else ''}: wait for it to end, "
            "or write elsewhere"
        ) from None


def lock_holder(path: Path) -> int | None:
    """The process holding a lock on ``path`` (``/proc/locks``), if one is found."""
    found = os.stat(path)
    device = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[5] == device:
                return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def resume(out: Path, records: Iterator[Record]) -> int:
    """How many records ``out`` already answers. Keeps ``out`` up to its last complete line (a run stopped
    mid-write leaves a partial one) and consumes that many records, checking their ids."""
    if not out.exists():
        return 0
    done, keep = 0, 0
    with open(out, "rb") as f:
        for line in f:
            try:
                written = json.loads(line) if line.endswith(b"\n") else None
            except json.JSONDecodeError:
                written = None
            if not isinstance(written, dict) or "id" not in written:
                break
            record = next(records, None)
            if record is None or not same_id(record.id, written["id"]):
                found = (
                    f"the input has {done} questions"
                    if record is None
                    else f"question {done + 1} of the input has id {record.id!r}"
                )
                raise SystemExit(
                    f"{out} line {done + 1} answers id {written['id']!r}, but {found}: it was written "
                    "from another input (move it away to start over)"
                )
            done, keep = done + 1, keep + len(line)
    if keep < out.stat().st_size:
        with open(out, "r+b") as f:
            f.truncate(keep)
    return done


def same_id(a: Any, b: Any) -> bool:
    """Whether two ids are the same JSON value: compared as JSON (NaN is then NaN, 1 is not 1.0 or true)."""
    return json.dumps(a) == json.dumps(b)


def run(
    source: Path,
    out: Path,
    *,
    url: str | list[str] = DEFAULT_URL,
    top_k: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    in_flight: int = DEFAULT_IN_FLIGHT,
    timeout_s: float = 300.0,
    retry: RetryPolicy = RetryPolicy(),
    api_key: tuple[str, str] | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Answer every record of ``source`` not yet in ``out`` into ``out``; a summary (counts, seconds). Raises
    the ``QAError`` that stopped the run (what is written so far stays, for the next run to resume from).
    ``api_key``: (header, value) for a server started with ``--api-key``."""
    records, total = read_records(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    answered = failed = 0
    started = time.monotonic()
    with open(out, "a", encoding="utf-8") as sink:
        hold(sink, out)  # until the run ends: nothing else resumes or appends meanwhile
        skipped = resume(out, records)
        with (
            TritonQA(url, timeout_s=timeout_s, retry=retry, api_key=api_key) as qa,
            Progress(total, skipped, progress) as bar,
            closing(
                answer_records(qa, records, top_k=top_k, batch_size=batch_size, in_flight=in_flight, **options)
            ) as results,
        ):
            lines: list[str] = []
            for record, result in results:
                if isinstance(result, QAError) and not isinstance(result, InvalidInputError):
                    flush(sink, lines)
                    raise result
                failed += isinstance(result, QAError)
                answered += not isinstance(result, QAError)
                lines.append(json.dumps(output_line(record, result)) + "\n")  # ASCII: any string round-trips
                if len(lines) >= batch_size:
                    flush(sink, lines)
                bar.update(1)
            flush(sink, lines)
    seconds = time.monotonic() - started
    return {
        "skipped": skipped,
        "answered": answered,
        "failed": failed,
        "seconds": seconds,
        "questions_per_s": (answered + failed) / seconds if seconds > 0 else 0.0,
    }


def flush(sink: io.TextIOBase, lines: list[str]) -> None:
    """Write whole lines and push them to the file (a run killed afterwards resumes after them)."""
    sink.write("".join(lines))
    sink.flush()
    lines.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m offline.bulk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, metavar="IN", help="JSON Lines of question/context, or SQuAD JSON")
    parser.add_argument("out", type=Path, metavar="OUT", help="JSON Lines of answers (appended to; resumed)")
    parser.add_argument(
        "--url",
        action="append",
        help=f"server host:port or gRPC target (dns:///name:port); repeat for several replicas (default {DEFAULT_URL})",
    )
    parser.add_argument("--top-k", type=int, default=None, help="the K best answers per question")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="questions per request")
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT, help="requests outstanding at once")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="deadline of each request, retries included")
    parser.add_argument("--max-answer-len", type=int, default=15)
    parser.add_argument(
        "--handle-impossible-answer",
        action="store_true",
        help='answer "" where no span beats the no-answer score (SQuAD v2.0)',
    )
    add_api_key_option(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    urls = args.url or [DEFAULT_URL]
    try:
        summary = run(
            args.source,
            args.out,
            url=urls[0] if len(urls) == 1 else urls,
            top_k=args.top_k,
            batch_size=args.batch_size,
            in_flight=args.in_flight,
            timeout_s=args.timeout_s,
            api_key=args.api_key,
            progress=not args.no_progress,
            max_answer_len=args.max_answer_len,
            handle_impossible_answer=args.handle_impossible_answer,
        )
    except (InputFileError, OutputBusy) as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    except QAError as error:
        print(
            f"stopped: {type(error).__name__}: {error}\nwhat is in {args.out} stays; run the same command again "
            "to resume",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(
            f"stopped: no space left to write {args.out} ({os.strerror(error.errno)}); what is in it stays: free some "
            "space and run the same command again to resume",
            file=sys.stderr,
        )
        return 2
    print(
        f"{summary['answered']} answered, {summary['failed']} failed, {summary['skipped']} already in {args.out}; "
        f"{summary['seconds']:.1f} s, {summary['questions_per_s']:.1f} questions/s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
