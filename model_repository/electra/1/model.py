"""Triton Python model ``electra``: windows -> start/end logits, on the engine config.pbtxt names."""

import time

import triton_python_backend_utils as pb_utils

from preprocessing import Budget
from runtime.backend import attempt, config_parameters, reply, response, version_dir
from runtime.engines import make_runner
from runtime.model_inputs import ModelLimits, read_windows


class TritonPythonModel:
    def initialize(self, args):
        parameters = config_parameters(args)
        self.limits = ModelLimits.from_export(version_dir(args))
        self.runner = make_runner(parameters, version_dir(args), args.get("model_instance_device_id"))
        # a batch's requests, fewest tokens first, as far as they fit in this time (0: no budget); the others get
        # UNAVAILABLE (retried by clients), so that an overload's batches do not outlast callers' deadlines
        budget_ms = int(parameters.get("batch_budget_ms", "0"))
        self.budget = Budget(budget_ms / 1000, min_work=1000) if budget_ms else None
        pb_utils.Logger.log_info(f"electra: {parameters['engine']} on {self.runner.device}")
        self.token_metrics = pb_utils.MetricFamily(  # must outlive its Metric objects
            name="electra_qa_model_tokens_total",
            description="Tokens through the ELECTRA step: real (window tokens) and executed (with padding)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.real_tokens = self.token_metrics.Metric(labels={"kind": "real"})
        self.executed_tokens = self.token_metrics.Metric(labels={"kind": "executed"})

    def execute(self, requests):
        started = time.monotonic()
        windows = [attempt(read_windows, pb_utils, request, self.limits) for request in requests]
        if self.budget is not None:
            windows = self.budget.select(
                windows, [0 if isinstance(w, Exception) else w[0].size for w in windows], started, "electra"
            )
        valid = [w for w in windows if not isinstance(w, Exception)]
        run_started = time.monotonic()
        ran = attempt(self.runner.run, valid) if valid else ([], None)
        if self.budget is not None and valid:
            self.budget.learn(sum(w[0].size for w in valid), time.monotonic() - run_started)
        if isinstance(ran, Exception):  # the model run failed: every request it held gets the error
            return [reply(pb_utils, "electra", w if isinstance(w, Exception) else ran, self._pack) for w in windows]
        logits, tokens = ran
        if tokens is not None:  # counted from validated windows only
            self.real_tokens.increment(tokens.real_tokens)
            self.executed_tokens.increment(tokens.executed_tokens)
        logits = iter(logits)
        return [
            reply(pb_utils, "electra", w if isinstance(w, Exception) else next(logits), self._pack) for w in windows
        ]

    @staticmethod
    def _pack(logits):
        start, end = logits
        return response(pb_utils, {"start_logits": start, "end_logits": end})
