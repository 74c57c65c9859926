"""The BERT-like encoder with the extractive question-answering head, in plain torch (BERT, ELECTRA, DistilBERT,
RoBERTa, XLM-RoBERTa, ALBERT).

It computes what ``transformers``' ``ElectraForQuestionAnswering`` computes in eval mode (absolute position
embeddings, post-LayerNorm layers, exact-erf GELU), and so what ``BertForQuestionAnswering``,
``DistilBertForQuestionAnswering``, ``RobertaForQuestionAnswering``, ``XLMRobertaForQuestionAnswering`` and
``AlbertForQuestionAnswering`` compute (the same layers: BERT without ELECTRA's embedding projection; DistilBERT
under other names, without token types; RoBERTa's positions counted from after its padding index; ALBERT's
layers shared across the depth, its GELU the tanh approximation, its embeddings always projected), with the
attention of each layer done by ``torch.nn.functional.scaled_dot_product_attention`` (fused flash /
memory-efficient kernels on GPU) and the query, key and value projections fused into one matrix product. Padded
keys are masked out, so right padding never changes the logits of real positions. DeBERTa's encoder is
``runtime.encoders.deberta``.

Weights are taken by name from the checkpoint's state dict (``runtime.encoders.checkpoint``): every tensor is used
and none may be missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.encoders.checkpoint import CheckpointTensors, UnsupportedCheckpoint, built_strictly
from runtime.families import FAMILIES

# the families this encoder reproduces (config.json's model_type)
REPRODUCED = tuple(name for name, family in FAMILIES.items() if family.encoder == "bert-like")

# the activations transformers names in hidden_act, as torch computes them (gelu_new: the tanh approximation)
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh"}
# Tensors a question-answering model does not read, as transformers does not: buffers older versions saved, and
# the pooler that checkpoints fine-tuned from a pre-trained model may still carry
IGNORED_TENSORS = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.dense.weight", "pooler.dense.bias")


@dataclass(frozen=True)
class BertLikeShape:
    """The hyper-parameters the network is built from, read from ``config.json``."""

    model_type: str
    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    position_offset: int = 0  # RoBERTa's: the first position is its padding index + 1
    hidden_act: str = "gelu"  # ACTIVATIONS
    projected: bool = False  # embeddings projected to the hidden width (ELECTRA's when narrower; ALBERT's always)
    # num_hidden_layers passes, each through one group of inner_group_num layers: ALBERT's sharing (the others:
    # a group of one layer per pass)
    num_hidden_groups: int = 1
    inner_group_num: int = 1

    @property
    def prefix(self) -> str:
        return FAMILIES[self.model_type].weights_prefix

    @property
    def schedule(self) -> tuple[int, ...]:
        """The distinct layers (``num_hidden_groups * inner_group_num``) the hidden states pass through, in order:
        each layer once, or ALBERT's groups shared across the depth (transformers' ``AlbertTransformer``)."""
        passes, groups = self.num_hidden_layers, self.num_hidden_groups
        return tuple(
            int(i / (passes / groups)) * self.inner_group_num + j
            for i in range(passes)
            for j in range(self.inner_group_num)
        )

    @property
    def max_positions(self) -> int:
        """The longest window the position table holds."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_config(cls, config: dict) -> BertLikeShape:
        model_type = config.get("model_type")
        if model_type not in REPRODUCED:
            raise UnsupportedCheckpoint(f"model_type is {model_type!r}, not one of {', '.join(REPRODUCED)}")
        family = FAMILIES[model_type]
        if model_type == "distilbert":
            if config.get("sinusoidal_pos_embds", False):
                raise UnsupportedCheckpoint("sinusoidal_pos_embds=True is not supported (learned positions only)")
            config = {**config, "type_vocab_size": 0}  # it has no token types
        renamed = {ours: config[theirs] for ours, theirs in family.config_names.items() if theirs in config}
        config = {**config, **renamed}
        if config.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise UnsupportedCheckpoint(
                f"hidden_act={config['hidden_act']!r} is not supported (only {', '.join(map(repr, ACTIVATIONS))})"
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedCheckpoint(
                f"position_embedding_type={config['position_embedding_type']!r} is not supported (only 'absolute')"
            )
        if config.get("is_decoder", False) or config.get("add_cross_attention", False):
            raise UnsupportedCheckpoint("decoder / cross-attention models are not supported")
        config = {"embedding_size": config.get("hidden_size"), **config}  # BERT and RoBERTa: no projection
        derived = ("model_type", "layer_norm_eps", "position_offset", "projected")
        if model_type != "albert":  # a layer of its own for each pass
            config = {**config, "num_hidden_groups": config.get("num_hidden_layers"), "inner_group_num": 1}
        config = {"hidden_act": "gelu", **config}
        try:
            shape = cls(
                **{name: config[name] for name in cls.__dataclass_fields__ if name not in derived},
                model_type=model_type,
                layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
                position_offset=config["pad_token_id"] + 1 if family.positions_after_padding else 0,
                projected=model_type == "albert" or config["embedding_size"] != config["hidden_size"],
            )
        except KeyError as missing:
            raise UnsupportedCheckpoint(f"config.json has no {missing}") from None
        if shape.num_hidden_layers % shape.num_hidden_groups:
            raise UnsupportedCheckpoint(
                f"num_hidden_layers {shape.num_hidden_layers} is not a multiple of num_hidden_groups "
                f"{shape.num_hidden_groups}"
            )
        if shape.hidden_size % shape.num_attention_heads:
            raise UnsupportedCheckpoint(
                f"hidden_size {shape.hidden_size} is not a multiple of num_attention_heads {shape.num_attention_heads}"
            )
        return shape

    def build(self, state: dict[str, torch.Tensor]) -> BertLikeForQA:
        return BertLikeForQA.from_state_dict(self, state)


class BertLikeLayer(nn.Module):
    def __init__(self, shape: BertLikeShape):
        super().__init__()
        hidden = shape.hidden_size
        self.heads = shape.num_attention_heads
        self.approximate = ACTIVATIONS[shape.hidden_act]
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)
        self.intermediate = nn.Linear(hidden, shape.intermediate_size)
        self.output = nn.Linear(shape.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        # [B, L, 3H] -> 3 x [B, heads, L, head_size]
        q, k, v = self.qkv(hidden).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        context = context.transpose(1, 2).reshape(batch, length, width)
        hidden = self.attention_norm(self.attention_out(context) + hidden)
        intermediate = F.gelu(self.intermediate(hidden), approximate=self.approximate)
        return self.output_norm(self.output(intermediate) + hidden)


class BertLikeForQA(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids)`` ([B, L] integer tensors, right padded) ->
    logits [B, L, 2] (start, end) in the module's dtype."""

    def __init__(self, shape: BertLikeShape):
        super().__init__()
        self.shape = shape
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.embedding_size)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, shape.embedding_size)
        # DistilBERT has no token types: those the step is given are never read
        self.token_type_embeddings = (
            nn.Embedding(shape.type_vocab_size, shape.embedding_size) if shape.type_vocab_size else None
        )
        self.embedding_norm = nn.LayerNorm(shape.embedding_size, eps=shape.layer_norm_eps)
        self.embeddings_project = nn.Linear(shape.embedding_size, shape.hidden_size) if shape.projected else None
        self.layers = nn.ModuleList(BertLikeLayer(shape) for _ in range(max(shape.schedule) + 1))
        self.qa_outputs = nn.Linear(shape.hidden_size, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        length, offset = input_ids.shape[1], self.shape.position_offset
        positions = self.position_embeddings.weight[offset : offset + length]
        hidden = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:  # summed in transformers' order: words, types, positions
            hidden = hidden + self.token_type_embeddings(token_type_ids)
        hidden = hidden + positions
        hidden = self.embedding_norm(hidden)
        if self.embeddings_project is not None:
            hidden = self.embeddings_project(hidden)
        # [B, 1, 1, L] additive mask, as transformers makes it: every query attends to its window's real
        # tokens only (a window with no token at all attends uniformly rather than giving NaN)
        key_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for index in self.shape.schedule:
            hidden = self.layers[index](hidden, key_mask)
        return self.qa_outputs(hidden)

    @classmethod
    def from_state_dict(cls, shape: BertLikeShape, state: dict[str, torch.Tensor]) -> BertLikeForQA:
        """The network with the weights of a Hugging Face ``<family>ForQuestionAnswering`` state dict
        (``built_strictly``)."""
        return built_strictly(cls, shape, state, _renamed)


# each layer's tensors under the family's names: ours -> theirs, within the layer (query, key and value concatenate)
BERT_LAYER = {
    "layer": "{prefix}.encoder.layer.{i}",
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}
ALBERT_LAYER = {  # layer i: the inner one of its group
    "layer": "{prefix}.encoder.albert_layer_groups.{group}.albert_layers.{inner}",
    "qkv": ("attention.query", "attention.key", "attention.value"),
    "attention_out": "attention.dense",
    "attention_norm": "attention.LayerNorm",
    "intermediate": "ffn",
    "output": "ffn_output",
    "output_norm": "full_layer_layer_norm",
}
DISTILBERT_LAYER = {
    "layer": "{prefix}.transformer.layer.{i}",
    "qkv": ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
    "attention_out": "attention.out_lin",
    "attention_norm": "sa_layer_norm",
    "intermediate": "ffn.lin1",
    "output": "ffn.lin2",
    "output_norm": "output_layer_norm",
}


# the embedding projection's name, in the families that have one
PROJECTIONS = {"electra": "electra.embeddings_project", "albert": "albert.encoder.embedding_hidden_mapping_in"}


def _renamed(state: dict[str, torch.Tensor], model: BertLikeForQA) -> dict[str, torch.Tensor]:
    """``state`` (Hugging Face names, under the family's prefix) under this module's names, query/key/value
    concatenated."""
    prefix = model.shape.prefix
    tensors = CheckpointTensors(state, ignored=(f"{prefix}.{name}" for name in IGNORED_TENSORS))
    take = tensors.take

    def move(ours: str, theirs: str, suffixes=("weight", "bias")) -> None:
        for suffix in suffixes:
            renamed[f"{ours}.{suffix}"] = take(f"{theirs}.{suffix}")

    renamed: dict[str, torch.Tensor] = {}
    e = f"{prefix}.embeddings"
    tables = ("word_embeddings", "position_embeddings")
    for table in (*tables, "token_type_embeddings") if model.token_type_embeddings is not None else tables:
        move(table, f"{e}.{table}", ("weight",))
    move("embedding_norm", f"{e}.LayerNorm")
    if model.embeddings_project is not None:
        move("embeddings_project", PROJECTIONS[prefix])
    names = {"distilbert": DISTILBERT_LAYER, "albert": ALBERT_LAYER}.get(prefix, BERT_LAYER)
    inner = model.shape.inner_group_num
    for i in range(len(model.layers)):
        theirs = str(names["layer"]).format(prefix=prefix, i=i, group=i // inner, inner=i % inner)
        ours = f"layers.{i}"
        for suffix in ("weight", "bias"):
            renamed[f"{ours}.qkv.{suffix}"] = torch.cat([take(f"{theirs}.{name}.{suffix}") for name in names["qkv"]])
        for part in ("attention_out", "attention_norm", "intermediate", "output", "output_norm"):
            move(f"{ours}.{part}", f"{theirs}.{names[part]}")
    move("qa_outputs", "qa_outputs")
    tensors.check_all_taken()
    return renamed
