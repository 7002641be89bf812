"""Reverberation and additive noise as tensor operations (SPEC §6).

These functions are the single implementation of the mixing arithmetic. Data-loader workers call
them on one float64 crop at a time (``DatasetLoader.AugmentWAV``); with ``augment_on_device`` the
trainer calls :func:`augment_batch` on a whole batch on the training device.

The SNR rule of the original is ``gain = sqrt(10 ** ((clean_db - noise_db - snr) / 10))`` with
``db(x) = 10 * log10(mean(x**2) + 1e-4)``. It factorises into ``sqrt(mean(clean**2) + 1e-4)`` times
``10 ** (-(noise_db + snr) / 20)``: the second factor needs only the noise, so the worker applies it
(:func:`scale_noise`) and the clean-dependent factor is applied where the mixing happens
(:func:`add_scaled_noise`).
"""
from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor

ENERGY_FLOOR = 1e-4
"""Added to the mean power before taking the log (the original's SNR formula)."""


def level_db(audio: Tensor) -> Tensor:
    """``10 * log10(mean(audio**2) + 1e-4)`` over the last dimension."""
    return 10.0 * torch.log10(audio.pow(2).mean(dim=-1) + ENERGY_FLOOR)


def scale_noise(noise: Tensor, snr_db: float) -> Tensor:
    """The clean-independent part of the noise gain: ``noise * 10 ** (-(level_db(noise) + snr) / 20)``."""
    return noise * torch.pow(10.0, -(level_db(noise) + snr_db) / 20.0).unsqueeze(-1)


def add_scaled_noise(audio: Tensor, scaled_noise: Tensor) -> Tensor:
    """``audio + sqrt(mean(audio**2) + 1e-4) * scaled_noise``, row by row over the last dimension.

    A row of zeros in ``scaled_noise`` leaves its row of ``audio`` unchanged.
    """
    gain = torch.sqrt(audio.pow(2).mean(dim=-1, keepdim=True) + ENERGY_FLOOR)
    return audio + gain * scaled_noise


def unit_energy(rir: Tensor) -> Tensor:
    """Divide an impulse response by its L2 norm (over the last dimension)."""
    return rir / torch.linalg.vector_norm(rir, dim=-1, keepdim=True)


def reverberate(audio: Tensor, rir: Tensor) -> Tensor:
    """Full convolution of ``audio (..., S)`` with ``rir (..., L)``, cut to the first S samples.

    Leading dimensions broadcast; a 1-D ``rir`` applies to every row of ``audio``.
    """
    rir = rir.reshape((1,) * (audio.dim() - rir.dim()) + tuple(rir.shape))
    return AF.fftconvolve(audio, rir, mode="full")[..., : audio.shape[-1]]


def augment_batch(clean: Tensor, reverb: Tensor, rir: Tensor, noise: Tensor) -> Tensor:
    """Augment a batch of crops the way the data-loader workers would.

    Args:
        clean: ``(B, S)`` crops.
        reverb: ``(B,)`` bool, rows to convolve with their ``rir`` first.
        rir: ``(B, L)`` unit-energy impulse responses (only rows where ``reverb`` is set are used;
            taps beyond S cannot reach the first S output samples).
        noise: ``(B, K, S)`` scaled noises (:func:`scale_noise`), added in K stages, each stage's
            gain taken from the signal as it is after the previous stage; zero rows add nothing.
    """
    if clean.dim() != 2 or reverb.shape != clean.shape[:1] or rir.shape[0] != clean.shape[0]:
        raise ValueError(
            f"augment_batch expects clean (B, S), reverb (B,), rir (B, L); got {tuple(clean.shape)}, "
            f"{tuple(reverb.shape)}, {tuple(rir.shape)}"
        )
    if noise.dim() != 3 or noise.shape[0] != clean.shape[0] or noise.shape[2] != clean.shape[1]:
        raise ValueError(f"augment_batch expects noise (B, K, S) for clean {tuple(clean.shape)}; got {tuple(noise.shape)}")
    out = clean
    rows = torch.nonzero(reverb, as_tuple=True)[0]
    if rows.numel() > 0:
        out = out.clone()
        out[rows] = reverberate(clean[rows], rir[rows].to(clean.dtype))
    for stage in range(noise.shape[1]):
        out = add_scaled_noise(out, noise[:, stage].to(clean.dtype))
    return out
