"""What the tests and benchmarks share: random-weight checkpoints of each family with a tokenizer of its kind
(``checkpoints``), the parity edge cases (``cases``) and SQuAD-sized inputs (``inputs``). Nothing the server runs
imports it."""
