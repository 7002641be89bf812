"""The demo's stand-in for WavLM Base+: a small random WavLM whose frozen front end is a filterbank.

No pre-trained model can be downloaded here, so the demo fine-tunes a randomly initialised WavLM
in Microsoft's checkpoint format. Its transformer layers are random. Its convolutional feature
extractor is frozen during fine-tuning (docs/method.md §5), so random weights there would stay random; instead
its three convolutions are set by hand to compute band energies, the kind of front end pre-training
gives a real WavLM:

1. ``(2P, P, P)``: the waveform cut into frames of ``P`` samples, each sample once with each sign.
   The block's group norm then scales every channel by the utterance's level, and since
   GELU(x) - GELU(-x) = x the next layer can read the waveform back linearly.
2. ``(4B, W/P, H/P)``: ``B`` Hann-windowed cosine and sine filters of ``W`` samples every ``H``
   samples, centre frequencies mel-spaced over 100-3800 Hz (the demo's audio is 8 kHz), each with
   both signs; after GELU, GELU(a) + GELU(-a) is a rectified magnitude.
3. ``(B, R, R)``: each band's four rectified filters summed and averaged over ``R`` frames: a band
   energy envelope every H*R samples (20 ms, WavLM's frame rate).

Measured on the demo corpus, training on the true speaker labels for 10 epochs (demo_round.yaml):
top-1 accuracy 78 % and training-set clustering NMI 0.905 with this front end, against 50 % and
0.79 with random orthogonal convolutions (and 53 s against 81 s of training: three small
convolutions instead of seven 128-channel ones).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from utils.atomic import atomic_torch_save

SAMPLE_RATE = 16000
PHASES = 4
"""P: samples per frame of the first convolution."""
BANDS = 32
"""B: filterbank bands."""
WINDOW = 400
"""W: filter length in samples (25 ms)."""
HOP = 80
"""H: filter hop in samples (5 ms)."""
ENVELOPE_FRAMES = 4
"""R: filter outputs averaged into one frame (H * R = 320 samples, 20 ms)."""
LOWEST_HZ, HIGHEST_HZ = 100.0, 3800.0

DEMO_WAVLM: Dict[str, Any] = {
    "conv_feature_layers": f"[({2 * PHASES},{PHASES},{PHASES}), ({4 * BANDS},{WINDOW // PHASES},{HOP // PHASES}), "
                           f"({BANDS},{ENVELOPE_FRAMES},{ENVELOPE_FRAMES})]",
    "encoder_embed_dim": 128,
    "encoder_ffn_embed_dim": 256,
}
"""WavLM cfg keys of the stand-in (the rest is TINY_WAVLM_CFG: 2 layers, 4 heads)."""


def _mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _hz(mel: float) -> float:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def centre_frequencies() -> np.ndarray:
    """The bands' centre frequencies in Hz, mel-spaced."""
    return np.array([_hz(m) for m in np.linspace(_mel(LOWEST_HZ), _mel(HIGHEST_HZ), BANDS)])


def filterbank_convolutions() -> Dict[str, torch.Tensor]:
    """State-dict entries of the three convolutions described in the module docstring."""
    framing = torch.zeros(2 * PHASES, 1, PHASES)
    for phase in range(PHASES):
        framing[phase, 0, phase] = 1.0
        framing[PHASES + phase, 0, phase] = -1.0

    taps = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    window = torch.hann_window(WINDOW, periodic=False, dtype=torch.float64)
    filters = torch.zeros(4 * BANDS, 2 * PHASES, WINDOW // PHASES, dtype=torch.float64)
    for band, hz in enumerate(centre_frequencies()):
        angle = 2 * math.pi * hz * taps / SAMPLE_RATE
        for quadrant, wave in enumerate((torch.cos(angle), -torch.cos(angle), torch.sin(angle), -torch.sin(angle))):
            taps_by_phase = (wave * window / (wave * window).norm()).view(WINDOW // PHASES, PHASES).T
            filters[4 * band + quadrant, :PHASES] = taps_by_phase
            filters[4 * band + quadrant, PHASES:] = -taps_by_phase

    envelope = torch.zeros(BANDS, 4 * BANDS, ENVELOPE_FRAMES)
    for band in range(BANDS):
        envelope[band, 4 * band:4 * band + 4] = 1.0 / ENVELOPE_FRAMES

    prefix = "feature_extractor.conv_layers"
    return {f"{prefix}.0.0.weight": framing, f"{prefix}.1.0.weight": filters.float(),
            f"{prefix}.2.0.weight": envelope}


def save_standin_checkpoint(path: Path, seed: int = 0) -> None:
    """Write the stand-in in Microsoft's format: random WavLM, filterbank convolutions."""
    save_random_wavlm_checkpoint(str(path), seed=seed, **DEMO_WAVLM)
    content = torch.load(path, map_location="cpu", weights_only=True)
    for key, weight in filterbank_convolutions().items():
        if content["model"][key].shape != weight.shape:
            raise RuntimeError(f"{key}: cfg gives {tuple(content['model'][key].shape)}, "
                               f"filterbank {tuple(weight.shape)}")
        content["model"][key] = weight
    atomic_torch_save(content, path)
