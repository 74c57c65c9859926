"""The model families served, one declaration each: what the export, the torch engine's encoders and the test
checkpoints need to know about a family that its checkpoint's own files do not say. Everything else (the pair
layout, the model inputs) is read from the checkpoint and recorded in export.json.

Adding a family is one entry here, an encoder only where the torch engine should run it
(``runtime/encoders``), and a row in docs/serving.md; tests/unit/test_families.py then holds it to the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

# how a test checkpoint's tokenizer is made offline: from the uncased WordPiece vocabulary, a byte-level BPE
# trained on a few sentences, or a sentencepiece unigram model trained likewise
TokenizerKind = Literal["wordpiece", "byte-level-bpe", "sentencepiece"]
# the torch engine's encoders (runtime/encoders): BERT and its kin, DeBERTa's disentangled attention
EncoderKind = Literal["bert-like", "deberta"]


@dataclass(frozen=True)
class TestRecipe:
    """How tests build a random-weight checkpoint of the family (testkit.checkpoints)."""

    tokenizer: TokenizerKind
    tokenizer_class: str  # transformers' fast tokenizer class
    config_class: str  # transformers' config class
    max_position_embeddings: int = 512
    # the config takes the tokenizer's pad/bos/eos ids (the families whose ids are not BERT's)
    special_ids: tuple[str, ...] = ()
    takes_embedding_size: bool = False  # a factorised embedding (ELECTRA, ALBERT)
    # sentencepiece's special pieces' ids, as the tokenizer's converter expects them
    pieces: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    config: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # the family's own settings


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's
    recipe: TestRecipe
    encoder: EncoderKind | None  # the torch engine's encoder that reproduces it (None: ONNX engines only)
    weights_prefix: str  # the base model's name in the checkpoint's tensors
    fused: bool = True  # ONNX Runtime's BERT fusions rewrite its graph
    positions_after_padding: bool = False  # RoBERTa's positions start after its padding index
    config_names: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # BERT's names -> its own


def _frozen(**items) -> MappingProxyType:
    return MappingProxyType(items)


FAMILIES = MappingProxyType(
    {
        family.model_type: family
        for family in (
            Family(
                "albert",
                TestRecipe(
                    "sentencepiece",
                    "AlbertTokenizerFast",
                    "AlbertConfig",
                    takes_embedding_size=True,
                    pieces=_frozen(
                        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"]
                    ),
                ),
                encoder="bert-like",
                weights_prefix="albert",
            ),
            Family("bert", TestRecipe("wordpiece", "BertTokenizerFast", "BertConfig"), "bert-like", "bert"),
            Family(
                "deberta-v2",
                TestRecipe(
                    "sentencepiece",
                    "DebertaV2TokenizerFast",
                    "DebertaV2Config",
                    special_ids=("pad_token_id",),
                    pieces=_frozen(pad_id=0, unk_id=3, bos_id=1, eos_id=2, user_defined_symbols=["[MASK]"]),
                    # DeBERTa-v3's settings: relative attention with position buckets, no token types
                    config=_frozen(
                        type_vocab_size=0,
                        relative_attention=True,
                        position_biased_input=False,
                        pos_att_type=["p2c", "c2p"],
                        position_buckets=256,
                        norm_rel_ebd="layer_norm",
                        share_att_key=True,
                        max_relative_positions=-1,
                    ),
                ),
                encoder="deberta",
                weights_prefix="deberta",
                fused=False,  # disentangled attention is not what the fusions match
            ),
            Family(
                "distilbert",
                TestRecipe("wordpiece", "DistilBertTokenizerFast", "DistilBertConfig"),
                "bert-like",
                "distilbert",
                config_names=_frozen(
                    hidden_size="dim",
                    num_hidden_layers="n_layers",
                    num_attention_heads="n_heads",
                    intermediate_size="hidden_dim",
                    hidden_act="activation",
                ),
            ),
            Family(
                "electra",
                TestRecipe("wordpiece", "ElectraTokenizerFast", "ElectraConfig", takes_embedding_size=True),
                "bert-like",
                "electra",
            ),
            Family(
                "roberta",
                TestRecipe(
                    "byte-level-bpe",
                    "RobertaTokenizerFast",
                    "RobertaConfig",
                    max_position_embeddings=514,
                    special_ids=("pad_token_id", "bos_token_id", "eos_token_id"),
                    config=_frozen(type_vocab_size=1),
                ),
                "bert-like",
                "roberta",
                positions_after_padding=True,
            ),
            Family(
                "xlm-roberta",
                TestRecipe(
                    "sentencepiece",
                    "XLMRobertaTokenizerFast",
                    "XLMRobertaConfig",
                    max_position_embeddings=514,
                    special_ids=("pad_token_id", "bos_token_id", "eos_token_id"),
                    pieces=_frozen(pad_id=1, unk_id=3, bos_id=0, eos_id=2),
                    config=_frozen(type_vocab_size=1),
                ),
                "bert-like",
                "roberta",
                positions_after_padding=True,
            ),
        )
    }
)
