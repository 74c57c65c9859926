"""Write perf_analyzer ``--input-data`` files for ``electra_qa`` (string tensors, one question per request).

python -m perf.make_inputs        # -> perf/data/squad.json (200 SQuAD-sized pairs), perf/data/long.json,
                                  #    perf/data/five_questions.json (200 requests of 5 questions, one context)
"""

from __future__ import annotations

import json
from pathlib import Path

from testkit.inputs import long_document, questions_about_one_context, squad_sized_pairs

DATA = Path(__file__).resolve().parent / "data"


def perf_analyzer_data(pairs: list[tuple[str, str]]) -> dict:
    return shared_context_data([([q], c) for q, c in pairs])


def shared_context_data(requests: list[tuple[list[str], str]]) -> dict:
    """Requests of several questions, each about the request's one context (sent once per question)."""
    return {
        "data": [
            {
                "question": {"content": questions, "shape": [len(questions)]},
                "context": {"content": [context] * len(questions), "shape": [len(questions)]},
            }
            for questions, context in requests
        ]
    }


def main() -> None:
    DATA.mkdir(exist_ok=True)
    files = {
        "squad.json": squad_sized_pairs(200),
        "long.json": [("Who received the grain shipped in 1057?", long_document())],
    }
    data = {name: perf_analyzer_data(pairs) for name, pairs in files.items()}
    data["five_questions.json"] = shared_context_data(questions_about_one_context(200, 5))
    for name, content in data.items():
        (DATA / name).write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n")
        print(DATA / name)


if __name__ == "__main__":
    main()
