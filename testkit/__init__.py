"""What the tests and benchmarks share: random-weight checkpoints of each family with a tokenizer of its kind
(``checkpoints``), the parity edge cases (``cases``), SQuAD-sized inputs (``inputs``) and a Triton server on free
ports, started and stopped (``servers``). Nothing the server runs imports it."""
