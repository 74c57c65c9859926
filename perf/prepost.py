"""``make prepost``: what the tokenizer and decoder steps cost per question, outside Triton.

    python -m perf.prepost --tokenizer model_repository/tokenizer/1/tokenizer.json [--batch 1 8 32 128]

Runs the steps' own code (``preprocessing``: the request checks, ``tokenize_requests``, ``decode_requests`` on
logits of the windows' shape) in this process on SQuAD-sized pairs (``testkit.inputs``), one batch of requests at
a time as an ``execute()`` receives them, and prints microseconds per question for each batch size beside the
tokenizer library's own call on the same pairs, which is the floor of the tokenizer step. The window settings
are read from the tokenizer's ``config.pbtxt`` beside the file given. What the Python backend adds around the
steps (tensors through shared memory, the stub's messages) is not in these figures: ``make perf`` reports the
CPU time of every server process per request. The pairs repeat, so the step runs without its context cache here
(every context encoded). Last, the "many questions about one context" call: five questions per request against
the same questions one per request.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from preprocessing import AnswerOptions, DecoderLimits, QATokenizer, RequestLimits, WindowSettings, read_pairs
from runtime.backend import config_file_parameters
from runtime.decode_batch import DecoderInput, decode_requests
from runtime.tensors import window_tensors
from runtime.tokenize_batch import tokenize_requests
from testkit.inputs import squad_sized_pairs


def per_question_us(work, questions: int, min_seconds: float, clock=time.perf_counter) -> float:
    """Microseconds per question of ``work()`` (which handles ``questions``), over at least ``min_seconds`` of
    ``clock``."""
    work()  # warm-up
    runs, started = 0, clock()
    while (elapsed := clock() - started) < min_seconds or runs < 3:
        work()
        runs += 1
    return elapsed / runs / questions * 1e6


def window_settings(tokenizer_file: Path) -> WindowSettings:
    """The windowing of the tokenizer step whose ``config.pbtxt`` is beside ``tokenizer_file``'s version folder."""
    parameters = config_file_parameters(tokenizer_file.parent.parent / "config.pbtxt")
    return WindowSettings.from_config(parameters)


def library_tokenizer(tokenizer_file: Path) -> Tokenizer:
    """The tokenizer library on its own, windowing as the reference pipeline asks it to (``only_second``
    truncation to ``max_seq_len`` with ``doc_stride`` overlap, offsets): the floor of the tokenizer step, on one
    core (the library reads TOKENIZERS_PARALLELISM before its first parallel call in the process)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    settings = window_settings(tokenizer_file)
    library = Tokenizer.from_file(str(tokenizer_file))
    library.no_padding()
    library.enable_truncation(max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second")
    return library


def library_us(tokenizer_file: Path, pairs: list[tuple[str, str]], batch: int, min_seconds: float) -> list[float]:
    """CPU microseconds per pair of the bare tokenizer library encoding ``pairs`` ``batch`` at a time (CPU time, the
    unit server processes are measured in): five measurements of ``min_seconds`` / 5 each (their median is the
    figure; on a shared machine single measurements vary by ~20%)."""
    library = library_tokenizer(tokenizer_file)
    batches = [pairs[i : i + batch] for i in range(0, len(pairs), batch)]
    work = lambda: [library.encode_batch(b) for b in batches]  # noqa: E731
    return [per_question_us(work, len(pairs), min_seconds / 5, time.process_time) for _ in range(5)]


def measure(tokenizer_file: Path, batches: list[int], min_seconds: float, seed: int = 0) -> list[dict]:
    parameters = config_file_parameters(tokenizer_file.parent.parent / "config.pbtxt")
    settings = window_settings(tokenizer_file)
    limits = RequestLimits.from_config(parameters)
    decoder_config = tokenizer_file.parent.parent.parent / "decoder" / "config.pbtxt"
    decoder_limits = DecoderLimits.from_config(config_file_parameters(decoder_config), parameters)
    max_windows = int(parameters["max_windows"])
    tokenizer = QATokenizer(tokenizer_file, settings, parallel=parameters["parallel_encoding"] == "true")
    library = library_tokenizer(tokenizer_file)
    pairs = squad_sized_pairs(max(batches), seed)
    rng = np.random.default_rng(seed)
    options = AnswerOptions()
    rows = []
    for batch in batches:
        requests = [(np.array([q], dtype=object), np.array([c.encode()], dtype=object)) for q, c in pairs[:batch]]

        def tokenize(requests=requests):
            return tokenize_requests(tokenizer, [read_pairs(q, c, limits) for q, c in requests], max_windows)

        def tokenize_and_pack(requests=requests):  # what the step does before its tensors leave it
            return [window_tensors(w, c) for w, (_, c) in zip(tokenize(requests), requests)]

        windows = tokenize()
        sent = [window_tensors(w, contexts) for w, (_, contexts) in zip(windows, requests)]
        decoder_inputs = [
            (rng.standard_normal((*t["tokens"].shape, 2), dtype=np.float32), t["offsets"], t["window_context"])
            for t in sent
        ]

        def decode(decoder_inputs=decoder_inputs):
            return decode_requests(
                [DecoderInput.checked(*tensors, options, decoder_limits) for tensors in decoder_inputs]
            )

        tokenize_us = per_question_us(tokenize_and_pack, batch, min_seconds)
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


def shared_context(tokenizer_file: Path, per_context: int, requests: int, min_seconds: float, seed: int = 0) -> dict:
    """The tokenizer step's CPU microseconds per question for ``requests`` requests of ``per_context`` questions
    about one context each, beside the same questions one per request, each with a context of its own (one execute
    each way); no context cache: within a request each distinct context is encoded once."""
    parameters = config_file_parameters(tokenizer_file.parent.parent / "config.pbtxt")
    limits = RequestLimits.from_config(parameters)
    tokenizer = QATokenizer(tokenizer_file, window_settings(tokenizer_file), parallel=False)
    pairs = squad_sized_pairs(requests * per_context, seed)

    def request(questions, contexts):
        return np.array(questions, dtype=object), np.array([c.encode() for c in contexts], dtype=object)

    shared = [
        request([q for q, _ in pairs[i : i + per_context]], [pairs[i][1]] * per_context)
        for i in range(0, len(pairs), per_context)
    ]
    alone = [request([q], [c]) for q, c in pairs]

    def step(batch):
        texts = [read_pairs(q, c, limits) for q, c in batch]
        windows = tokenize_requests(tokenizer, texts, int(parameters["max_windows"]))
        return [window_tensors(w, c) for w, (_, c) in zip(windows, batch)]

    shared_us = per_question_us(lambda: step(shared), len(pairs), min_seconds, time.process_time)
    alone_us = per_question_us(lambda: step(alone), len(pairs), min_seconds, time.process_time)
    return {
        "questions_per_request": per_context,
        "shared_context_us_per_question": round(shared_us, 1),
        "one_question_per_request_us": round(alone_us, 1),
        "ratio": round(shared_us / alone_us, 3),
    }


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
    shared = shared_context(args.tokenizer, 5, 8, args.min_seconds)
    print(
        f"5 questions about one context per request: tokenizer {shared['shared_context_us_per_question']:.1f} us/q, "
        f"{shared['ratio']:.2f} x one question per request ({shared['one_question_per_request_us']:.1f} us/q)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"batches": rows, "shared_context": shared}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
