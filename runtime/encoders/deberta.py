"""DeBERTa-v2/v3's encoder with the extractive question-answering head, in plain torch.

It computes what ``transformers``' ``DebertaV2ForQuestionAnswering`` computes in eval mode: disentangled
attention, whose scores add to the content-to-content product a content-to-position and a position-to-content
term read off a table of relative-position embeddings (relative distances bucketed logarithmically beyond
``position_buckets / 2``), post-LayerNorm layers, exact-erf GELU. Each layer's attention is one
``torch.nn.functional.scaled_dot_product_attention`` with the two relative terms as its additive mask (fused
memory-efficient kernels on GPU), and the query, key and value projections fused into one matrix product.
Padded keys are masked out, so right padding never changes the logits of real positions.

Weights are taken by name from the checkpoint's state dict (``runtime.encoders.checkpoint``): every tensor is used
and none may be missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.encoders.checkpoint import CheckpointTensors, UnsupportedCheckpoint, built_strictly

RELATIVE_TERMS = ("c2p", "p2c")  # content-to-position, position-to-content
# the convolution's activations (conv_act), as transformers' ACT2FN computes them
CONV_ACTIVATIONS = {"tanh": torch.tanh, "gelu": F.gelu}


@dataclass(frozen=True)
class DebertaShape:
    """The hyper-parameters the network is built from, read from ``config.json`` as ``DebertaV2Config`` reads
    them."""

    vocab_size: int
    embedding_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    attention_head_size: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    position_biased_input: bool  # absolute positions added to the embeddings (DeBERTa-v2/v3: no)
    relative_attention: bool
    pos_att_type: tuple[str, ...]  # of RELATIVE_TERMS
    position_buckets: int  # <= 0: distances not bucketed
    max_relative_positions: int
    share_att_key: bool  # the relative terms project the table with the layer's own query and key
    norm_rel_ebd: bool  # the relative table is layer-normalised first
    # DeBERTa-v2 xlarge's convolution over the embeddings, added to the first layer's output (0: none)
    conv_kernel_size: int = 0
    conv_groups: int = 1
    conv_act: str = "tanh"

    model_type = "deberta-v2"

    @property
    def max_positions(self) -> int:
        """The longest window the model takes (its relative distances are clamped, but the pipeline's windows
        are held to the absolute table's length all the same)."""
        return self.max_position_embeddings

    @property
    def attention_span(self) -> int:
        """Half the relative table's rows: distances run from -span to span - 1."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

    @property
    def scale_factor(self) -> int:
        """The scores are divided by sqrt(head size x (1 + the relative terms))."""
        return 1 + len(self.pos_att_type) if self.relative_attention else 1

    @classmethod
    def from_config(cls, config: dict) -> DebertaShape:
        if config.get("model_type") != cls.model_type:
            raise UnsupportedCheckpoint(f"model_type is {config.get('model_type')!r}, not {cls.model_type!r}")
        if config.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedCheckpoint(f"hidden_act={config['hidden_act']!r} is not supported (only 'gelu')")
        if config.get("conv_kernel_size", 0) > 0 and config.get("conv_act", "tanh") not in CONV_ACTIVATIONS:
            raise UnsupportedCheckpoint(
                f"conv_act={config['conv_act']!r} is not supported (only {', '.join(CONV_ACTIVATIONS)})"
            )
        terms = config.get("pos_att_type") or ()
        if isinstance(terms, str):
            terms = [term.strip() for term in terms.lower().split("|")]
        unknown = sorted(set(terms) - set(RELATIVE_TERMS))
        if unknown:
            raise UnsupportedCheckpoint(f"pos_att_type {unknown} is not supported (only {', '.join(RELATIVE_TERMS)})")
        norm = [part.strip() for part in str(config.get("norm_rel_ebd", "none")).lower().split("|")]
        try:
            hidden, heads = config["hidden_size"], config["num_attention_heads"]
            if hidden % heads:
                raise UnsupportedCheckpoint(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
            max_relative = config.get("max_relative_positions", -1)
            return cls(
                vocab_size=config["vocab_size"],
                embedding_size=config.get("embedding_size", hidden),
                hidden_size=hidden,
                num_hidden_layers=config["num_hidden_layers"],
                num_attention_heads=heads,
                attention_head_size=config.get("attention_head_size", hidden // heads),
                intermediate_size=config["intermediate_size"],
                max_position_embeddings=config["max_position_embeddings"],
                type_vocab_size=config.get("type_vocab_size", 0),
                layer_norm_eps=float(config.get("layer_norm_eps", 1e-7)),
                position_biased_input=config.get("position_biased_input", True),
                relative_attention=config.get("relative_attention", False),
                pos_att_type=tuple(term for term in RELATIVE_TERMS if term in terms),
                position_buckets=config.get("position_buckets", -1),
                max_relative_positions=max_relative if max_relative >= 1 else config["max_position_embeddings"],
                share_att_key=config.get("share_att_key", False),
                norm_rel_ebd="layer_norm" in norm,
                conv_kernel_size=config.get("conv_kernel_size", 0),
                conv_groups=config.get("conv_groups", 1),
                conv_act=config.get("conv_act", "tanh"),
            )
        except KeyError as missing:
            raise UnsupportedCheckpoint(f"config.json has no {missing}") from None

    def build(self, state: dict[str, torch.Tensor]) -> DebertaForQA:
        return DebertaForQA.from_state_dict(self, state)


def relative_positions(length: int, shape: DebertaShape) -> torch.Tensor:
    """[L, L] int64 on the CPU: query position minus key position, bucketed as DeBERTa-v2 buckets them (exact
    within ``position_buckets / 2``, logarithmic beyond, up to ``max_relative_positions``), in the same float32
    steps. A window of n tokens takes its top-left [n, n]."""
    positions = torch.arange(length, dtype=torch.long)
    relative = positions[:, None] - positions[None, :]
    if shape.position_buckets <= 0 or shape.max_relative_positions <= 0:
        return relative
    mid = shape.position_buckets // 2
    sign = torch.sign(relative)
    inside = (relative < mid) & (relative > -mid)
    distance = torch.where(inside, torch.tensor(mid - 1), torch.abs(relative))
    log_ratio = torch.log(torch.tensor((shape.max_relative_positions - 1) / mid))
    logarithmic = torch.ceil(torch.log(distance / mid) / log_ratio * (mid - 1)) + mid
    return torch.where(distance <= mid, relative.to(logarithmic.dtype), logarithmic * sign).to(torch.long)


class DebertaLayer(nn.Module):
    def __init__(self, shape: DebertaShape):
        super().__init__()
        hidden, inner = shape.hidden_size, shape.num_attention_heads * shape.attention_head_size
        self.heads, self.shape = shape.num_attention_heads, shape
        self.qkv = nn.Linear(hidden, 3 * inner)
        separate = shape.relative_attention and not shape.share_att_key
        self.pos_key = nn.Linear(hidden, inner) if separate and "c2p" in shape.pos_att_type else None
        self.pos_query = nn.Linear(hidden, inner) if separate and "p2c" in shape.pos_att_type else None
        self.attention_out = nn.Linear(inner, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)
        self.intermediate = nn.Linear(hidden, shape.intermediate_size)
        self.output = nn.Linear(shape.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=shape.layer_norm_eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[..., L, heads x size] -> [..., heads, L, size]."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-2, -3)

    def forward(
        self, hidden: torch.Tensor, keys: torch.Tensor, relative: torch.Tensor, table: torch.Tensor | None
    ) -> torch.Tensor:
        """``keys`` [B, 1, 1, L] bool, True where a key is a real token; ``relative`` [L, L] the (bucketed)
        query-minus-key distances, which pick rows of ``table``, the relative embeddings [2 x span, H] (None
        without relative attention)."""
        q, k, v = (self._heads(part) for part in self.qkv(hidden).chunk(3, dim=-1))
        scale = (q.shape[-1] * self.shape.scale_factor) ** -0.5
        bias = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
        if table is not None:
            span = self.shape.attention_span
            if self.shape.share_att_key:  # the layer's own query and key projections
                pos_query, pos_key, _ = self.qkv(table).chunk(3, dim=-1)
            else:
                pos_query = self.pos_query(table) if self.pos_query is not None else None
                pos_key = self.pos_key(table) if self.pos_key is not None else None
            length = hidden.shape[1]
            if "c2p" in self.shape.pos_att_type:
                c2p = q @ self._heads(pos_key).transpose(-1, -2)  # [B, heads, L, 2 x span]
                index = torch.clamp(relative + span, 0, 2 * span - 1).expand(*c2p.shape[:2], length, length)
                bias = bias + torch.gather(c2p, -1, index) * scale
            if "p2c" in self.shape.pos_att_type:
                p2c = k @ self._heads(pos_query).transpose(-1, -2)  # [B, heads, L (keys), 2 x span]
                index = torch.clamp(-relative + span, 0, 2 * span - 1).expand(*p2c.shape[:2], length, length)
                bias = bias + torch.gather(p2c, -1, index).transpose(-1, -2) * scale
        # masked keys' scores replaced (not shifted) by the dtype's lowest, as transformers masks them
        mask = bias.expand(*q.shape[:2], q.shape[2], k.shape[2]).masked_fill(~keys, torch.finfo(hidden.dtype).min)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        hidden = self.attention_norm(self.attention_out(context.transpose(1, 2).flatten(2)) + hidden)
        return self.output_norm(self.output(F.gelu(self.intermediate(hidden))) + hidden)


class DebertaForQA(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids)`` ([B, L] integer tensors, right padded) ->
    logits [B, L, 2] (start, end) in the module's dtype."""

    def __init__(self, shape: DebertaShape):
        super().__init__()
        self.shape = shape
        width = shape.embedding_size
        self.word_embeddings = nn.Embedding(shape.vocab_size, width)
        self.position_embeddings = (
            nn.Embedding(shape.max_position_embeddings, width) if shape.position_biased_input else None
        )
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, width) if shape.type_vocab_size else None
        self.embeddings_project = (
            nn.Linear(width, shape.hidden_size, bias=False) if width != shape.hidden_size else None
        )
        self.embedding_norm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.relative_embeddings = (
            nn.Embedding(2 * shape.attention_span, shape.hidden_size) if shape.relative_attention else None
        )
        self.relative_norm = (
            nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
            if shape.relative_attention and shape.norm_rel_ebd
            else None
        )
        self.layers = nn.ModuleList(DebertaLayer(shape) for _ in range(shape.num_hidden_layers))
        # every window's relative positions, computed once (from_state_dict): a window slices its own, so that
        # nothing in forward copies from the host (CUDA graphs capture it whole)
        self.register_buffer("relative_index", torch.zeros((0, 0), dtype=torch.long), persistent=False)
        self.conv = (
            nn.Conv1d(
                shape.hidden_size,
                shape.hidden_size,
                shape.conv_kernel_size,
                padding=(shape.conv_kernel_size - 1) // 2,
                groups=shape.conv_groups,
            )
            if shape.conv_kernel_size > 0
            else None
        )
        self.conv_norm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps) if self.conv is not None else None
        self.qa_outputs = nn.Linear(shape.hidden_size, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        hidden = self.word_embeddings(input_ids)
        if self.position_embeddings is not None:
            hidden = hidden + self.position_embeddings.weight[:length]
        if self.token_type_embeddings is not None:
            hidden = hidden + self.token_type_embeddings(token_type_ids)
        if self.embeddings_project is not None:
            hidden = self.embeddings_project(hidden)
        real = attention_mask[..., None].to(hidden.dtype)
        hidden = self.embedding_norm(hidden) * real
        keys = attention_mask[:, None, None, :].bool()
        table, relative = None, self.relative_index[:length, :length]
        if self.relative_embeddings is not None:
            table = self.relative_embeddings.weight
            if self.relative_norm is not None:
                table = self.relative_norm(table)
        embedded = hidden
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, keys, relative, table)
            if i == 0 and self.conv is not None and self.conv_norm is not None:
                # the embeddings convolved along the window (padding zero), added to the first layer's output
                convolved = self.conv(embedded.transpose(1, 2)).transpose(1, 2) * real
                activated = CONV_ACTIVATIONS[self.shape.conv_act](convolved)
                hidden = self.conv_norm(hidden + activated) * real
        return self.qa_outputs(hidden)

    @classmethod
    def from_state_dict(cls, shape: DebertaShape, state: dict[str, torch.Tensor]) -> DebertaForQA:
        """The network with the weights of a Hugging Face ``DebertaV2ForQuestionAnswering`` state dict
        (``runtime.encoders.checkpoint.built_strictly``)."""
        model = built_strictly(cls, shape, state, _renamed)
        model.relative_index = (  # built on the meta device, like the weights
            relative_positions(shape.max_positions, shape) if shape.relative_attention else torch.zeros((0, 0))
        ).long()
        return model


