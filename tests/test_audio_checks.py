"""--check_audio reads every listed file before training (both trainers); digital silence is named.

A file whose every sample lies below -60 dBFS is refused under --check_audio, with NaN, empty and
unreadable files, all at once and before any folder is made; where audio is embedded (the evaluator,
embed.py, verify.py: dataio.datasets.AudioFiles) it gets a warning naming it.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile

import trainDINO
import trainSpeakerNet
from dataio.audio import audio_problem
from dataio.datasets import AudioFiles
from tests.conftest import TINY_CONFIG
from tests.test_reliability import corpus_with, wav_bytes
from training.dino import DINO_OPTIONS
from utils.errors import InputError
from utils.options import parse_options

DINO_TINY = os.path.join(os.path.dirname(TINY_CONFIG), "dino_tiny.yaml")


def tone(peak: float, samples: int = 16000) -> np.ndarray:
    return (peak * np.sin(np.arange(samples) / 5.0)).astype(np.float32)


def float_wav(audio: np.ndarray) -> bytes:
    return wav_bytes(audio, "FLOAT")


def nan_audio() -> np.ndarray:
    audio = tone(0.1)
    audio[500] = np.nan
    return audio


@pytest.mark.parametrize("content, problem", [
    (float_wav(np.zeros(16000, np.float32)), "is digital silence: every sample is below -60 dBFS (peak: every sample "
                                             "is 0)"),
    (float_wav(tone(10 ** (-70 / 20))), "is digital silence: every sample is below -60 dBFS (peak: -70.0 dBFS)"),
    (float_wav(tone(10 ** (-59 / 20))), None),
    (wav_bytes(tone(0.5)), None),
    (float_wav(nan_audio()), "holds NaN or inf samples"),
    (float_wav(np.zeros(0, np.float32)), "holds no samples"),
    (b"not audio", "cannot be read (Error opening"),
], ids=["zeros", "-70dBFS", "-59dBFS", "pcm16", "nan", "empty", "not-audio"])
def test_audio_problem_reads_every_sample(tmp_path, content, problem):
    path = tmp_path / "a.wav"
    path.write_bytes(content)
    found = audio_problem(str(path))
    assert found == problem if problem is None or not problem.endswith("opening") else found.startswith(problem)


def test_a_long_file_is_read_in_blocks_to_its_last_sample(tmp_path):
    audio = np.zeros(16000 * 150, np.float32)
    audio[-1] = 0.5  # one audible sample at the very end, in the third minute-long block
    soundfile.write(tmp_path / "long.wav", audio, 16000, subtype="FLOAT")
    assert audio_problem(str(tmp_path / "long.wav")) is None


def bad_files() -> dict:
    return {"bad/s/silent.wav": float_wav(np.zeros(16000, np.float32)), "bad/s/nan.wav": float_wav(nan_audio())}


def test_speaker_training_refuses_silent_and_nan_files_before_training(tiny_argv, tiny_corpus, tmp_path):
    listing, root = corpus_with(tiny_corpus, tmp_path, bad_files())
    save_path = tmp_path / "exp"
    with pytest.raises(InputError) as error:
        trainSpeakerNet.main(tiny_argv(str(save_path), "--train_list", listing, "--train_path", root))
    message = str(error.value)
    assert message.startswith(f"{listing}: 2 of 26 listed files cannot be trained on (--check_audio false skips")
    assert f"line 25: {root}/bad/s/silent.wav is digital silence: every sample is below -60 dBFS" in message
    assert f"line 26: {root}/bad/s/nan.wav holds NaN or inf samples" in message
    assert not save_path.exists()


def test_dino_has_check_audio_and_refuses_nan_audio_before_training(tiny_corpus, tmp_path):
    listing, root = corpus_with(tiny_corpus, tmp_path, bad_files())
    argv = ["--config", DINO_TINY, "--train_list", listing, "--train_path", root, "--musan_path",
            tiny_corpus.musan_path, "--rir_path", tiny_corpus.rir_path, "--save_path", str(tmp_path / "exp")]
    with pytest.raises(InputError, match=r"2 of 26 listed files cannot be trained on(.|\n)*line 26: .*nan.wav holds "
                                         "NaN or inf samples"):
        trainDINO.main(argv)
    assert not (tmp_path / "exp").exists()
    assert parse_options("t", [*argv, "--check_audio", "false"], DINO_OPTIONS).check_audio is False


def test_embedding_a_silent_file_warns_naming_it(tmp_path, caplog):
    silent = str(tmp_path / "silent.wav")
    soundfile.write(silent, np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    loud = str(tmp_path / "loud.wav")
    soundfile.write(loud, tone(0.3, 8000), 16000, subtype="PCM_16")
    with caplog.at_level("WARNING"):
        AudioFiles([silent, loud])[0]
        AudioFiles([silent, loud])[1]
    assert caplog.messages == [f"{silent} is digital silence: every sample is below -60 dBFS (peak: every sample is "
                               "0); its embedding and scores carry no speaker information"]

