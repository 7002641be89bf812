"""MUSAN noise and simulated-RIR reverberation of training crops (docs/method.md §6).

:class:`AugmentWAV` draws each sample's augmentation as the original does. The tensor functions
below are the single implementation of the mixing arithmetic: data-loader workers call them on one
float64 crop at a time; with ``augment_on_device`` the trainer calls :func:`augment_batch` on a
whole batch on the training device.

The SNR rule of the original is ``gain = sqrt(10 ** ((clean_db - noise_db - snr) / 10))`` with
``db(x) = 10 * log10(mean(x**2) + 1e-4)``. It factorises into ``sqrt(mean(clean**2) + 1e-4)`` times
``10 ** (-(noise_db + snr) / 20)``: the second factor needs only the noise, so the worker applies it
(:func:`scale_noise`) and the clean-dependent factor is applied where the mixing happens
(:func:`add_scaled_noise`).
"""
from __future__ import annotations

import copy
import glob
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from dataio.audio import AudioReadError, crop_samples, loadWAV, read_audio
from utils.errors import InputError

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
        raise ValueError(f"augment_batch expects noise (B, K, S) for clean {tuple(clean.shape)}; "
                         f"got {tuple(noise.shape)}")
    out = clean
    rows = torch.nonzero(reverb, as_tuple=True)[0]
    if rows.numel() > 0:
        out = out.clone()
        out[rows] = reverberate(clean[rows], rir[rows].to(clean.dtype))
    for stage in range(noise.shape[1]):
        out = add_scaled_noise(out, noise[:, stage].to(clean.dtype))
    return out


@dataclass
class AugmentPlan:
    """One sample's drawn augmentation: an optional unit-energy RIR, then noise stages in order."""

    rir: Optional[Tensor]
    noises: Tuple[Tensor, ...]


SIXTH_AUGMENTATIONS = ("faithful", "babble_music")


