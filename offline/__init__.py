"""The offline tools, over the client's public API (``from client import ...``): ``python -m offline.bulk``
(``make bulk``) answers a file of questions into JSON Lines, resumably; ``python -m offline.squad`` (``make eval``)
scores the served model on a SQuAD file with the official metric (``offline.metric``)."""