# ours -> theirs, under deberta.embeddings, deberta.encoder, and each layer (query, key and value concatenate)
EMBEDDINGS = {
    "word_embeddings": ("deberta.embeddings.word_embeddings", ("weight",)),
    "position_embeddings": ("deberta.embeddings.position_embeddings", ("weight",)),
    "token_type_embeddings": ("deberta.embeddings.token_type_embeddings", ("weight",)),
    "embeddings_project": ("deberta.embeddings.embed_proj", ("weight",)),
    "embedding_norm": ("deberta.embeddings.LayerNorm", ("weight", "bias")),
    "relative_embeddings": ("deberta.encoder.rel_embeddings", ("weight",)),
    "relative_norm": ("deberta.encoder.LayerNorm", ("weight", "bias")),
    "conv": ("deberta.encoder.conv.conv", ("weight", "bias")),
    "conv_norm": ("deberta.encoder.conv.LayerNorm", ("weight", "bias")),
    "qa_outputs": ("qa_outputs", ("weight", "bias")),
}
LAYER = {
    "qkv": ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
    "pos_key": "attention.self.pos_key_proj",
    "pos_query": "attention.self.pos_query_proj",
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}
# tensors transformers does not read: the position ids buffer older versions saved, and the absolute position
# table of checkpoints that do not add it (its _keys_to_ignore_on_load_unexpected)
IGNORED_TENSORS = ("deberta.embeddings.position_ids",)
UNUSED_POSITIONS = "deberta.embeddings.position_embeddings.weight"