class AugmentWAV:
    """MUSAN noise and simulated-RIR reverberation, drawn as in the original (docs/method.md §6).

    ``sixth_augmentation``: 'faithful' makes the sixth choice music only, as the original does
    (**quirk**); 'babble_music' adds babble and then music, the music gain taken from the babbled
    signal. In 'faithful' mode the babble the original draws and throws away is not drawn.
    """

    NOISE_SNR = {"noise": (0.0, 15.0), "speech": (13.0, 20.0), "music": (5.0, 15.0)}
    NOISE_COUNT = {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)}
    LAYOUT = "musan_path/{music,speech,noise}/<subfolder>/<file>.wav (MUSAN cut into 5 s pieces)"

    def __init__(self, musan_path: str, rir_path: str, max_frames: int, sixth_augmentation: str = "faithful") -> None:
        if sixth_augmentation not in SIXTH_AUGMENTATIONS:
            raise InputError(f"sixth_augmentation must be one of {SIXTH_AUGMENTATIONS}, got {sixth_augmentation!r}")
        self.max_frames = max_frames
        self.max_audio = crop_samples(max_frames)
        self.sixth_augmentation = sixth_augmentation
        self.noiselist = self._musan_files(musan_path)
        self.rir_files = sorted(glob.glob(os.path.join(glob.escape(rir_path), "*", "*", "*.wav")))
        if not self.rir_files:
            raise InputError(
                f"rir_path {rir_path!r} holds no impulse responses; expected rir_path/<folder>/<subfolder>/<file>.wav "
                "(e.g. RIRS_NOISES/simulated_rirs)"
            )
        sixth = ("music",) if sixth_augmentation == "faithful" else ("speech", "music")
        self.kind_noises: Tuple[Tuple[str, ...], ...] = ((), (), ("music",), ("speech",), ("noise",), sixth)
        self.noise_stages = len(sixth)

    def with_frames(self, max_frames: int) -> "AugmentWAV":
        """The same augmentation for crops of ``max_frames``, sharing this one's file lists (no second scan)."""
        other = copy.copy(self)
        other.max_frames = max_frames
        other.max_audio = crop_samples(max_frames)
        return other

    def _musan_files(self, musan_path: str) -> Dict[str, List[str]]:
        if not os.path.isdir(musan_path):
            raise InputError(f"musan_path {musan_path!r} is not a folder; expected {self.LAYOUT}")
        files: Dict[str, List[str]] = {}
        for path in sorted(glob.glob(os.path.join(glob.escape(musan_path), "*", "*", "*.wav"))):
            category = os.path.relpath(path, musan_path).split(os.sep)[0]
            files.setdefault(category, []).append(path)
        for category, (_, most) in self.NOISE_COUNT.items():
            found = len(files.get(category, []))
            if found < most:
                raise InputError(
                    f"musan_path {musan_path!r} has {found} '{category}' files, needs at least {most}; "
                    f"expected {self.LAYOUT}"
                )
        return files

    def pick_rir(self) -> Tensor:
        """A random impulse response, float64, scaled to unit energy."""
        path = random.choice(self.rir_files)
        rir = torch.from_numpy(read_audio(path)).double()
        if not torch.any(rir != 0):
            raise AudioReadError(f"impulse response {path} is silent")
        return unit_energy(rir)

    def pick_noise(self, noisecat: str) -> Tensor:
        """Random MUSAN crops of one category, each scaled for a random SNR (:func:`scale_noise`), summed."""
        lowest, most = self.NOISE_COUNT[noisecat]
        paths = random.sample(self.noiselist[noisecat], random.randint(lowest, most))
        total = torch.zeros(self.max_audio, dtype=torch.float64)
        for path in paths:
            noise = torch.from_numpy(loadWAV(path, self.max_frames, evalmode=False)[0])
            total += scale_noise(noise, random.uniform(*self.NOISE_SNR[noisecat]))
        return total

    def reverberate(self, audio: np.ndarray) -> np.ndarray:
        """``audio`` (1, samples) convolved with a random unit-energy RIR, cut to the crop length."""
        return reverberate(torch.from_numpy(audio), self.pick_rir()).numpy()

    def additive_noise(self, noisecat: str, audio: np.ndarray) -> np.ndarray:
        """``audio`` (1, samples) plus MUSAN ``noisecat`` ('noise', 'speech' or 'music') at random SNRs."""
        return add_scaled_noise(torch.from_numpy(audio), self.pick_noise(noisecat)).numpy()

    def draw(self) -> AugmentPlan:
        """Draw one of the six augmentations with equal odds (none, reverb, music, babble, noise, sixth)."""
        kind = random.randint(0, 5)
        if kind == 1:
            return AugmentPlan(self.pick_rir(), ())
        return AugmentPlan(None, tuple(self.pick_noise(category) for category in self.kind_noises[kind]))

    @staticmethod
    def apply(audio: np.ndarray, plan: AugmentPlan) -> np.ndarray:
        """Apply a drawn plan to a float64 crop ``(1, samples)``."""
        out = torch.from_numpy(audio)
        if plan.rir is not None:
            out = reverberate(out, plan.rir)
        for noise in plan.noises:
            out = add_scaled_noise(out, noise)
        return out.numpy()

    def plan_tensors(self, plans: Sequence[AugmentPlan]) -> Dict[str, Tensor]:
        """Fixed-shape float32 tensors for :func:`augment_batch`: reverb (n,), rir (n, S), noise (n, K, S)."""
        count = len(plans)
        reverb = torch.zeros(count, dtype=torch.bool)
        rir = torch.zeros(count, self.max_audio)
        noise = torch.zeros(count, self.noise_stages, self.max_audio)
        for row, plan in enumerate(plans):
            if plan.rir is not None:
                taps = min(plan.rir.shape[0], self.max_audio)
                reverb[row] = True
                rir[row, :taps] = plan.rir[:taps]
            for stage, stage_noise in enumerate(plan.noises):
                noise[row, stage] = stage_noise
        return {"reverb": reverb, "rir": rir, "noise": noise}
