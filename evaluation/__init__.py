"""SQuAD evaluation of the served model: ``python -m evaluation.squad`` (``make eval``)."""
