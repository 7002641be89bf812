"""Small synthetic data sets in the layouts the project reads (docs/method.md §6), for tests.

Everything is generated from a seed, so a test that builds the same data twice gets the same bytes.
Audio is written as 16-bit PCM WAV.
"""
from __future__ import annotations

import os
from typing import List, Tuple

import numpy as np
import soundfile

from demo.corpus import write_train_list


def _write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, np.clip(audio, -0.99, 0.99), sample_rate, subtype="PCM_16")


def synthetic_voice(rng: np.random.Generator, f0: float, seconds: float, sample_rate: int) -> np.ndarray:
    """A harmonic tone around ``f0`` with slow pitch wobble, a speaker-like spectral tilt and a little noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(2.0, 5.0) * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = np.zeros_like(t)
    for harmonic in range(1, 9):
        if harmonic * f0 < sample_rate / 2:
            voice += np.sin(harmonic * phase) / harmonic ** (1.0 + f0 / 400.0)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t) ** 2
    audio = 0.3 * envelope * voice / np.max(np.abs(voice)) + 0.01 * rng.standard_normal(t.shape)
    return audio.astype(np.float32)


def make_speaker_dataset(
    root: str,
    n_speakers: int = 4,
    n_sessions: int = 2,
    n_utts: int = 3,
    seconds: Tuple[float, float] = (1.0, 2.5),
    sample_rate: int = 16000,
    seed: int = 0,
) -> Tuple[str, List[Tuple[str, str]]]:
    """VoxCeleb-like ``root/idNNNNN/SESSION/000NN.wav`` files and ``root/train_list.txt``.

    Speaker i has fundamental frequency 110 * 1.25**i Hz, so speakers are told apart by pitch.
    Returns (train list path, [(label, relative path), ...] in list order).
    """
    rng = np.random.default_rng(seed)
    entries: List[Tuple[str, str]] = []
    for speaker in range(n_speakers):
        label = f"id{10001 + speaker:05d}"
        f0 = 110.0 * 1.25**speaker
        for session in range(n_sessions):
            session_name = f"sess{session:02d}"
            for utt in range(n_utts):
                rel = f"{label}/{session_name}/{utt + 1:05d}.wav"
                length = rng.uniform(*seconds)
                _write_wav(os.path.join(root, rel), synthetic_voice(rng, f0, length, sample_rate), sample_rate)
                entries.append((label, rel))
    list_path = os.path.join(root, "train_list.txt")
    write_train_list([rel for _, rel in entries], list_path)
    return list_path, entries
