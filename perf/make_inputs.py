"""Write perf_analyzer ``--input-data`` files for ``electra_qa`` (string tensors, one question per request).

python -m perf.make_inputs        # -> perf/data/squad.json (200 SQuAD-sized pairs), perf/data/long.json
"""

from __future__ import annotations

import json
from pathlib import Path

from perf.inputs import long_document, squad_sized_pairs

DATA = Path(__file__).resolve().parent / "data"


def perf_analyzer_data(pairs: list[tuple[str, str]]) -> dict:
    return {
        "data": [
            {"question": {"content": [q], "shape": [1]}, "context": {"content": [c], "shape": [1]}} for q, c in pairs
        ]
    }


def main() -> None:
    DATA.mkdir(exist_ok=True)
    files = {
        "squad.json": squad_sized_pairs(200),
        "long.json": [("Who received the grain shipped in 1057?", long_document())],
    }
    for name, pairs in files.items():
        (DATA / name).write_text(json.dumps(perf_analyzer_data(pairs), ensure_ascii=False, indent=1) + "\n")
        print(DATA / name)


if __name__ == "__main__":
    main()
