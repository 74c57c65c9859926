"""A flood of maximal requests from a process of its own, as other machines' clients would send it: its threads'
serialising and uploading never hold the interpreter lock of the caller timed beside it.

    python -m tests.integration.flood URL SECONDS CLIENTS

prints "flooding" once its requests are built, then CLIENTS threads send ~1,000-window requests back to back
until SECONDS have passed; it prints how many calls ended, answered or refused, and exits.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import ENSEMBLE
from testkit.inputs import long_document
from tests.integration import raw

FLOODING = "flooding"


def flood(url: str, seconds: float, clients: int) -> int:
    inputs = raw.question_context("Who shipped grain?", long_document(900_000), batched=False)  # 996 windows
    print(FLOODING, flush=True)
    stop_at = time.monotonic() + seconds

    def one_client() -> int:
        client, calls = grpcclient.InferenceServerClient(url), 0
        while time.monotonic() < stop_at:
            try:
                client.infer(ENSEMBLE, inputs, client_timeout=20)
            except InferenceServerException:
                pass
            calls += 1
        return calls

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(lambda _: one_client(), range(clients)))


if __name__ == "__main__":
    url, seconds, clients = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    print(f"{flood(url, seconds, clients)} calls ended", flush=True)
