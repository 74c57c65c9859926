"""Questions to a container's gRPC port, run on the container's network (``image.Container.on_network``);
results as JSON on standard output.

    python -m tests.integration.netns_client ask URL  < [[question, context], ...]
        -> [[text, score, start, end], ...]
    python -m tests.integration.netns_client load URL SECONDS CONCURRENCY  < [question, context]
        -> [{"sent": t, "done": t, "error": null or "ErrorType: message"}, ...]   (wall-clock seconds)

``load`` asks without retries, so that each call's own outcome shows.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from client import NO_RETRIES, QAError, TritonQA


def ask(url: str) -> list:
    with TritonQA(url, timeout_s=60) as qa:
        answers = qa.ask_many([tuple(pair) for pair in json.load(sys.stdin)])
        return [[a.text, a.score, a.start, a.end] for a in answers]


def load(url: str, seconds: float, concurrency: int) -> list:
    question, context = json.load(sys.stdin)
    calls, lock, stop = [], threading.Lock(), time.time() + seconds

    def worker() -> None:
        with TritonQA(url, timeout_s=60, retry=NO_RETRIES) as qa:
            while time.time() < stop:
                sent, error = time.time(), None
                try:
                    qa.ask(question, context)
                except QAError as failure:
                    error = f"{type(failure).__name__}: {failure}"
                with lock:
                    calls.append({"sent": sent, "done": time.time(), "error": error})

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return calls


if __name__ == "__main__":
    command, url, *rest = sys.argv[1:]
    result = ask(url) if command == "ask" else load(url, float(rest[0]), int(rest[1]))
    json.dump(result, sys.stdout)
