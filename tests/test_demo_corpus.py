"""The demo corpus: FSDD recordings joined per speaker and session, with an in-the-wild background."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from demo.corpus import build_fsdd_corpus, link_speaker_files, split_by_speaker
from demo.noise import background
from utils.errors import InputError

RATE = 8000


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FSDD-named files: 2 speakers x 2 digits x 10 indices, 0.3 s tones at 8 kHz."""
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)
    for speaker, hz in (("anna", 150.0), ("bert", 220.0)):
        for digit in (1, 2):
            for index in range(10):
                t = np.arange(int(0.3 * RATE)) / RATE
                tone = 0.3 * np.sin(2 * np.pi * hz * digit * t) + 0.01 * rng.standard_normal(t.size)
                sf.write(folder / f"{digit}_{speaker}_{index}.wav", tone, RATE, subtype="PCM_16")
    return folder


def read(root: Path, relative: str) -> np.ndarray:
    audio, rate = sf.read(root / relative, dtype="int16")
    assert rate == RATE
    return audio.astype(np.float64)


def test_background_at_the_drawn_snr_leaves_the_utterances_unchanged(recordings: Path, tmp_path: Path) -> None:
    clean = build_fsdd_corpus(tmp_path / "clean", recordings, sessions=2, digits_per_utterance=(2, 3),
                              background_snr_db=None)
    noisy = build_fsdd_corpus(tmp_path / "noisy", recordings, sessions=2, digits_per_utterance=(2, 3),
                              background_snr_db=(20.0, 20.0))
    assert clean == noisy and len(clean) >= 8
    assert {p.split("/")[0] for p in clean} == {"anna", "bert"}
    assert {p.split("/")[1] for p in clean} == {"session1", "session2"}
    for relative in clean:
        speech = read(tmp_path / "clean", relative)
        noise = read(tmp_path / "noisy", relative) - speech
        assert speech.size >= 2 * int(0.3 * RATE)
        snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
        assert abs(snr - 20.0) < 0.1, relative


def test_corpus_is_deterministic(recordings: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        build_fsdd_corpus(tmp_path / name, recordings, sessions=2, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.wav"))
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_background_has_the_requested_length_at_any_rate(rate: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(6):
        noise = background(4000, rate, rng)
        assert noise.shape == (4000,) and np.isfinite(noise).all() and np.std(noise) > 0


def test_speaker_level_files_are_linked_and_whole_speakers_held_out(tmp_path):
    data = tmp_path / "data"
    for speaker in range(7):
        for utt in range(2):
            (data / f"S{speaker}").mkdir(parents=True, exist_ok=True)
            (data / f"S{speaker}" / f"u{utt}.flac").write_bytes(b"x")
    relative = link_speaker_files(data, tmp_path / "corpus")
    assert relative[:2] == ["S0/s1/u0.flac", "S0/s1/u1.flac"] and len(relative) == 14
    assert os.path.realpath(tmp_path / "corpus" / "S3/s1/u1.flac") == str((data / "S3" / "u1.flac").resolve())
    train, held_out = split_by_speaker(relative, 3)
    assert sorted({p.split("/")[0] for p in held_out}) == ["S0", "S3", "S6"]
    assert not {p.split("/")[0] for p in train} & {p.split("/")[0] for p in held_out}
    assert sorted(train + held_out) == relative
    with pytest.raises(InputError, match="leaves 1 for verification"):
        split_by_speaker(relative, 7)
