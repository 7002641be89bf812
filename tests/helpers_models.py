"""Shared fixtures for the models tests: random weights and independent reference models."""
from __future__ import annotations

from typing import Dict, List

import torch
import torchaudio
from torch import Tensor, nn

from models.wavlm import WavLM, WavLMConfig


def randomize_parameters_(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add seeded noise to every parameter, so that norms, biases and gates are all non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def random_wavlm(cfg: WavLMConfig, seed: int = 0) -> WavLM:
    torch.manual_seed(seed)
    model = WavLM(cfg)
    randomize_parameters_(model, seed + 1)
    return model.eval()


def _torchaudio_key(key: str) -> str:
    """Microsoft key -> torchaudio Wav2Vec2Model key (q/k/v are handled by the caller)."""
    parts = key.split(".")
    if parts[0] == "feature_extractor":
        index, slot = parts[2], parts[3]
        kind = "conv" if slot == "0" else "layer_norm"
        return f"feature_extractor.conv_layers.{index}.{kind}.{parts[-1]}"
    if parts[0] == "layer_norm":
        return f"encoder.feature_projection.layer_norm.{parts[1]}"
    if parts[0] == "post_extract_proj":
        return f"encoder.feature_projection.projection.{parts[1]}"
    if key.startswith("encoder.pos_conv.0."):
        name = {"bias": "bias", "weight_g": "parametrizations.weight.original0",
                "weight_v": "parametrizations.weight.original1"}[parts[-1]]
        return f"encoder.transformer.pos_conv_embed.conv.{name}"
    if key.startswith("encoder.layer_norm."):
        return f"encoder.transformer.layer_norm.{parts[-1]}"
    layer = f"encoder.transformer.layers.{parts[2]}"
    rest = ".".join(parts[3:])
    renames = {
        "self_attn.out_proj.weight": "attention.attention.out_proj.weight",
        "self_attn.out_proj.bias": "attention.attention.out_proj.bias",
        "self_attn.grep_linear.weight": "attention.gru_rel_pos_linear.weight",
        "self_attn.grep_linear.bias": "attention.gru_rel_pos_linear.bias",
        "self_attn.grep_a": "attention.gru_rel_pos_const",
        "self_attn.relative_attention_bias.weight": "attention.rel_attn_embed.weight",
        "self_attn_layer_norm.weight": "layer_norm.weight",
        "self_attn_layer_norm.bias": "layer_norm.bias",
        "fc1.weight": "feed_forward.intermediate_dense.weight",
        "fc1.bias": "feed_forward.intermediate_dense.bias",
        "fc2.weight": "feed_forward.output_dense.weight",
        "fc2.bias": "feed_forward.output_dense.bias",
        "final_layer_norm.weight": "final_layer_norm.weight",
        "final_layer_norm.bias": "final_layer_norm.bias",
    }
    return f"{layer}.{renames[rest]}"


def torchaudio_copy(model: WavLM) -> nn.Module:
    """The same network built by torchaudio, with ``model``'s weights (strict load)."""
    cfg = model.cfg
    reference = torchaudio.models.wav2vec2.wavlm_model(
        extractor_mode="group_norm" if cfg.extractor_mode == "default" else "layer_norm",
        extractor_conv_layer_config=cfg.conv_layers, extractor_conv_bias=cfg.conv_bias,
        encoder_embed_dim=cfg.encoder_embed_dim, encoder_projection_dropout=cfg.dropout_input,
        encoder_pos_conv_kernel=cfg.conv_pos, encoder_pos_conv_groups=cfg.conv_pos_groups,
        encoder_num_layers=cfg.encoder_layers, encoder_num_heads=cfg.encoder_attention_heads,
        encoder_num_buckets=cfg.num_buckets, encoder_max_distance=cfg.max_distance,
        encoder_attention_dropout=cfg.attention_dropout, encoder_ff_interm_features=cfg.encoder_ffn_embed_dim,
        encoder_ff_interm_dropout=cfg.activation_dropout, encoder_dropout=cfg.dropout,
        encoder_layer_norm_first=cfg.layer_norm_first, encoder_layer_drop=cfg.encoder_layerdrop,
        aux_num_out=None)
    state: Dict[str, Tensor] = {}
    ours = model.state_dict()
    for key, value in ours.items():
        if key == "mask_emb" or ".self_attn.q_proj." in key or ".self_attn.k_proj." in key \
                or ".self_attn.v_proj." in key:
            continue
        state[_torchaudio_key(key)] = value
    for index in range(cfg.encoder_layers):
        prefix = f"encoder.layers.{index}.self_attn"
        for kind in ("weight", "bias"):
            state[f"encoder.transformer.layers.{index}.attention.attention.in_proj_{kind}"] = torch.cat(
                [ours[f"{prefix}.{name}_proj.{kind}"] for name in ("q", "k", "v")])
    reference.load_state_dict(state, strict=True)
    return reference.eval()


def max_abs_diff(ours: List[Tensor], theirs: List[Tensor]) -> float:
    assert len(ours) == len(theirs)
    return max(float((a - b).detach().abs().max()) for a, b in zip(ours, theirs))
