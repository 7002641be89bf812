"""WavLM encoder (Chen et al., 2022) with Microsoft's checkpoint parameter names.

Every parameter is named exactly as in Microsoft's ``WavLM.py`` state dict, so a ``WavLM-Base+.pt``
``model`` dict (and the original project's ``__S__.model.*`` keys) load without renaming.
The forward pass returns what the original speaker encoder consumed: the transformer input and
the output of every transformer layer.
"""
from __future__ import annotations

import ast
import dataclasses
import math
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvLayerSpec = Tuple[int, int, int]  # (output channels, kernel size, stride)

_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "linear": lambda x: x,
}
_EXTRACTOR_MODES = ("default", "layer_norm")
_LAYER_NORM_EPS = 1e-5


def parse_conv_feature_layers(spec: str) -> List[ConvLayerSpec]:
    """Evaluate a fairseq ``conv_feature_layers`` string without running arbitrary code.

    Accepts list literals of ``(channels, kernel, stride)`` int tuples combined with ``+`` and
    ``* int``, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``.
    """

    def fail(reason: str) -> ValueError:
        return ValueError(f"conv_feature_layers {spec!r}: {reason}; expected e.g. "
                          f"\"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2\"")

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.List):
            return [evaluate(element) for element in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(evaluate(element) for element in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
                return left + right
            if isinstance(node.op, ast.Mult) and isinstance(left, list) and isinstance(right, int):
                return left * right
            raise fail("only list + list and list * int are allowed")
        raise fail(f"unsupported expression {ast.dump(node)}")

    try:
        tree = ast.parse(spec, mode="eval")
    except SyntaxError as error:
        raise fail(f"not a Python expression ({error.msg})") from None
    layers = evaluate(tree.body)
    if not isinstance(layers, list) or not layers:
        raise fail("the expression must give a non-empty list")
    for layer in layers:
        if not (isinstance(layer, tuple) and len(layer) == 3 and all(v > 0 for v in layer)):
            raise fail(f"layer {layer!r} is not a (channels, kernel, stride) tuple of positive ints")
    return layers


@dataclasses.dataclass(frozen=True)
class WavLMConfig:
    """The encoder-relevant part of Microsoft's WavLM ``cfg`` dict (same key names, same defaults).

    ``feature_grad_mult`` is kept for round-tripping checkpoints; it has no effect here because the
    convolutional feature extractor always runs frozen (without gradient).
    """

    extractor_mode: str = "default"
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    conv_bias: bool = False
    feature_grad_mult: float = 1.0
    normalize: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"int": int, "float": float, "bool": bool, "str": str}[field.type]
            if expected is float and type(value) is int:
                object.__setattr__(self, field.name, float(value))
            elif type(value) is not expected:
                raise TypeError(f"WavLM cfg key {field.name!r}: expected {field.type}, "
                                f"got {type(value).__name__} {value!r}")
        if self.extractor_mode not in _EXTRACTOR_MODES:
            raise ValueError(f"WavLM cfg key 'extractor_mode': expected one of {_EXTRACTOR_MODES}, "
                             f"got {self.extractor_mode!r}")
        if self.activation_fn not in _ACTIVATIONS:
            raise ValueError(f"WavLM cfg key 'activation_fn': expected one of "
                             f"{sorted(_ACTIVATIONS)}, got {self.activation_fn!r}")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"WavLM cfg: encoder_embed_dim {self.encoder_embed_dim} is not divisible "
                             f"by encoder_attention_heads {self.encoder_attention_heads}")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"WavLM cfg: encoder_embed_dim {self.encoder_embed_dim} is not divisible "
                             f"by conv_pos_groups {self.conv_pos_groups}")
        parse_conv_feature_layers(self.conv_feature_layers)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "WavLMConfig":
        """Build from a full Microsoft ``cfg`` dict; keys that do not shape the encoder are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in cfg.items() if key in names})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def conv_layers(self) -> List[ConvLayerSpec]:
        return parse_conv_feature_layers(self.conv_feature_layers)


class _Fp32GroupNorm(nn.GroupNorm):
    """Group norm computed in float32 whatever the input dtype (as in fairseq)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                            self.eps).type_as(x)


