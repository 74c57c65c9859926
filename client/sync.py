"""``TritonQA``: question answering against the ``electra_qa`` ensemble over gRPC."""

from __future__ import annotations

import time
from typing import Any

import tritonclient.grpc as grpcclient

from client._protocol import Call, ClientBase
from client.connection import RetryPlan
from client.errors import translate


class TritonQA(ClientBase):
    """A client for the served ELECTRA QA model; a drop-in for ``pipeline('question-answering')``.

    >>> with TritonQA("localhost:8001") as qa:
    ...     qa.ask("Who wrote it?", "It was written by Ada Lovelace.").text
    """

    _grpc = grpcclient

    def is_ready(self) -> bool:
        """Whether the server is up and ``electra_qa`` is ready to answer."""
        try:
            return self._client.is_server_ready(headers=self.headers) and self._client.is_model_ready(
                self.model, headers=self.headers)
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "TritonQA":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: Call) -> Any:
        plan = RetryPlan(self.retry, self.timeout_s)
        while True:
            kwargs = call.infer_kwargs(grpcclient, self.model, self.headers, plan.remaining_s())
            try:
                return call.finish(self._client.infer(**kwargs))
            except Exception as raw:
                error = translate(raw)
                delay_s = plan.next_delay_s(error)
                if delay_s is None:
                    raise error from raw
            time.sleep(delay_s)
