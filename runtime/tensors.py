"""The names (and numpy dtypes) of the tensors the steps pass each other, as the configs declare them
(tests/unit/test_model_repository.py holds the two together). The ensemble's own inputs and outputs, the
clients' contract, are in ``client._protocol``."""

import numpy as np

# tokenizer -> electra, decoder
WINDOW_TENSORS = {
    "input_ids": np.int64,
    "attention_mask": np.int64,
    "token_type_ids": np.int64,
    "token_offsets": np.int32,
    "word_offsets": np.int32,
    "window_question": np.int32,
    "window_context": np.object_,
}
# electra
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MODEL_OUTPUTS = ("start_logits", "end_logits")
# decoder: (name, dtype, rank as the Python backend hands it over)
DECODER_INPUTS = (
    ("start_logits", np.float32, 2),
    ("end_logits", np.float32, 2),
    ("token_offsets", np.int32, 3),
    ("word_offsets", np.int32, 3),
    ("window_question", np.int32, 2),
    ("window_context", np.object_, 2),
)
ANSWER_OUTPUTS = ("answer", "score", "start", "end")
