"""Reading audio and cutting it into crops (docs/method.md §6).

Audio is read as float32 (the same values the original's float64 read gives for 8/16/24-bit PCM and
float32 files), mono, at 16 kHz. Crops are returned as float64 like the original's ``loadWAV``.
Randomness follows the original: a training crop's start comes from Python's ``random`` module,
which PyTorch seeds in every DataLoader worker.
"""
from __future__ import annotations

import logging
import random
from typing import Dict, Optional, Set

import numpy as np
import soundfile
import torch
import torchaudio.transforms as AT

from utils.errors import InputError

SAMPLE_RATE = 16000
_log = logging.getLogger(__name__)
_warned: Set[str] = set()
_RESAMPLERS: Dict[int, AT.Resample] = {}

class AudioReadError(InputError):
    """An audio file could not be read or holds no samples."""


def crop_samples(max_frames: int) -> int:
    """Samples in a crop of ``max_frames`` 10 ms frames: ``max_frames * 160 + 240``."""
    return max_frames * 160 + 240


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


def _resampler(rate: int) -> AT.Resample:
    """One ``Resample`` to 16 kHz per source rate: its sinc kernel is built once, not once per file.

    Its kernel is built in float32, the dtype of every signal read here, as
    ``torchaudio.functional.resample`` builds it for a float32 signal: the results are bit-identical.
    """
    if rate not in _RESAMPLERS:
        _RESAMPLERS[rate] = AT.Resample(rate, SAMPLE_RATE, dtype=torch.float32)
    return _RESAMPLERS[rate]


def read_audio(path: str) -> np.ndarray:
    """Read any file soundfile can open as float32 mono at 16 kHz.

    Multi-channel audio is averaged to mono and other sample rates are resampled as
    ``torchaudio.functional.resample`` does (one cached kernel per source rate); each of these
    conversions is logged once per process.
    """
    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:
        raise AudioReadError(f"cannot read audio file {path}: {err}") from err
    if audio.shape[0] == 0:
        raise AudioReadError(f"audio file {path} holds no samples")
    if not np.isfinite(audio).all():
        raise AudioReadError(f"audio file {path} holds NaN or inf samples")
    if audio.shape[1] > 1:
        _warn_once("channels", f"{path} has {audio.shape[1]} channels; averaging multi-channel files to mono")
        audio = audio.mean(axis=1, dtype=np.float32)
    else:
        audio = audio[:, 0]
    if rate != SAMPLE_RATE:
        _warn_once("rate", f"{path} is sampled at {rate} Hz; resampling files to {SAMPLE_RATE} Hz")
        with torch.no_grad():
            audio = _resampler(rate)(torch.from_numpy(np.ascontiguousarray(audio))).numpy()
    return np.ascontiguousarray(audio)


MIN_WHOLE_FILE_SAMPLES = 400
"""25 ms: WavLM's receptive field (one frame) and one filterbank window. A whole file shorter than
this is wrap-padded to it, as training crops are wrap-padded to the crop length."""


def pad_short_file(audio: np.ndarray, path: str) -> np.ndarray:
    """``audio`` wrap-padded to :data:`MIN_WHOLE_FILE_SAMPLES` when shorter, with a warning naming ``path``."""
    if audio.shape[0] >= MIN_WHOLE_FILE_SAMPLES:
        return audio
    _log.warning("%s holds %d samples (%.1f ms), fewer than %d: it is repeated to %d samples", path, audio.shape[0],
                 1000.0 * audio.shape[0] / SAMPLE_RATE, MIN_WHOLE_FILE_SAMPLES, MIN_WHOLE_FILE_SAMPLES)
    return np.pad(audio, (0, MIN_WHOLE_FILE_SAMPLES - audio.shape[0]), mode="wrap")


def crop_audio(audio: np.ndarray, max_frames: int, evalmode: bool = True, num_eval: int = 5) -> np.ndarray:
    """Crops of ``crop_samples(max_frames)`` samples from a 1-D signal, as float64 ``(n_crops, samples)``.

    A signal no longer than a crop is first wrap-padded to one sample more than a crop. Train mode
    (``evalmode=False``) takes one crop at a random start; eval mode takes ``num_eval`` crops with
    starts spread evenly over the signal, or the whole signal when ``max_frames == 0``.
    """
    if audio.ndim != 1 or audio.shape[0] == 0:
        raise ValueError(f"crop_audio expects a non-empty 1-D signal, got shape {audio.shape}")
    max_audio = crop_samples(max_frames)
    if audio.shape[0] <= max_audio:
        audio = np.pad(audio, (0, max_audio - audio.shape[0] + 1), mode="wrap")
    size = audio.shape[0]
    if evalmode and max_frames == 0:
        crops = audio[np.newaxis]
    else:
        if evalmode:
            starts = np.linspace(0, size - max_audio, num=num_eval)
        else:
            starts = [random.random() * (size - max_audio)]
        crops = np.stack([audio[int(s) : int(s) + max_audio] for s in starts])
    return crops.astype(np.float64)


def loadWAV(filename: str, max_frames: int, evalmode: bool = True, num_eval: int = 5) -> np.ndarray:
    """Read ``filename`` and crop it (:func:`crop_audio`): float64 ``(n_crops, samples)``."""
    return crop_audio(read_audio(filename), max_frames, evalmode, num_eval)


def header_length(path: str, max_samples: int = 0) -> int:
    """Samples ``path`` has at 16 kHz, from its header (``max_samples`` > 0 caps it)."""
    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError) as err:
        raise AudioReadError(f"cannot read the header of audio file {path}: {err}") from err
    length = -(-info.frames * SAMPLE_RATE // info.samplerate)
    return min(length, max_samples) if max_samples > 0 else length


SILENCE_DBFS = -60.0
"""A file whose every sample lies below this level (dB relative to full scale, 1.0) is digital silence: it
holds no signal to take a speaker from (16-bit dither alone reaches about -90 dBFS, quiet speech -40)."""
_CHECK_BLOCK = 60 * SAMPLE_RATE
"""Frames read at a time by :func:`audio_problem`: memory stays small for hour-long files."""


def silence_problem(peak: float) -> Optional[str]:
    """``is digital silence ...`` when the largest absolute sample ``peak`` is below :data:`SILENCE_DBFS`, else None."""
    if peak >= 10.0 ** (SILENCE_DBFS / 20.0):
        return None
    level = f"{20.0 * np.log10(peak):.1f} dBFS" if peak > 0 else "every sample is 0"
    return f"is digital silence: every sample is below {SILENCE_DBFS:g} dBFS (peak: {level})"


def warn_if_silent(audio: np.ndarray, name: str) -> None:
    """A warning naming ``name`` when ``audio`` is digital silence: its embedding says nothing of a speaker."""
    problem = silence_problem(float(np.max(np.abs(audio))) if audio.size else 0.0)
    if problem is not None:
        _log.warning("%s %s; its embedding and scores carry no speaker information", name, problem)


def audio_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be trained on (unreadable, no samples, NaN or inf, digital silence), or None.

    Reads every sample, a minute at a time, at the file's own rate and channels: these problems do not
    depend on the resampling and mixing that reading for training does.
    """
    try:
        with soundfile.SoundFile(path) as audio:
            if audio.frames == 0:
                return "holds no samples"
            peak = 0.0
            for block in audio.blocks(blocksize=_CHECK_BLOCK, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    return "holds NaN or inf samples"
                peak = max(peak, float(np.max(np.abs(block))))
    except (RuntimeError, OSError) as err:
        lines = str(err).splitlines()
        return f"cannot be read ({lines[0] if lines else type(err).__name__})"
    return silence_problem(peak)
