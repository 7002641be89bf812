"""Small generated stand-ins for MUSAN and the simulated RIRs, so the demo trains with augmentation on,
and the backgrounds mixed into the demo corpus (``background``).

Layouts are those the data loader reads: ``musan/{music,speech,noise}/SOURCE/NAME.wav`` (5 s pieces
at 16 kHz) and ``rirs/{smallroom,mediumroom}/RoomNNN/RoomNNN-NNNNN.wav``. Nothing here is real
recorded sound; the "speech" folder holds voice-like buzz with formants, used for babble, so no
speaker of the corpus leaks into the noise.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import soundfile as sf
from scipy import signal

from utils.atomic import atomic_open

SAMPLE_RATE = 16000


def _write(path: Path, audio: np.ndarray) -> None:
    peak = float(np.max(np.abs(audio))) or 1.0
    with atomic_open(path, "wb") as handle:
        sf.write(handle, (0.5 * audio / peak).astype(np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")


def _coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise (spectral slope 0, -1 or -2), with slow loudness changes."""
    slope = rng.choice([0.0, -1.0, -2.0])
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 20.0)
    noise = np.fft.irfft(spectrum * freqs ** (slope / 2.0), n)
    envelope = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * np.arange(n) / SAMPLE_RATE)
    return noise * envelope


def _music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Notes of a random scale, each a few decaying harmonics."""
    out = np.zeros(n)
    t = np.arange(n) / SAMPLE_RATE
    note_len = int(SAMPLE_RATE * rng.uniform(0.15, 0.5))
    base = rng.uniform(110.0, 330.0)
    for start in range(0, n, note_len):
        f0 = base * 2.0 ** (rng.choice([0, 2, 4, 5, 7, 9, 11, 12]) / 12.0)
        span = slice(start, min(n, start + 2 * note_len))
        local = t[span] - t[start]
        note = sum(np.sin(2 * np.pi * f0 * k * local) / k for k in range(1, 5))
        out[span] += note * np.exp(-local * rng.uniform(3.0, 8.0))
    return out


def _voice_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """A pulse train with gliding pitch through two formant resonators, in syllable-rate bursts."""
    f0 = rng.uniform(90.0, 240.0) * (1.0 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * np.arange(n) / SAMPLE_RATE))
    phase = np.cumsum(f0 / SAMPLE_RATE)
    source = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    voiced = np.zeros(n)
    for formant in (rng.uniform(300.0, 900.0), rng.uniform(900.0, 2500.0)):
        b, a = signal.iirpeak(formant, Q=5.0, fs=SAMPLE_RATE)
        voiced += signal.lfilter(b, a, source)
    syllables = np.maximum(0.0, np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * np.arange(n) / SAMPLE_RATE))
    return voiced * syllables


_KINDS: Dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "noise": _coloured_noise, "music": _music, "speech": _voice_like}


def background(n_samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` of one random kind (coloured noise, music or a voice-like buzz) at ``sample_rate``.

    Generated at 16 kHz, then resampled (polyphase, anti-aliased) when ``sample_rate`` differs.
    """
    kind = sorted(_KINDS)[int(rng.integers(len(_KINDS)))]
    divisor = math.gcd(sample_rate, SAMPLE_RATE)
    up, down = sample_rate // divisor, SAMPLE_RATE // divisor
    generated = _KINDS[kind](-(-n_samples * down // up) + 1, rng)
    if up != down:
        generated = signal.resample_poly(generated, up, down)
    return generated[:n_samples]


def make_musan_like(root: str | os.PathLike, files_per_kind: Dict[str, int] | None = None,
                    seconds: float = 5.0, seed: int = 0) -> str:
    """Write ``root/{music,speech,noise}/demo/<kind>-NNNN.wav`` pieces of ``seconds`` at 16 kHz; returns ``root``.

    Babble mixes 3 to 8 "speech" files, so the data loader wants at least 8 there (the default 10).
    """
    counts = {"noise": 6, "music": 4, "speech": 10, **(files_per_kind or {})}
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    for kind in ("music", "speech", "noise"):
        for index in range(counts[kind]):
            _write(Path(root) / kind / "demo" / f"{kind}-{index:04d}.wav", _KINDS[kind](n, rng))
    return str(root)


def make_rirs(root: str | os.PathLike, rooms_per_size: int = 4, rirs_per_room: int = 3, seed: int = 0) -> str:
    """Write exponentially decaying noise impulse responses under ``root/{smallroom,mediumroom}/RoomNNN/``.

    Returns ``root``.

    Reverberation times: 0.2-0.4 s (small rooms) and 0.4-0.8 s (medium rooms); each response has a
    direct-path peak after a short random delay.
    """
    rng = np.random.default_rng(seed)
    for size, (rt_low, rt_high) in (("smallroom", (0.2, 0.4)), ("mediumroom", (0.4, 0.8))):
        for room in range(1, rooms_per_size + 1):
            rt60 = rng.uniform(rt_low, rt_high)
            n = int(1.2 * rt60 * SAMPLE_RATE)
            t = np.arange(n) / SAMPLE_RATE
            for index in range(1, rirs_per_room + 1):
                rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * 0.3
                rir[int(rng.integers(0, SAMPLE_RATE // 200))] = 1.0
                _write(Path(root) / size / f"Room{room:03d}" / f"Room{room:03d}-{index:05d}.wav", rir)
    return str(root)
