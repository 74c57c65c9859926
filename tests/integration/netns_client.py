"""Questions to a container's gRPC port, run on the container's network (``image.Container.on_network``);
results as JSON on standard output.

    python -m tests.integration.netns_client ask URL  < [[question, context], ...]
        -> [[text, score, start, end], ...]
    python -m tests.integration.netns_client load URL SECONDS CONCURRENCY  < [question, context]
        -> [{"sent": t, "done": t, "error": null or "ErrorType: message"}, ...]   (wall-clock seconds)
    python -m tests.integration.netns_client batched URL HTTP_URL ADMIN_KEY CONCURRENCY  < [[question, context], ...]
        -> {"answers": [[text, start, end] or "ErrorType: message", ...], "windows": w, "executions": e}: the
           pairs asked CONCURRENCY at a time (one question per call, retried as TritonQA retries by default: a
           step's overload refusal is retried), and what the model step ran meanwhile (its statistics before and
           after, read with the admin key)
    python -m tests.integration.netns_client concurrent URL CALLS
        -> {"answered": n, "errors": ["ErrorType: message", ...]}: CALLS questions at once on one channel (one
           client, one connection), without retries
    python -m tests.integration.netns_client compressed URL
        -> "ErrorType: message" of one question sent gzip-compressed, or null when answered
    python -m tests.integration.netns_client streamed URL
        -> the error of one question sent on a ModelStreamInfer stream, or null when answered
    python -m tests.integration.netns_client large URL BYTES
        -> "ErrorType: message" of one question whose context has BYTES bytes, or null when answered
    python -m tests.integration.netns_client unfinished HOST:PORT [INFERENCE_KEY]
        -> what the server answers (its status line, or "" when it closes) to a POST that announces 2 GB and
           sends 1 MB of it, within 15 s (with the key in x-inference-key, when given)
    python -m tests.integration.netns_client idle URL CONNECTIONS SECONDS
        -> {"answered": bool, "open_after": n}: CONNECTIONS idle TCP connections opened, a question asked
           beside them, then how many the server still holds open SECONDS later

``load`` asks without retries, so that each call's own outcome shows.
"""

from __future__ import annotations

import itertools
import json
import resource
import socket
import sys
import threading
import time

from client import NO_RETRIES, QAError, TritonQA


def refused_by_a_budget(failure: QAError) -> bool:
    """A step had no time left for the call in its batch (``runtime.scheduling.Budget.busy``): overload on a busy
    machine, sent again; the refusals these calls count are the proxy's and the drain's."""
    return "had no time left for this request" in str(failure)


def ask(url: str) -> list:
    with TritonQA(url, timeout_s=60) as qa:
        answers = qa.ask_many([tuple(pair) for pair in json.load(sys.stdin)])
        return [[a.text, a.score, a.start, a.end] for a in answers]


def load(url: str, seconds: float, concurrency: int) -> list:
    """Calls for ``seconds``, ``concurrency`` at a time, each with a context of its own (the stdin's, numbered), so
    that every call encodes its document (none is answered from the tokenizer's cache of contexts)."""
    question, context = json.load(sys.stdin)
    calls, lock, stop = [], threading.Lock(), time.time() + seconds
    numbers = itertools.count()

    def worker() -> None:
        with TritonQA(url, timeout_s=60, retry=NO_RETRIES) as qa:
            while time.time() < stop:
                sent, error = time.time(), None
                try:
                    qa.ask(question, f"{context} Call {next(numbers)}.")
                except QAError as failure:
                    if refused_by_a_budget(failure):
                        continue
                    error = f"{type(failure).__name__}: {failure}"
                with lock:
                    calls.append({"sent": sent, "done": time.time(), "error": error})
                if error:
                    time.sleep(0.05)  # a refused caller waits a little, as a client backing off would

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return calls


def batched(url: str, http_url: str, key: str, concurrency: int) -> dict:
    from serving.admin import AdminClient

    pairs = [tuple(pair) for pair in json.load(sys.stdin)]
    admin = AdminClient(http_url, ("x-admin-key", key))
    answers: list = [None] * len(pairs)
    numbers = itertools.count()

    def worker() -> None:
        with TritonQA(url, timeout_s=120) as qa:
            while (i := next(numbers)) < len(pairs):
                try:
                    answer = qa.ask(*pairs[i])
                    answers[i] = [answer.text, answer.start, answer.end]
                except QAError as failure:
                    answers[i] = f"{type(failure).__name__}: {failure}"

    before = admin.statistics("encoder")
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = admin.statistics("encoder")
    return {
        "answers": answers,
        "windows": after["inference_count"] - before["inference_count"],
        "executions": after["execution_count"] - before["execution_count"],
    }


