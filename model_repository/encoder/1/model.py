"""Triton Python model ``encoder``: windows -> start/end logits, on the engine config.pbtxt names."""

import time

import triton_python_backend_utils as pb_utils

from preprocessing.outcomes import Refused, answered, attempt
from runtime.backend import Counters, checked_parameters, reply, response, sibling_parameters, version_dir
from runtime.engines import PARAMETERS, make_runner, step_budget
from runtime.model_inputs import ModelLimits, finite_logits, read_tokens, real_tokens


class TritonPythonModel:
    def initialize(self, args):
        parameters = checked_parameters(args, "encoder", PARAMETERS)
        self.limits = ModelLimits.from_export(version_dir(args))
        max_seq_len = int(sibling_parameters(args, "tokenizer", ["max_seq_len"])["max_seq_len"])
        self.runner = make_runner(parameters, version_dir(args), max_seq_len, args.get("model_instance_device_id"))
        # a batch's requests, fewest tokens first, as far as they fit in batch_budget_ms; a request that alone would
        # take longer than max_request_ms at the measured pace is refused (INVALID_ARGUMENT); the others UNAVAILABLE
        self.budget = step_budget(parameters, self.runner, max_seq_len)
        precision = getattr(self.runner, "precision", None)  # of the engines that choose one
        graphs = getattr(self.runner, "graphs_captured", 0)
        pb_utils.Logger.log_info(
            f"encoder: {parameters['engine']} on {self.runner.device}"
            + (f", {precision}" if precision else "")
            + (f", {graphs} CUDA graphs" if graphs else "")
        )
        self.token_counts = Counters(
            pb_utils,
            "electra_qa_model_tokens_total",
            "Tokens through the encoder step: real (window tokens) and executed (with padding)",
            "kind",
            ("real", "executed"),
        )

    def execute(self, requests):
        started = time.monotonic()
        windows = [attempt(read_tokens, pb_utils, request, self.limits) for request in requests]
        if self.budget is not None:  # in real tokens, what the engines run (padding is not counted)
            sizes = [0 if isinstance(w, Refused) else real_tokens(w) for w in windows]
            windows = self.budget.select_smallest(windows, sizes, started, "encoder", "tokens")
        valid = [windows[i] for i in answered(windows)]
        run_started = time.monotonic()
        ran = attempt(self.runner.run, valid) if valid else ([], None)
        if self.budget is not None and valid:
            self.budget.learn("tokens", sum(map(real_tokens, valid)), time.monotonic() - run_started)
        if isinstance(ran, Refused):  # the model run failed: every request it held gets its error
            return [reply(pb_utils, "encoder", w if isinstance(w, Refused) else ran, self._pack) for w in windows]
        logits, tokens = ran
        if tokens is not None:  # counted from validated windows only
            self.token_counts.add("real", tokens.real_tokens)
            self.token_counts.add("executed", tokens.executed_tokens)
        # NaN or infinite logits fail their request (INTERNAL, saying so) rather than becoming an answer
        outcomes = list(windows)
        for i, request_logits in zip(answered(windows), logits):
            outcomes[i] = attempt(finite_logits, request_logits, windows[i])
        return [reply(pb_utils, "encoder", outcome, self._pack) for outcome in outcomes]

    @staticmethod
    def _pack(logits):
        return response(pb_utils, {"logits": logits})