def _renamed(state: dict[str, torch.Tensor], model: DebertaForQA) -> dict[str, torch.Tensor]:
    needed = {name for name, _ in model.named_parameters()}
    unused = () if model.position_embeddings is not None else (UNUSED_POSITIONS,)
    tensors = CheckpointTensors(state, ignored=(*IGNORED_TENSORS, *unused))
    take = tensors.take
    renamed: dict[str, torch.Tensor] = {}
    for ours, (theirs, suffixes) in EMBEDDINGS.items():
        for suffix in suffixes:
            if f"{ours}.{suffix}" in needed:
                renamed[f"{ours}.{suffix}"] = take(f"{theirs}.{suffix}")
    for i in range(len(model.layers)):
        ours, theirs = f"layers.{i}", f"deberta.encoder.layer.{i}"
        for suffix in ("weight", "bias"):
            renamed[f"{ours}.qkv.{suffix}"] = torch.cat([take(f"{theirs}.{name}.{suffix}") for name in LAYER["qkv"]])
        for part, name in LAYER.items():
            if part != "qkv" and f"{ours}.{part}.weight" in needed:
                for suffix in ("weight", "bias"):
                    renamed[f"{ours}.{part}.{suffix}"] = take(f"{theirs}.{name}.{suffix}")
    tensors.check_all_taken()
    return renamed
