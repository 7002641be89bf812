"""Shared fixtures: a tiny random WavLM checkpoint in Microsoft's format and a tiny generated corpus.

Both are session-scoped and cheap (a few hundred kB). The corpus is the data layout the training
script reads: a VoxCeleb-like train list, MUSAN split folders and simulated-RIR folders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Tuple

import pytest
import torch

from demo.noise import make_musan_like, make_rirs
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from SpeakerNet import SpeakerNet
from tests.data_factory import make_speaker_dataset
from utils import options

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "tiny.yaml")
TINY_SPEAKERS = 6


@dataclass(frozen=True)
class TinyCorpus:
    train_list: str
    train_path: str
    musan_path: str
    rir_path: str
    entries: List[Tuple[str, str]]


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """The commands set torch's threads for their process (utils.device.set_torch_threads): one run in-process
    must not change them for the tests after it (results compared across tests depend on them)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 2-layer WavLM checkpoint (``TINY_WAVLM_CFG``) in Microsoft's ``{'cfg', 'model'}`` format."""
    path = str(tmp_path_factory.mktemp("wavlm") / "wavlm_tiny.pt")
    save_random_wavlm_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> TinyCorpus:
    """6 speakers x 2 sessions x 2 utterances of 1-1.5 s, 2 s MUSAN pieces, 4 RIRs."""
    root = tmp_path_factory.mktemp("corpus")
    train_path = str(root / "voxceleb2")
    train_list, entries = make_speaker_dataset(train_path, n_speakers=TINY_SPEAKERS, n_sessions=2, n_utts=2,
                                               seconds=(1.0, 1.5))
    return TinyCorpus(train_list=train_list, train_path=train_path,
                      musan_path=make_musan_like(root / "musan_split", seconds=2),
                      rir_path=make_rirs(root / "simulated_rirs"), entries=entries)


@pytest.fixture(scope="session")
def tiny_argv(tiny_wavlm: str, tiny_corpus: TinyCorpus) -> Callable[..., List[str]]:
    """``tiny_argv(save_path, *extra)``: trainSpeakerNet.py arguments for the tiny config and corpus."""

    def build(save_path: str, *extra: str) -> List[str]:
        return ["--config", TINY_CONFIG, "--pretrained_model_path", tiny_wavlm,
                "--train_list", tiny_corpus.train_list, "--train_path", tiny_corpus.train_path,
                "--musan_path", tiny_corpus.musan_path, "--rir_path", tiny_corpus.rir_path,
                "--save_path", save_path, *extra]

    return build


@pytest.fixture(scope="session")
def tiny_net(tiny_wavlm: str) -> Callable[..., SpeakerNet]:
    """``tiny_net(*extra_argv)``: a SpeakerNet built from the tiny config (and extra options)."""

    def build(*extra: str, seed: int = 0) -> SpeakerNet:
        args = options.parse_options("test", ["--config", TINY_CONFIG, "--pretrained_model_path", tiny_wavlm, *extra])
        torch.manual_seed(seed)
        return SpeakerNet(**vars(args))

    return build


@pytest.fixture(scope="session")
def two_epoch_run(tiny_argv, tmp_path_factory):
    """``(save_path, argv, network)`` of one 2-epoch trainSpeakerNet.py run on the tiny config."""
    import trainSpeakerNet

    save_path = str(tmp_path_factory.mktemp("run") / "exp")
    argv = tiny_argv(save_path)
    return save_path, argv, trainSpeakerNet.main(argv)
