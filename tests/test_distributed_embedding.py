"""Embedding across torchrun processes (gloo, CPU): the same files, keys and embeddings as one process.

Two processes each embed a share of the files and the main one writes; in evaluation mode and in the
original's training mode (each file's dropout drawn from its own seed), and for --eval's scores.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import trainSpeakerNet_Eval
from tests.conftest import REPO_ROOT
from utils.errors import InputError


def run(argv, processes):
    launcher = [sys.executable, os.path.join(REPO_ROOT, "trainSpeakerNet_Eval.py")]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                    launcher[1], "--distributed"]
    result = subprocess.run([*launcher, *argv], cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def trained(two_epoch_run):
    save_path, argv, _ = two_epoch_run
    return save_path, argv


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_two_processes_write_the_embeddings_of_one(trained, tmp_path, mode):
    _, argv = trained
    outputs = {}
    for processes in (1, 2):
        outputs[processes] = str(tmp_path / f"emb{processes}.pt")
        run([*argv, "--generate_embeddings", "--embedding_mode", mode, "--embeddings_path", outputs[processes],
             "--eval_batch_size", "3"], processes)
    one, two = (torch.load(outputs[p], weights_only=True) for p in (1, 2))
    assert list(one) == list(two) and len(one) == 24
    difference = max(float((one[k] - two[k]).abs().max()) for k in one)
    print(f"{mode} mode: 1 vs 2 processes, max |difference| {difference:.2e}")
    assert difference <= 1e-6


def test_two_processes_score_like_one(trained, tmp_path, tiny_corpus):
    save_path, argv = trained
    files = [rel for _, rel in tiny_corpus.entries]
    trials = tmp_path / "trials.txt"
    trials.write_text("".join(f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}\n"
                              for a, b in zip(files, files[1:] + files[:1])))
    scores = {}
    for processes in (1, 2):
        out = str(tmp_path / f"run{processes}")
        run([*argv, "--eval", "--test_list", str(trials), "--test_path", tiny_corpus.train_path, "--save_path", out,
             "--initial_model", os.path.join(save_path, "model", "model000000002.model"), "--plots", "false"],
            processes)
        with open(os.path.join(out, "result", "scores_model000000002_trials.txt")) as handle:
            scores[processes] = np.array([float(line.split()[0]) for line in handle])
    assert len(scores[1]) == len(files) and np.abs(scores[1] - scores[2]).max() <= 1e-6


def test_distributed_needs_torchrun(trained):
    _, argv = trained
    with pytest.raises(InputError, match="--distributed needs the environment that torchrun sets"):
        trainSpeakerNet_Eval.main([*argv, "--generate_embeddings", "--embeddings_path", "x.pt", "--distributed"])