def concurrent(url: str, calls: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(calls)
    with TritonQA(url, timeout_s=120, retry=NO_RETRIES) as qa:

        def one(i: int) -> str | None:
            start.wait()
            for _ in range(20):
                try:
                    qa.ask(f"Who wrote text {i}?", f"Text {i} was written by Ada Lovelace in {1800 + i}.")
                except QAError as failure:
                    if refused_by_a_budget(failure):
                        continue
                    return f"{type(failure).__name__}: {failure}"
                return None
            return "a step's budget refused it 20 times (overload)"

        with ThreadPoolExecutor(calls) as pool:
            outcomes = list(pool.map(one, range(calls)))
    errors = [o for o in outcomes if o]
    return {"answered": len(outcomes) - len(errors), "errors": errors}


def raw_inputs(grpc_module):
    import numpy as np

    inputs = []
    for name, text in (("question", "Who wrote it?"), ("context", "Ada Lovelace wrote it.")):
        tensor = grpc_module.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
        inputs.append(tensor)
    return inputs


def compressed(url: str) -> str | None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        client.infer("electra_qa", raw_inputs(grpcclient), compression_algorithm="gzip", client_timeout=30)
    except InferenceServerException as failure:
        return f"{failure.status()}: {failure.message()}"
    return None


def streamed(url: str) -> str | None:
    import queue

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: results.put(error), stream_timeout=30)
    try:
        try:
            client.async_stream_infer("electra_qa", raw_inputs(grpcclient))
        except InferenceServerException:  # the stream was refused before the request was sent: see the callback
            pass
        error = results.get(timeout=30)
    finally:
        client.stop_stream()
    return None if error is None else f"{error.status()}: {error.message()}"


def large(url: str, size: int) -> str | None:
    with TritonQA(url, timeout_s=60, retry=NO_RETRIES) as qa:
        try:
            qa.ask("What is it?", "a" * size)
        except QAError as failure:
            return f"{type(failure).__name__}: {failure}"
    return None


def unfinished(address: str, key: str = "") -> str:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as connection:
        keyed = f"x-inference-key: {key}\r\n".encode() if key else b""
        head = (
            b"POST /v2/models/electra_qa/infer HTTP/1.1\r\nHost: x\r\n" + keyed + b"Content-Length: 2000000000\r\n\r\n"
        )
        try:
            connection.sendall(head + b"{" * 2**20)
        except OSError:  # refused before all of it was sent
            pass
        return connection.recv(4096).split(b"\r\n", 1)[0].decode()


def still_open(connection: socket.socket) -> bool:
    """Whether the server still holds ``connection`` open (what it sent first, e.g. HTTP/2's settings, read)."""
    connection.setblocking(False)
    try:
        while connection.recv(65536):
            pass
        return False  # b"": closed by the server
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        connection.close()


def idle(url: str, connections: int, seconds: float) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, connections + 256)), hard))
    host, port = url.rsplit(":", 1)
    sockets = [socket.create_connection((host, int(port)), timeout=5) for _ in range(connections)]
    with TritonQA(url, timeout_s=30) as qa:
        answered = bool(qa.ask("What is it?", "It is a small test."))
    time.sleep(seconds)
    open_after = sum(still_open(s) for s in sockets)
    return {"answered": answered, "open_after": open_after}


if __name__ == "__main__":
    command, url, *rest = sys.argv[1:]
    if command == "ask":
        result = ask(url)
    elif command == "load":
        result = load(url, float(rest[0]), int(rest[1]))
    elif command == "batched":
        result = batched(url, rest[0], rest[1], int(rest[2]))
    elif command == "concurrent":
        result = concurrent(url, int(rest[0]))
    elif command == "compressed":
        result = compressed(url)
    elif command == "streamed":
        result = streamed(url)
    elif command == "unfinished":
        result = unfinished(url, *rest)
    elif command == "large":
        result = large(url, int(rest[0]))
    else:
        result = idle(url, int(rest[0]), float(rest[1]))
    json.dump(result, sys.stdout)
