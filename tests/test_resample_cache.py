"""read_audio's cached resamplers: bit-identical to torchaudio.functional.resample, one per source rate."""
import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from dataio import audio as audio_io
from dataio.audio import SAMPLE_RATE, read_audio


def _write(path, rate, seconds, seed):
    signal = 0.3 * np.random.default_rng(seed).standard_normal(int(rate * seconds))
    soundfile.write(str(path), signal, rate, subtype="PCM_16")
    return str(path)


def test_cached_resampling_is_bit_identical_per_rate(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_io, "_RESAMPLERS", {})
    for rate, seed in ((8000, 1), (22050, 2), (8000, 3), (44100, 4), (22050, 5)):
        path = _write(tmp_path / f"{rate}_{seed}.wav", rate, 0.7, seed)
        raw, _ = soundfile.read(path, dtype="float32")
        expected = AF.resample(torch.from_numpy(raw), rate, SAMPLE_RATE).numpy()
        np.testing.assert_array_equal(read_audio(path), expected)
    assert sorted(audio_io._RESAMPLERS) == [8000, 22050, 44100]
    assert audio_io._resampler(8000) is audio_io._RESAMPLERS[8000]
