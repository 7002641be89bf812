"""Two processes under torchrun (gloo, CPU): identical weights, merged loss files, broadcast gate, resume.

The tiny WavLM here drops each layer with probability 0.5 in training, independently in each process,
so the run also shows that DDP needs no ``find_unused_parameters`` (the L2 term reaches every layer).
"""
import os
import subprocess
import sys
from collections import Counter

import torch

from DatasetLoader import train_dataset_loader, train_dataset_sampler
from loss import LGL_threshold_update_gmm
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from tests.conftest import REPO_ROOT

WORLD = 2
BATCH = 4  # configs/tiny.yaml

WRAPPER = """
import os, sys
import torch
import trainSpeakerNet
net = trainSpeakerNet.main(sys.argv[2:])
torch.save({"state": net.state_dict(), "gate": net.__L__.lgl_threshold},
           os.path.join(sys.argv[1], "rank%s.pt" % os.environ["RANK"]))
"""


def torchrun(wrapper, out_dir, argv):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               wrapper, out_dir, *argv, "--distributed"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output, [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def sampler_blocks(corpus, epoch):
    """Each rank's groups of indices for ``epoch``, and the dataset's relative paths."""
    dataset = train_dataset_loader(corpus.train_list, False, corpus.musan_path, corpus.rir_path, 100,
                                   corpus.train_path)
    blocks = []
    for rank in range(WORLD):
        sampler = train_dataset_sampler(dataset, nPerSpeaker=1, max_seg_per_spk=500, batch_size=BATCH,
                                        distributed=True, seed=20211202, num_replicas=WORLD, rank=rank)
        sampler.set_epoch(epoch)
        blocks.append(list(sampler))
    return blocks, dataset.relative_paths


def assert_same_weights(ranks, checkpoint_path):
    saved = torch.load(checkpoint_path, weights_only=True)
    assert saved.keys() == ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key, value in saved.items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        assert torch.equal(value, ranks[1]["state"][key]), key


def test_two_process_training_and_resume(tiny_argv, tiny_corpus, tmp_path):
    wavlm = str(tmp_path / "wavlm_layerdrop.pt")
    save_random_wavlm_checkpoint(wavlm, seed=0, encoder_layerdrop=0.5)
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    save_path = str(tmp_path / "exp")
    argv = tiny_argv(save_path, "--pretrained_model_path", wavlm)

    output, ranks = torchrun(str(wrapper), str(tmp_path), argv)
    model_dir = os.path.join(save_path, "model")
    loss_dir = os.path.join(save_path, "loss_vals")
    assert_same_weights(ranks, os.path.join(model_dir, "model000000002.model"))
    assert sorted(os.listdir(loss_dir)) == ["epoch_1.txt", "epoch_2.txt"]  # rank parts merged and removed

    for epoch in (1, 2):
        blocks, relative_paths = sampler_blocks(tiny_corpus, epoch)
        with open(os.path.join(loss_dir, f"epoch_{epoch}.txt")) as handle:
            paths = [line.split()[1] for line in handle]
        expected = [relative_paths[i] for block in blocks for group in block for i in group]
        assert len(paths) == len(expected) == sum(len(b) for b in blocks) > 0
        assert Counter(paths) == Counter(expected)

    fitted = LGL_threshold_update_gmm(os.path.join(loss_dir, "epoch_1.txt"), 1e6)
    assert ranks[0]["gate"] == ranks[1]["gate"] == fitted  # fitted on rank 0, broadcast (epoch 2 >= gate start)

    output, ranks = torchrun(str(wrapper), str(tmp_path), [*argv, "--max_epoch", "3"])
    assert "epochs 3..3 on" in output and "Restored optimizer" in output
    assert_same_weights(ranks, os.path.join(model_dir, "model000000003.model"))
    with open(os.path.join(save_path, "result", "scores.txt")) as handle:
        scores = handle.read().splitlines()
    assert [line.split(",")[0] for line in scores] == ["Epoch 1", "Epoch 2", "Epoch 3"]
    assert scores[2].endswith("LR 0.001250 ")  # LR_MHFA 5e-3 * lr_decay 0.5 ** 2

    state = torch.load(os.path.join(model_dir, "state000000003.pt"), weights_only=True)
    steps = sum(len(sampler_blocks(tiny_corpus, epoch)[0][0]) // BATCH for epoch in (1, 2, 3))
    assert state["optimizer"]["state"][0]["step"].item() == steps  # AdamW moments carried across the restart
    assert state["scheduler"]["last_epoch"] == 3
    assert len(state["rng"]) == WORLD and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


ECAPA = ["--model", "ecapa_tdnn", "--channels", "16", "--nOut", "8", "--n_mels", "20", "--pretrained_model_path", "",
         "--gate_start_epoch", "2", "--lc_start_epoch", "2"]


def test_two_processes_train_the_ecapa_encoder_to_identical_weights_and_batch_norm_statistics(tiny_argv, tmp_path):
    """Parameters through DDP, the batch norms' running statistics averaged after every step; the clean view of
    the dropped rows (label correction from epoch 2) is embedded with the running statistics, so they stay equal."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    save_path = str(tmp_path / "exp")
    _, ranks = torchrun(str(wrapper), str(tmp_path), tiny_argv(save_path, *ECAPA))
    assert_same_weights(ranks, os.path.join(save_path, "model", "model000000002.model"))
    running = [key for key in ranks[0]["state"] if key.endswith("running_mean")]
    assert running and all(ranks[0]["state"][key].abs().sum() > 0 for key in running)
