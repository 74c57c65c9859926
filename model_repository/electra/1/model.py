"""Triton Python model ``electra``: windows -> start/end logits with ONNX Runtime (see config.pbtxt)."""

import triton_python_backend_utils as pb_utils

from serving.backend import config_parameters, error_response, version_dir
from serving.onnx_runner import INPUT_NAMES, OnnxQARunner


class TritonPythonModel:
    def initialize(self, args):
        parameters = config_parameters(args)
        self.runner = OnnxQARunner(
            version_dir(args) / parameters["onnx_file"],
            device=parameters["device"],
            intra_op_threads=int(parameters["intra_op_threads"]),
            max_windows_per_run=int(parameters["max_windows_per_run"]),
        )
        pb_utils.Logger.log_info(f"electra: ONNX Runtime on {self.runner.device}")
        self.token_metrics = pb_utils.MetricFamily(  # must outlive its Metric objects
            name="electra_qa_model_tokens_total",
            description="Tokens through the ELECTRA step: real (window tokens) and executed (with padding)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.real_tokens = self.token_metrics.Metric(labels={"kind": "real"})
        self.executed_tokens = self.token_metrics.Metric(labels={"kind": "executed"})

    def execute(self, requests):
        batch = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in INPUT_NAMES] for r in requests]
        try:
            logits, tokens = self.runner.run(batch)
        except Exception as error:
            return [error_response(pb_utils, error) for _ in requests]
        self.real_tokens.increment(tokens.real_tokens)
        self.executed_tokens.increment(tokens.executed_tokens)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("start_logits", start), pb_utils.Tensor("end_logits", end)])
            for start, end in logits
        ]
