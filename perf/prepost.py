"""``make prepost``: what the tokenizer and decoder steps cost per question, outside Triton.

    python -m perf.prepost --tokenizer model_repository/tokenizer/1/tokenizer.json [--batch 1 8 32 128]

Runs the steps' own code (``preprocessing``: the request checks, ``tokenize_requests``, ``decode_requests`` on
logits of the windows' shape) in this process on SQuAD-sized pairs (``perf.inputs``), one batch of requests at
a time as an ``execute()`` receives them, and prints microseconds per question for each batch size beside the
tokenizer library's own call on the same pairs, which is the floor of the tokenizer step. The window settings
are read from the tokenizer's ``config.pbtxt`` beside the file given. What the Python backend adds around the
steps (tensors through shared memory, the stub's messages) is not in these figures: ``make perf`` reports the
steps' compute inside the server.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from perf.inputs import squad_sized_pairs
from preprocessing import AnswerOptions, QATokenizer, RequestLimits, WindowSettings, read_pairs, tokenize_requests
from preprocessing.batch import DecoderInput, decode_requests
from preprocessing.requests import DecoderLimits
from runtime.backend import config_file_parameters


def per_question_us(work, questions: int, min_seconds: float) -> float:
    """Microseconds per question of ``work()`` (which handles ``questions``), over at least ``min_seconds``."""
    work()  # warm-up
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_seconds or runs < 3:
        work()
        runs += 1
    return elapsed / runs / questions * 1e6


def measure(tokenizer_file: Path, batches: list[int], min_seconds: float, seed: int = 0) -> list[dict]:
    parameters = config_file_parameters(tokenizer_file.parent.parent / "config.pbtxt")
    settings = WindowSettings(max_seq_len=int(parameters["max_seq_len"]), doc_stride=int(parameters["doc_stride"]))
    limits = RequestLimits.from_config(parameters)
    decoder_config = tokenizer_file.parent.parent.parent / "decoder" / "config.pbtxt"
    decoder_limits = DecoderLimits.from_config(config_file_parameters(decoder_config), parameters)
    max_windows = int(parameters["max_windows"])
    tokenizer = QATokenizer(tokenizer_file, settings, parallel=parameters["parallel_encoding"] == "true")
    library = Tokenizer.from_file(str(tokenizer_file))
    library.enable_truncation(max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second")
    pairs = squad_sized_pairs(max(batches), seed)
    rng = np.random.default_rng(seed)
    options = AnswerOptions()
    rows = []
    for batch in batches:
        requests = [(np.array([q], dtype=object), np.array([c.encode()], dtype=object)) for q, c in pairs[:batch]]

        def tokenize(requests=requests):
            return tokenize_requests(tokenizer, [read_pairs(q, c, limits) for q, c in requests], max_windows)

        windows = tokenize()
        decoder_inputs = [
            (
                rng.standard_normal(w.input_ids.shape, dtype=np.float32),
                rng.standard_normal(w.input_ids.shape, dtype=np.float32),
                w.token_offsets,
                w.word_offsets,
                w.window_question[:, None],
                np.where(np.arange(len(w.window_question))[:, None] == 0, contexts, b"").astype(object),
            )
            for w, (_, contexts) in zip(windows, requests)
        ]

        def decode(decoder_inputs=decoder_inputs):
            return decode_requests(
                [DecoderInput.checked(*tensors, options, decoder_limits) for tensors in decoder_inputs]
            )

        tokenize_us = per_question_us(tokenize, batch, min_seconds)
        decode_us = per_question_us(decode, batch, min_seconds)
        library_us = per_question_us(lambda texts=pairs[:batch]: library.encode_batch(texts), batch, min_seconds)
        rows.append(
            {
                "batch": batch,
                "tokenizer_library_us": round(library_us, 1),
                "tokenizer_step_us": round(tokenize_us, 1),
                "decoder_step_us": round(decode_us, 1),
                "tokenizer_and_decoder_us": round(tokenize_us + decode_us, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=Path("model_repository/tokenizer/1/tokenizer.json"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 128], help="requests per execute")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not args.tokenizer.is_file():
        parser.error(f"no tokenizer at {args.tokenizer}: export a model first (make export, or make serve)")
    rows = measure(args.tokenizer, args.batch, args.min_seconds)
    print("requests/execute  library us/q  tokenizer us/q  decoder us/q  tokenizer+decoder us/q")
    for r in rows:
        print(
            f"{r['batch']:>16}  {r['tokenizer_library_us']:>12.1f}  {r['tokenizer_step_us']:>14.1f}  "
            f"{r['decoder_step_us']:>12.1f}  {r['tokenizer_and_decoder_us']:>22.1f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
