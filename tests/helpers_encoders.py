"""An encoder through the public commands: train, evaluate on a small trial list, export, verify."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

import trainSpeakerNet
import trainSpeakerNet_Eval
from demo.corpus import write_trials
from scripts import export_model, verify


@dataclass
class Exported:
    """What :func:`train_evaluate_export_verify` leaves: the trained network, the run, the trial list, the speaker
    model file, the evaluator's scores and verify.py's scores of the same trials."""

    net: Any
    save_path: str
    trial_list: str
    speaker: str
    evaluated: np.ndarray
    verified: np.ndarray

    @property
    def largest_difference(self) -> float:
        return float(np.abs(self.verified - self.evaluated).max())


def small_trial_list(tiny_corpus, path: str) -> str:
    """Every pair of the first file of 6 session folders of the tiny corpus (15 trials)."""
    picked = [rel for _, rel in tiny_corpus.entries if rel.endswith("00001.wav")][:6]
    write_trials([(int(a.split("/")[0] == b.split("/")[0]), a, b) for i, a in enumerate(picked)
                  for b in picked[i + 1:]], path)
    return path


def train_evaluate_export_verify(common: Sequence[str], evaluation: Sequence[str], tiny_corpus, folder,
                                 epochs: int, *training: str) -> Exported:
    """trainSpeakerNet.py (``common`` + ``training``) for ``epochs``, trainSpeakerNet_Eval.py --eval and
    export_model.py (``common`` + ``evaluation``), then verify.py --trials on the exported file."""
    save_path = common[list(common).index("--save_path") + 1]
    net = trainSpeakerNet.main([*common, "--musan_path", tiny_corpus.musan_path, "--rir_path",
                                tiny_corpus.rir_path, "--max_epoch", str(epochs), *training])
    trial_list = small_trial_list(tiny_corpus, os.path.join(folder, "trials.txt"))
    trainSpeakerNet_Eval.main([*common, *evaluation, "--eval", "--test_list", trial_list,
                               "--test_path", tiny_corpus.train_path])
    with open(os.path.join(save_path, "result", f"scores_model{epochs:09d}_trials.txt")) as handle:
        evaluated = np.array([float(line.split()[0]) for line in handle])
    speaker = os.path.join(folder, "speaker.pt")
    export_model.main([*common, *evaluation, "--output", speaker])
    verified = verify.main([speaker, "--trials", trial_list, "--test_path", tiny_corpus.train_path, "--scores",
                            os.path.join(folder, "verified.txt"), "--eval_batch_size", "4", "--nDataLoaderThread",
                            "0"])
    return Exported(net, save_path, trial_list, speaker, evaluated, verified)
