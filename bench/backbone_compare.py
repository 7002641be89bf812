#!/usr/bin/env python
"""The project's transformer (models/wavlm.py) against torchaudio's builder, for HuBERT / wav2vec 2.0 shapes.

Both run the same random weights (the full Base or Large shape; torchaudio's copy made by its own fairseq
key map) in evaluation mode: the largest relative difference of every layer output (a whole batch, and a
padded one with lengths, which both accept), and the forward time of each (median of alternating timed
runs after one warm-up). This is the measurement behind docs/backbones.md's choice of implementation.

    python -m bench.backbone_compare                              # Base and Large, CPU, 1 x 4 s
    python -m bench.backbone_compare --shapes base --device cuda --batch 8
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import List

import torch
import torchaudio
from torch import Tensor
from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

from bench.train_speed import median, time_flows
from models.wavlm import WavLM, WavLMConfig

BASE = WavLMConfig()
"""HuBERT Base / wav2vec 2.0 Base: WavLMConfig's defaults are fairseq's."""
LARGE = dataclasses.replace(BASE, extractor_mode="layer_norm", encoder_layers=24, encoder_embed_dim=1024,
                            encoder_ffn_embed_dim=4096, encoder_attention_heads=16, layer_norm_first=True)
SHAPES = {"base": BASE, "large": LARGE}


def torchaudio_copy(model: WavLM) -> torch.nn.Module:
    """torchaudio's ``wav2vec2_model`` of ``model``'s shape, with its weights (fairseq names: torchaudio's map)."""
    cfg = model.cfg
    copy = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm" if cfg.extractor_mode == "default" else "layer_norm",
        extractor_conv_layer_config=cfg.conv_layers, extractor_conv_bias=cfg.conv_bias,
        encoder_embed_dim=cfg.encoder_embed_dim, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=cfg.conv_pos,
        encoder_pos_conv_groups=cfg.conv_pos_groups, encoder_num_layers=cfg.encoder_layers,
        encoder_num_heads=cfg.encoder_attention_heads, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=cfg.encoder_ffn_embed_dim, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=cfg.layer_norm_first, encoder_layer_drop=0.0, aux_num_out=None)
    copy.load_state_dict(_convert_state_dict(model.state_dict()), strict=True)
    return copy


def relative_difference(ours: List[Tensor], theirs: List[Tensor], frames: Tensor) -> float:
    """max |ours - theirs| / max |theirs| over the states and each row's valid frames."""
    return max(float((a[row, :n] - b[row, :n]).abs().max() / b[row, :n].abs().max())
               for a, b in zip(ours, theirs, strict=True) for row, n in enumerate(frames.tolist()))


def bench(shape: str, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    ours = WavLM(SHAPES[shape]).eval()
    with torch.no_grad():
        for parameter in ours.parameters():  # norms, biases and the positional convolution all non-trivial
            parameter.add_(torch.randn_like(parameter) * 0.02)
    theirs = torchaudio_copy(ours).eval().to(device)
    ours.to(device)
    samples = int(args.seconds * 16000)
    waveforms = torch.randn(args.batch, samples, generator=torch.Generator().manual_seed(1)).to(device)
    lengths = torch.linspace(samples // 2, samples, args.batch).long().to(device)
    padded = waveforms * (torch.arange(samples, device=device)[None, :] < lengths[:, None])
    with torch.no_grad():
        whole = relative_difference(ours(waveforms)[1:], theirs.extract_features(waveforms)[0],
                                    ours.frame_lengths(torch.full_like(lengths, samples)))
        padded_difference = relative_difference(ours(padded, lengths)[1:], theirs.extract_features(padded, lengths)[0],
                                                ours.frame_lengths(lengths))

    def run_ours() -> object:
        with torch.no_grad():
            return ours(waveforms)

    def run_theirs() -> object:
        with torch.no_grad():
            return theirs.extract_features(waveforms)

    times = time_flows({"ours": run_ours, "torchaudio": run_theirs}, args.repeats, 1, device)
    ours_s, theirs_s = median(times["ours"]), median(times["torchaudio"])
    print(f"{shape:5s} ({ours.cfg.encoder_layers} layers)  largest relative difference: whole {whole:.1e}, padded "
          f"{padded_difference:.1e}  |  forward: ours {ours_s * 1e3:.0f} ms, torchaudio {theirs_s * 1e3:.0f} ms "
          f"(ratio {ours_s / theirs_s:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["base", "large"], choices=sorted(SHAPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (the median counts)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{device}, {torch.get_num_threads()} CPU threads, batch {args.batch} x {args.seconds} s, torch "
          f"{torch.__version__}, torchaudio {torchaudio.__version__}", flush=True)
    for shape in args.shapes:
        bench(shape, args, device)


if __name__ == "__main__":
    main()
