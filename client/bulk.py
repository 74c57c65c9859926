"""Answer a file of questions through the server: one answer per line, resumable.

    python -m client.bulk IN OUT [--url localhost:8001] [--top-k K] [--batch-size 16] [--in-flight 4]
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
other failure (the server unreachable or not answering within ``--timeout-s``, after retries) stops the run with
exit status 2. Rerunning the same command resumes: OUT is kept up to its last complete line and the questions it
answers are skipped (their ids are checked against IN's, as JSON values: NaN is NaN).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.answer import Answer
from client.connection import RetryPolicy
from client.errors import InvalidInputError, QAError
from client.stream import DEFAULT_BATCH_SIZE, DEFAULT_IN_FLIGHT
from client.sync import TritonQA
from serving.admin import add_api_key_option


@dataclass(frozen=True)
class Record:
    """One question of the input: its id, question and context as read (not yet checked), or why it could not
    be read."""

    id: Any
    question: Any = None
    context: Any = None
    problem: str | None = None


class InputFileError(Exception):
    """IN is neither JSON Lines nor SQuAD JSON (a SQuAD file cut short, say): the run is refused."""


def read_records(path: Path) -> tuple[Iterator[Record], int]:
    """The records of a JSON Lines or SQuAD JSON file, read lazily (JSON Lines) and how many there are.
    Raises ``InputFileError`` when the file cannot be read as either."""
    try:
        if is_squad(path):
            records = squad_records(path, load_squad(path))
            return iter(records), len(records)
        with open(path, "rb") as counting:
            total = sum(1 for line in counting if line.strip())
    except OSError as error:
        raise InputFileError(f"cannot read {path}: {error.strerror or error}") from None
    return jsonl_records(path), total


def is_squad(path: Path) -> bool:
    """SQuAD JSON: the file does not start with one complete JSON object holding a question (pretty-printed
    JSON's first line is just ``{``; the official files are one line holding ``data``)."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line.decode("utf-8", errors="replace"))
                except (ValueError, RecursionError):
                    return True
                return isinstance(first, dict) and "data" in first and "question" not in first
    return False


def load_squad(path: Path) -> Any:
    """The parsed file; ``InputFileError`` when it is not UTF-8 JSON (cut short, or JSON Lines whose first line
    is not JSON: the format is told by that line)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InputFileError(f"{path} is not UTF-8 (byte {error.start + 1}: {error.reason})") from None
    except (ValueError, RecursionError) as error:
        raise InputFileError(
            f"{path} is neither SQuAD JSON ({error}: cut short?) nor JSON Lines (its first line is not a JSON object)"
        ) from None


def squad_records(path: Path, dataset: Any) -> list[Record]:
    """Every question of a SQuAD dataset with its paragraph's context; ``InputFileError`` when the JSON is not
    shaped as SQuAD's (``data`` / ``paragraphs`` / ``qas``)."""
    try:
        return [
            Record(qa["id"], qa["question"], paragraph["context"])
            for article in dataset["data"]
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except (KeyError, TypeError, IndexError) as error:
        found = f"no key {error}" if isinstance(error, KeyError) else str(error)
        raise InputFileError(f"{path} is not SQuAD JSON (data, paragraphs, qas with id, question): {found}") from None


def jsonl_records(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield jsonl_record(number, line)


def jsonl_record(number: int, line: bytes) -> Record:
    """Line ``number`` as a record; one with its problem (``line N: ...``) when the line is not UTF-8, not JSON
    (a line cut short included) or not an object. Its id: the line's ``id``, any JSON value, else ``number``."""
    try:
        item = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        return Record(number, problem=f"line {number}: not UTF-8 (byte {error.start + 1}: {error.reason})")
    except json.JSONDecodeError as error:
        return Record(number, problem=f"line {number}: not JSON ({error})")
    except (ValueError, RecursionError) as error:  # JSON, but past Python's limits (digits of an int, nesting)
        return Record(number, problem=f"line {number}: cannot be read ({error})")
    if not isinstance(item, dict):
        return Record(number, problem=f"line {number}: not a JSON object")
    return Record(item.get("id", number), item.get("question"), item.get("context"))


def answer_records(
    qa: TritonQA,
    records: Iterable[Record],
    *,
    top_k: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    in_flight: int = DEFAULT_IN_FLIGHT,
    errors: str = "return",
    **options: Any,
) -> Generator[tuple[Record, Answer | list[Answer] | QAError], None, None]:
    """Each record with its result (``TritonQA.ask_stream``), lazily, in input order."""
    pending: deque[Record] = deque()

    def examples() -> Iterator[Any]:
        for record in records:
            pending.append(record)
            yield None if record.problem else (record.question, record.context)

    for result in qa.ask_stream(
        examples(), top_k=top_k, batch_size=batch_size, in_flight=in_flight, errors=errors, **options
    ):
        record = pending.popleft()
        if record.problem and isinstance(result, QAError):
            result = InvalidInputError(record.problem)
        yield record, result


def output_line(record: Record, result: Answer | list[Answer] | QAError) -> dict:
    if isinstance(result, QAError):
        return {"id": record.id, "error": type(result).__name__, "message": getattr(result, "reason", str(result))}
    if isinstance(result, Answer):
        return {"id": record.id, **result.as_pipeline_dict()}
    return {"id": record.id, "answers": [answer.as_pipeline_dict() for answer in result]}


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


class Progress:
    """A progress bar on stderr: tqdm where installed, else a counter line refreshed every second."""

    def __init__(self, total: int | None, initial: int = 0, enabled: bool = True, unit: str = "q"):
        self.total, self.count, self.enabled, self.unit = total, initial, enabled, unit
        self._started, self._shown, self._initial = time.monotonic(), 0.0, initial
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._shown >= 1.0:
            self._show()

    def _show(self, end: str = "") -> None:
        self._shown = time.monotonic()
        rate = (self.count - self._initial) / max(self._shown - self._started, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        print(f"\r{self.count}{of} {self.unit}, {rate:.1f} {self.unit}/s", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._show(end="\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(
    source: Path,
    out: Path,
    *,
    url: str | list[str] = "localhost:8001",
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
    skipped = resume(out, records)
    answered = failed = 0
    started = time.monotonic()
    with (
        TritonQA(url, timeout_s=timeout_s, retry=retry, api_key=api_key) as qa,
        open(out, "a", encoding="utf-8") as sink,
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
        prog="python -m client.bulk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, metavar="IN", help="JSON Lines of question/context, or SQuAD JSON")
    parser.add_argument("out", type=Path, metavar="OUT", help="JSON Lines of answers (appended to; resumed)")
    parser.add_argument(
        "--url",
        action="append",
        help="server host:port or gRPC target (dns:///name:port); repeat for several replicas (default localhost:8001)",
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
    urls = args.url or ["localhost:8001"]
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
    except InputFileError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    except QAError as error:
        print(
            f"stopped: {type(error).__name__}: {error}\nwhat is in {args.out} stays; run the same command again "
            "to resume",
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
