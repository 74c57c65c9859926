"""Evaluate the served model on a SQuAD-format file (v1.1 or v2.0) with the official metric.

    python -m offline.squad --data dev-v1.1.json --out predictions.json [--url localhost:8001]

Every question goes through the running server the way ``python -m offline.bulk`` sends them
(``TritonQA.ask_stream``: ``--concurrency`` requests in flight, each carrying ``--batch`` questions), with a
progress bar. The predictions file is the official format
(``{id: answer text}``; for v2.0 the empty string means "no answer", and the server is asked with
``handle_impossible_answer``). The last line printed is ``EM <x> F1 <y>``. A server started with
``--api-key HEADER=VALUE`` is asked with ``--api-key HEADER=VALUE`` (default: $ELECTRA_QA_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from client import DEFAULT_URL, QAError, TritonQA
from offline.metric import evaluate, is_v2, questions
from offline.progress import Progress
from offline.records import Record, answer_records
from serving.admin import add_api_key_option
from serving.export import DEFAULT_MODEL, read_record

CARD = {"model": DEFAULT_MODEL, "exact_match": 85.05, "f1": 91.61}  # the model card's SQuAD v1.1 dev scores


def predict(
    items: list[dict],
    url: str,
    concurrency: int,
    batch: int,
    impossible: bool,
    timeout_s: float,
    progress: bool = True,
    api_key: tuple[str, str] | None = None,
) -> dict[str, str]:
    """Every item's best answer, through the bulk path of ``python -m offline.bulk`` (``concurrency`` requests
    of ``batch`` questions in flight); the first failure raises. ``api_key``: (header, value) for a server
    started with ``--api-key``."""
    predictions: dict[str, str] = {}
    records = (Record(item["id"], item["question"], item["context"]) for item in items)
    with TritonQA(url, timeout_s=timeout_s, api_key=api_key) as qa, Progress(len(items), enabled=progress) as bar:
        for record, answer in answer_records(
            qa, records, batch_size=batch, in_flight=concurrency, errors="raise", handle_impossible_answer=impossible
        ):
            predictions[record.id] = answer.text
            bar.update(1)
    return predictions


def card_note(repository: Path) -> str:
    record = read_record(repository)
    served = record.model if record else "unknown (no export record in the repository)"
    if record and record.model == CARD["model"] and record.precision == "fp32":
        return f"served: {served}; the model card reports EM {CARD['exact_match']} F1 {CARD['f1']}"
    return (
        f"note: the served weights are not the model card's ({served}"
        f"{', ' + record.precision if record else ''}); the card's EM {CARD['exact_match']} / "
        f"F1 {CARD['f1']} do not apply"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="SQuAD v1.1 or v2.0 JSON")
    parser.add_argument("--out", type=Path, required=True, help="predictions JSON to write")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--batch", type=int, default=8, help="questions per request")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "model_repository",
        help="where to read which weights are served (export.json)",
    )
    add_api_key_option(parser)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    dataset = json.loads(args.data.read_text(encoding="utf-8"))
    items, v2 = questions(dataset), is_v2(dataset)
    print(
        f"{len(items)} questions from {args.data} (SQuAD {'v2.0' if v2 else 'v1.1'}), server {args.url}",
        file=sys.stderr,
    )
    try:
        predictions = predict(
            items,
            args.url,
            args.concurrency,
            args.batch,
            v2,
            args.timeout_s,
            progress=not args.no_progress,
            api_key=args.api_key,
        )
    except QAError as error:
        print(f"evaluation failed: {error.__class__.__name__}: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(predictions, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    scores = evaluate(dataset, predictions)
    print(json.dumps(scores, indent=2))
    print(card_note(args.repository))
    print(f"EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