class _Fp32LayerNorm(nn.LayerNorm):
    """Layer norm computed in float32 whatever the input dtype (as in fairseq)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                            self.bias.float(), self.eps).type_as(x)


class _TransposeLast(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


class ConvFeatureExtractor(nn.Module):
    """Strided 1-D convolutions from waveform (B, S) to features (B, C, T).

    Block ``i`` is a ``Sequential`` whose children are named as in Microsoft's model (``0`` the
    convolution, ``2`` the normalisation) so the state-dict keys match; the checkpoint's slot ``1``
    is a dropout of probability 0 and holds no parameters.
    """

    def __init__(self, layers: Sequence[ConvLayerSpec], mode: str, conv_bias: bool):
        super().__init__()
        blocks = []
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(layers):
            children: "OrderedDict[str, nn.Module]" = OrderedDict(
                [("0", nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=conv_bias))])
            if mode == "layer_norm":
                children["2"] = nn.Sequential(_TransposeLast(), _Fp32LayerNorm(channels), _TransposeLast())
            elif index == 0:
                children["2"] = _Fp32GroupNorm(channels, channels, affine=True)
            children["3"] = nn.GELU()
            nn.init.kaiming_normal_(children["0"].weight)
            blocks.append(nn.Sequential(children))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)
        self.kernels_strides = [(kernel, stride) for _, kernel, stride in layers]

    def forward(self, waveforms: Tensor) -> Tensor:
        x = waveforms.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x

    def output_lengths(self, sample_lengths: Tensor) -> Tensor:
        lengths = sample_lengths
        for kernel, stride in self.kernels_strides:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)


class WeightNormConv1d(nn.Module):
    """Grouped 1-D convolution with weight normalisation over dim 2 (``weight = g * v / ||v||``).

    Parameters are ``weight_g`` (1, 1, K), ``weight_v`` and ``bias``: the names that
    ``torch.nn.utils.weight_norm(conv, name="weight", dim=2)`` gave in Microsoft's checkpoints.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.groups = groups
        self.padding = kernel_size // 2
        std = math.sqrt(4.0 / (kernel_size * channels))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel_size) * std)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True).clone())
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class _SamePad(nn.Module):
    """Drop the extra last frame that symmetric padding gives an even kernel."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[..., :-self.remove] if self.remove else x


def relative_position_buckets(length: int, num_buckets: int, max_distance: int,
                              device: Optional[torch.device] = None) -> Tensor:
    """Bucket index of ``key - query`` for every (query, key) pair: LongTensor (length, length).

    Half the buckets hold positive offsets. Within each half, offsets below a quarter of the bucket
    count get their own bucket; larger ones share log-spaced buckets up to ``max_distance``.
    """
    positions = torch.arange(length, dtype=torch.long, device=device)
    offsets = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, far)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with WavLM's gated relative position bias.

    The bias table (``relative_attention_bias``) exists only in the layer that computes the bias
    (layer 0); the ungated bias it returns is passed down the stack, where every layer gates it
    with a sigmoid function of its own input (``grep_linear``, ``grep_a``).
    """

    def __init__(self, cfg: WavLMConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        self.num_heads = heads
        self.head_dim = dim // heads
        self.dropout = cfg.attention_dropout
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.relative_attention_bias = nn.Embedding(cfg.num_buckets, heads) if has_relative_attention_bias else None
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def compute_bias(self, length: int) -> Tensor:
        """Ungated position bias (heads, length, length) from this layer's table."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance,
                                            device=self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor],
                position_bias: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """x (B, T, D); key_padding_mask (B, T), True at padded frames; returns (output, bias)."""
        batch, length, dim = x.shape
        if self.relative_attention_bias is not None and position_bias is None:
            position_bias = self.compute_bias(length)
        heads_view = (batch, length, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(heads_view).transpose(1, 2)
        k = self.k_proj(x).view(heads_view).transpose(1, 2)
        v = self.v_proj(x).view(heads_view).transpose(1, 2)
        mask = None
        if position_bias is not None:
            mask = position_bias.unsqueeze(0)
            if self.gru_rel_pos:
                gates = self.grep_linear(x.view(heads_view).transpose(1, 2))
                gate_a, gate_b = torch.sigmoid(gates.view(batch, self.num_heads, length, 2, 4).sum(-1)).chunk(2, dim=-1)
                mask = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * mask
        if key_padding_mask is not None:
            padding = torch.zeros(batch, 1, 1, length, dtype=q.dtype, device=q.device)
            padding = padding.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            mask = padding if mask is None else mask + padding
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else mask.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim)), position_bias


class TransformerLayer(nn.Module):
    """One encoder layer, post-LN (Base, Base+) or pre-LN (``layer_norm_first``, Large)."""

    def __init__(self, cfg: WavLMConfig, has_relative_attention_bias: bool):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.activation = _ACTIVATIONS[cfg.activation_fn]
        self.self_attn = MultiheadSelfAttention(cfg, has_relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(x)))))

    def forward(self, x: Tensor, key_padding_mask: Optional[Tensor],
                position_bias: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        if self.layer_norm_first:
            attended, position_bias = self.self_attn(self.self_attn_layer_norm(x), key_padding_mask, position_bias)
            x = x + self.dropout(attended)
            return x + self._feed_forward(self.final_layer_norm(x)), position_bias
        attended, position_bias = self.self_attn(x, key_padding_mask, position_bias)
        x = self.self_attn_layer_norm(x + self.dropout(attended))
        return self.final_layer_norm(x + self._feed_forward(x)), position_bias


class TransformerEncoder(nn.Module):
    """Positional convolution, encoder layer norm and the stack of transformer layers."""

    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups),
                                      _SamePad(cfg.conv_pos), nn.GELU())
        self.layer_norm_first = cfg.layer_norm_first
        self.layer_norm = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layerdrop = cfg.encoder_layerdrop
        self.layers = nn.ModuleList(
            TransformerLayer(cfg, has_relative_attention_bias=cfg.relative_position_embedding and index == 0)
            for index in range(cfg.encoder_layers))

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> List[Tensor]:
        """Return the transformer input followed by each layer's output.

        A layer skipped by layer drop (train mode) repeats its input. In pre-LN models the
        encoder layer norm is not applied to the outputs, as in Microsoft's ``extract_features``
        with an ``output_layer``.
        """
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        states = [x]
        position_bias = None
        for layer in self.layers:
            if not (self.training and self.layerdrop > 0 and torch.rand(()).item() <= self.layerdrop):
                x, position_bias = layer(x, padding_mask, position_bias)
            states.append(x)
        return states


class WavLM(nn.Module):
    """WavLM encoder; ``forward`` gives ``encoder_layers + 1`` hidden states of shape (B, T, D).

    ``mask_emb`` (the pre-training mask embedding) is unused here but kept so that checkpoints that
    contain it (Microsoft's, and the original project's ``__S__.model.mask_emb``) load strictly.
    """

    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.cfg = cfg
        conv_layers = cfg.conv_layers
        conv_dim = conv_layers[-1][0]
        self.embed_dim = cfg.encoder_embed_dim
        self.num_hidden_states = cfg.encoder_layers + 1
        self.feature_extractor = ConvFeatureExtractor(conv_layers, cfg.extractor_mode, cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(conv_dim, eps=_LAYER_NORM_EPS)
        self.post_extract_proj = nn.Linear(conv_dim, self.embed_dim) if conv_dim != self.embed_dim else None
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(self.embed_dim).uniform_())
        self.encoder = TransformerEncoder(cfg)
        self._init_transformer()

    def _init_transformer(self) -> None:
        """BERT-style initialisation of the linear and embedding layers, as in Microsoft's encoder."""
        modules = [self.encoder.layers] + ([self.post_extract_proj] if self.post_extract_proj is not None else [])
        for root in modules:
            for module in root.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear):
                    nn.init.zeros_(module.bias)

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame."""
        field = 1
        for kernel, stride in reversed(self.feature_extractor.kernels_strides):
            field = (field - 1) * stride + kernel
        return field

    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Frames the feature extractor gives for each number of valid samples (LongTensor)."""
        return self.feature_extractor.output_lengths(torch.as_tensor(sample_lengths, dtype=torch.long))

    def _check_inputs(self, waveforms: Tensor, lengths: Optional[Tensor]) -> None:
        if waveforms.dim() != 2 or not waveforms.is_floating_point():
            raise ValueError(f"WavLM expects float waveforms of shape (batch, samples), got "
                             f"{waveforms.dtype} {tuple(waveforms.shape)}")
        if waveforms.shape[1] < self.receptive_field:
            raise ValueError(f"WavLM needs at least {self.receptive_field} samples, got {waveforms.shape[1]}")
        if lengths is None:
            return
        if lengths.shape != (waveforms.shape[0],) or lengths.is_floating_point():
            raise ValueError(f"lengths must be an integer tensor of shape ({waveforms.shape[0]},), "
                             f"got {lengths.dtype} {tuple(lengths.shape)}")
        if int(lengths.min()) < self.receptive_field or int(lengths.max()) > waveforms.shape[1]:
            raise ValueError(f"lengths must lie in [{self.receptive_field}, {waveforms.shape[1]}], "
                             f"got {lengths.tolist()}")

    def _normalize_waveforms(self, waveforms: Tensor, valid: Optional[Tensor]) -> Tensor:
        """Zero mean, unit variance per utterance over its valid samples (``cfg.normalize``).

        Written out rather than ``F.layer_norm``, whose shape argument the ONNX exporter cannot make dynamic.
        """
        if valid is None:
            mean = waveforms.mean(dim=1, keepdim=True)
            variance = (waveforms - mean).square().mean(dim=1, keepdim=True)
            return (waveforms - mean) * torch.rsqrt(variance + _LAYER_NORM_EPS)
        count = valid.sum(dim=1, keepdim=True)
        mean = (waveforms * valid).sum(dim=1, keepdim=True) / count
        variance = (((waveforms - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
        return (waveforms - mean) * torch.rsqrt(variance + _LAYER_NORM_EPS) * valid

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> List[Tensor]:
        """Hidden states [transformer input, layer 1 output, ..., layer L output], each (B, T, D).

        ``lengths`` gives each row's valid samples; frames past ``frame_lengths(lengths)`` are
        zeroed before the positional convolution and never attended to. What is exact under
        padding: with ``extractor_mode='layer_norm'`` a row's valid frames equal those of the row
        run alone (up to float rounding). With ``'default'`` (Base, Base+) they do not: the first
        block's group norm normalises each channel over all time steps, padded zeros included, so
        every frame changes; batch equal-length crops or run utterances one by one when exact
        features matter. Padded frames' outputs are meaningless in both modes.
        """
        self._check_inputs(waveforms, lengths)
        valid_samples = None
        if lengths is not None:
            positions = torch.arange(waveforms.shape[1], device=waveforms.device)
            valid_samples = (positions[None, :] < lengths.to(waveforms.device)[:, None]).to(waveforms.dtype)
        if self.cfg.normalize:
            waveforms = self._normalize_waveforms(waveforms, valid_samples)
        with torch.no_grad():
            features = self.feature_extractor(waveforms).transpose(1, 2)
        features = self.layer_norm(features)
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        features = self.dropout_input(features)
        padding_mask = None
        if lengths is not None:
            frames = torch.arange(features.shape[1], device=features.device)
            padding_mask = frames[None, :] >= self.frame_lengths(lengths).to(features.device)[:, None]
        return self.encoder(features, padding_mask)
