"""The questions the offline tools answer: records read from a JSON Lines or SQuAD JSON file (``offline.bulk``,
``make bulk``) or built from a dataset (``offline.squad``, ``make eval``), and each answered through the server
(``TritonQA.ask_stream``), in input order."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client import DEFAULT_BATCH_SIZE, DEFAULT_IN_FLIGHT, Answer, InvalidInputError, QAError, TritonQA


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
