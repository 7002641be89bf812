"""Reliability under bad input, divergence, damaged files and kills (one test group per defect).

Subprocess tests run the real entry points on the tiny config and check what a user sees: the exit
status, one error line naming the file, and what is (not) left on disk.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile
import torch

import scoring.evaluate
import training.run
import trainSpeakerNet
import trainSpeakerNet_Eval
import utils.atomic
from dataio.audio import MIN_WHOLE_FILE_SAMPLES
from dataio.datasets import AudioFiles
from models.wavlm_checkpoint import CheckpointFormatError, load_pretrained_wavlm
from scoring.embedding import embed_files
from scripts import bootstrap_embeddings
from tests.conftest import REPO_ROOT
from training.run import run_epoch
from training.speaker_trainer import ModelTrainer
from utils import checkpoints
from utils.atomic import atomic_open, atomic_torch_save, atomic_write_text
from utils.errors import InputError, TrainingDiverged, WriteError
from utils.records import read_records

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_script(script: str, argv: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, script), *argv], capture_output=True, text=True,
                          env=ENV, timeout=240, cwd=REPO_ROOT)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line a script printed (and nothing else on stderr but log lines)."""
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def all_checkpoints_finite(model_dir: str) -> bool:
    for _, path in checkpoints.list_checkpoints(model_dir):
        state = torch.load(path, weights_only=True)
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            return False
    return True


def corpus_with(tiny_corpus, tmp_path, extra: Dict[str, bytes]) -> Tuple[str, str]:
    """(train list, train path): the tiny corpus (linked, not copied) plus the files ``extra`` (relative
    path -> bytes), listed after it under the first speaker's label. The shared corpus is not touched."""
    root = tmp_path / "corpus"
    root.mkdir()
    for name in os.listdir(tiny_corpus.train_path):
        os.symlink(os.path.join(tiny_corpus.train_path, name), root / name)
    for rel, content in extra.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    lines = open(tiny_corpus.train_list).read().splitlines()
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines + [f"{lines[0].split()[0]} {rel}" for rel in extra]) + "\n")
    return str(listing), str(root)


def wav_bytes(audio: np.ndarray, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="WAV", subtype=subtype)
    return buffer.getvalue()


# ----- 1. NaN / inf: input audio, steps, weights, checkpoints -----

def test_nan_wav_unchecked_stops_training_with_its_name_and_no_checkpoint(tiny_argv, tiny_corpus, tmp_path):
    """Without --check_audio a NaN file is found when it is first read, and named."""
    audio = np.full(16000, 0.1, dtype=np.float32)
    audio[100] = np.nan
    listing, root = corpus_with(tiny_corpus, tmp_path, {f"nan/s/{i}.wav": wav_bytes(audio, "FLOAT") for i in range(6)})
    bad = os.path.join(root, "nan/s/")
    save_path = str(tmp_path / "exp")
    result = run_script("trainSpeakerNet.py", tiny_argv(save_path, "--train_list", listing, "--train_path", root,
                                                        "--max_epoch", "2", "--nDataLoaderThread", "1",
                                                        "--check_audio", "false"))
    assert result.returncode == 1
    line = error_line(result)
    assert f"audio file {bad}" in line and "holds NaN or inf samples (in data-loader worker 0)" in line
    assert checkpoints.list_checkpoints(os.path.join(save_path, "model")) == []


def test_huge_learning_rates_stop_training_and_leave_only_finite_checkpoints(tiny_argv, tmp_path):
    save_path = str(tmp_path / "exp")
    result = run_script("trainSpeakerNet.py", tiny_argv(save_path, "--LR_MHFA", "1e4", "--LR_Transformer", "1e4",
                                                        "--max_epoch", "6", "--max_nonfinite_steps", "3"))
    assert result.returncode == 1, result.stdout[-2000:]
    line = error_line(result)
    assert "training stops and writes no checkpoint" in line
    assert all_checkpoints_finite(os.path.join(save_path, "model"))


def nan_batch(batch_size: int, samples: int, poison: bool):
    clean = torch.randn(batch_size, 1, samples) * 0.1
    augmented = clean.clone()
    if poison:
        augmented[0, 0, 10] = float("nan")
    return clean, augmented, torch.arange(batch_size) % 4, [(f"s/v/{i}.wav",) for i in range(batch_size)]


def test_a_non_finite_step_is_skipped_and_counted_and_too_many_in_a_row_stop(tiny_net, tmp_path):
    net = tiny_net()
    trainer = ModelTrainer(net, max_nonfinite_steps=2, loss_vals_dir=str(tmp_path))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = [nan_batch(4, 4000, poison=True), nan_batch(4, 4000, poison=False)]
    record = run_epoch(trainer, loader, 1, verbose=False)
    assert (record["steps"], record["skipped_steps"]) == (1, 1)
    changed = [k for k in before if not torch.equal(before[k], net.state_dict()[k])]
    assert changed and all(torch.isfinite(v).all() for v in net.state_dict().values())
    with pytest.raises(TrainingDiverged, match="2 steps in a row gave a non-finite loss or gradient"):
        run_epoch(trainer, [nan_batch(4, 4000, True)] * 3, 2, verbose=False)
    assert os.path.exists(tmp_path / "epoch_1.txt") and not os.path.exists(tmp_path / "epoch_2.txt")


def test_non_finite_weights_are_never_saved_nor_loaded(tiny_net, tiny_argv, tmp_path):
    net = tiny_net()
    with torch.no_grad():
        net.__S__.backend.pooling_fc.bias[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="weight '__S__.backend.pooling_fc.bias' holds NaN or inf"):
        training.run.save_checkpoint(net, ModelTrainer(net), str(tmp_path / "model"), 1)
    assert not os.path.exists(tmp_path / "model" / "model000000001.model")
    bad = str(tmp_path / "bad.model")
    torch.save(net.state_dict(), bad)
    with pytest.raises(checkpoints.CheckpointError, match=r"bad.model'.*'__S__.backend.pooling_fc.bias' holds NaN"):
        trainSpeakerNet.main(tiny_argv(str(tmp_path / "exp"), "--initial_model", bad, "--max_epoch", "1"))
    with pytest.raises(checkpoints.CheckpointError, match="holds NaN or inf"):
        trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), "--generate_embeddings", "--initial_model", bad,
                                            "--embeddings_path", str(tmp_path / "e.pt")))


def test_checkpoint_average_refuses_non_finite_and_damaged_checkpoints(tmp_path):
    good, nan, empty = (str(tmp_path / name) for name in ("good.model", "nan.model", "empty.model"))
    torch.save({"w": torch.ones(3)}, good)
    torch.save({"w": torch.tensor([1.0, float("nan"), 0.0])}, nan)
    open(empty, "wb").close()
    for bad, message in ((nan, "tensor 'w' holds NaN or inf"), (empty, "is unreadable: empty, truncated")):
        result = run_script("scripts/checkpoint_average.py", [str(tmp_path / "avg.model"), good, bad])
        assert result.returncode == 1 and f"'{bad}'" in error_line(result) and message in error_line(result)
    assert not os.path.exists(tmp_path / "avg.model")


# ----- 2. damaged checkpoints -----

@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"just some text\n"])
def test_a_damaged_initial_model_is_named(tiny_argv, tmp_path, content):
    bad = tmp_path / "damaged.model"
    bad.write_bytes(content)
    with pytest.raises(checkpoints.CheckpointError, match=f"checkpoint '{bad}' is unreadable"):
        trainSpeakerNet.main(tiny_argv(str(tmp_path / "exp"), "--initial_model", str(bad), "--max_epoch", "1"))


def test_resume_skips_a_damaged_newest_checkpoint_and_redoes_its_epoch(two_epoch_run, tiny_argv, tmp_path, caplog):
    save_path, argv, uninterrupted = two_epoch_run
    run = str(tmp_path / "copy")
    shutil.copytree(save_path, run)
    newest = os.path.join(run, "model", "model000000002.model")
    with open(newest, "rb") as handle:
        data = handle.read()
    with open(newest, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        resumed = trainSpeakerNet.main(tiny_argv(run, "--max_epoch", "2"))
    assert f"Skipping checkpoint 2: checkpoint '{run}/model/model000000002.model' is unreadable" in caplog.text
    assert "the newest readable checkpoint: epochs 2..2 are trained again" in caplog.text
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value.cpu(), resumed.state_dict()[key].cpu()), key


def test_resume_with_no_readable_checkpoint_is_an_error(tiny_argv, tmp_path):
    model_dir = tmp_path / "exp" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "model000000001.model").write_bytes(b"")
    with pytest.raises(checkpoints.CheckpointError, match=r"no checkpoint in .* can be read \(the newest is"):
        trainSpeakerNet.main(tiny_argv(str(tmp_path / "exp"), "--max_epoch", "2"))


# ----- 3. outputs checked before the long work -----

def test_embeddings_path_under_a_file_fails_before_embedding(tiny_argv, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(scoring.evaluate, "embed_across_processes", lambda *a, **k: pytest.fail("embedded anyway"))
    with pytest.raises(InputError, match=r"cannot write --embeddings_path .*file/e.pt: .*file is a file, not a"):
        trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), "--generate_embeddings",
                                            "--embeddings_path", str(tmp_path / "file" / "e.pt")))


def test_pseudo_labels_under_a_file_fail_before_clustering(tmp_path):
    (tmp_path / "file").write_text("")
    torch.save({f"s{i % 3}/v/{i}.wav": torch.randn(1, 4) for i in range(12)}, tmp_path / "emb.pt")
    result = run_script("pseudo_labeling.py", [str(tmp_path / "emb.pt"), str(tmp_path / "file" / "pl.txt"),
                                               "--n_clusters", "4", "--n_clusters_ahc", "2", "--device", "cpu"])
    assert result.returncode == 1 and "cannot write pseudo-label list" in error_line(result)
    assert "k-means" not in result.stdout


# ----- 4. a full disk -----

def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    target = tmp_path / "model000000001.model"
    with pytest.raises(WriteError, match=f"cannot write {target}: no space left on device"):
        with atomic_open(target, "wb") as handle:
            torch.save({"w": torch.zeros(10000)}, FullDisk(handle))
    assert os.listdir(tmp_path) == []


def test_a_file_size_limit_gives_the_same_one_line_error(tmp_path):
    script = ("import resource, signal, torch\n"
              "from utils.atomic import atomic_torch_save\nfrom utils.cli import run_cli\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
              f"run_cli(lambda: atomic_torch_save({{'w': torch.zeros(100000)}}, {str(tmp_path / 'c.model')!r}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"error: cannot write {tmp_path / 'c.model'}: file too large")
    assert os.listdir(tmp_path) == []


# ----- 5. audio shorter than 400 samples: wrap-padded everywhere, named in a warning -----

def test_a_10_ms_file_is_padded_in_every_reader(tiny_argv, tiny_corpus, tmp_path, caplog):
    listing, root = corpus_with(tiny_corpus, tmp_path, {"short/s/1.wav": wav_bytes(0.1 * np.sin(np.arange(160) / 3))})
    short = os.path.join(root, "short/s/1.wav")
    options = ("--train_list", listing, "--train_path", root)
    with caplog.at_level("WARNING"):
        _, _, whole = AudioFiles([short])[0]
        boot = bootstrap_embeddings.main([*options, "--embeddings_path", str(tmp_path / "boot.pt")])
        trainSpeakerNet.main(tiny_argv(str(tmp_path / "exp"), *options, "--max_epoch", "1"))
        trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), *options, "--generate_embeddings",
                                            "--embeddings_path", str(tmp_path / "e.pt")))
    assert whole.shape == (MIN_WHOLE_FILE_SAMPLES,) and boot == 0
    assert f"{short} holds 160 samples (10.0 ms), fewer than 400: it is repeated to 400 samples" in caplog.text
    assert "short/s/1.wav" in torch.load(tmp_path / "e.pt", weights_only=True)


# ----- 6. unreadable training audio found before epoch 1, all at once -----

def test_every_unreadable_training_file_is_named_before_training(tiny_argv, tiny_corpus, tmp_path):
    listing, root = corpus_with(tiny_corpus, tmp_path, {"bad/s/1.wav": b"not audio", "bad/s/2.wav": b""})
    with pytest.raises(InputError, match=r"2 of 26 listed files cannot be trained on") as error:
        trainSpeakerNet.main(tiny_argv(str(tmp_path / "exp"), "--train_list", listing, "--train_path", root,
                                       "--max_epoch", "1"))
    assert "line 25: " in str(error.value) and "line 26: " in str(error.value)
    assert checkpoints.list_checkpoints(str(tmp_path / "exp" / "model")) == []


# ----- 7. no duplicate epoch lines after a kill; stale temporaries removed -----

def test_an_epoch_redone_after_a_kill_has_one_line_and_one_record(tiny_argv, tmp_path, monkeypatch):
    save_path = str(tmp_path / "exp")
    stale = os.path.join(save_path, "model", ".model000000001.model.abcd1234.tmp")
    os.makedirs(os.path.dirname(stale))
    open(stale, "w").close()
    saved = training.run.save_checkpoint

    def killed_at_epoch_2(net, trainer, model_dir, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        saved(net, trainer, model_dir, epoch)

    monkeypatch.setattr(training.run, "save_checkpoint", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainSpeakerNet.main(tiny_argv(save_path, "--max_epoch", "2"))
    assert not os.path.exists(stale)
    monkeypatch.setattr(training.run, "save_checkpoint", saved)
    trainSpeakerNet.main(tiny_argv(save_path, "--max_epoch", "2"))
    lines = open(os.path.join(save_path, "result", "scores.txt")).read().splitlines()
    assert [line.split(",")[0] for line in lines] == ["Epoch 1", "Epoch 2"]
    records = read_records(os.path.join(save_path, "result", "train_metrics.jsonl"))
    assert [record["epoch"] for record in records] == [1, 2]


# ----- 8. outputs get the user's umask, not 0600 -----

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the umask from /proc")
def test_the_umask_is_read_without_being_changed(monkeypatch):
    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("the umask was changed to read it"))
        read = utils.atomic._umask()
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert read == 0o027


# ----- 10. failed evaluations leave nothing behind -----

def test_an_all_target_list_is_refused_before_embedding(tiny_argv, tmp_path, monkeypatch):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/b/1.wav a/b/2.wav\n1 a/b/1.wav a/b/3.wav\n")
    monkeypatch.setattr(scoring.evaluate, "embed_across_processes", lambda *a, **k: pytest.fail("embedded anyway"))
    with pytest.raises(InputError, match="all 2 trials are target trials"):
        trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), "--eval", "--test_list", str(trials)))
    assert not os.path.exists(tmp_path / "exp" / "result")


def test_a_non_finite_embedding_names_its_file(tmp_path):
    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"s/v/{index}.wav"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        soundfile.write(paths[-1], np.full(800 + 100 * index, 0.1, dtype=np.float32), 16000)

    class NanForLongest(torch.nn.Module):
        def forward(self, waveforms, lengths=None):
            out = waveforms[:, :4].clone()
            out[waveforms.shape[1] == 1000] = float("nan")
            return out

    with pytest.raises(InputError, match=f"{paths[2]}: its embedding holds NaN or inf"):
        embed_files(NanForLongest(), paths, torch.device("cpu"), batch_size=2)


# ----- 12. pre-trained checkpoints are loaded safely -----

class WritesAFile:
    """A pickle that, when unpickled in full, writes a file: what a malicious checkpoint could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    crafted = tmp_path / "wavlm.pt"
    evidence = tmp_path / "pwned.txt"
    torch.save({"cfg": {}, "model": {}, "payload": WritesAFile(str(evidence))}, crafted)
    assert not evidence.exists()
    with pytest.raises(CheckpointFormatError, match="safe loading refuses it .* pass --trust_checkpoint true"):
        load_pretrained_wavlm(str(crafted))
    assert not evidence.exists()
    with pytest.raises(checkpoints.CheckpointError, match="holds objects other than tensors"):
        checkpoints.read_state_dict(str(crafted))
    assert not evidence.exists()
    torch.load(crafted, weights_only=False)  # the file really runs code when unpickled in full
    assert evidence.exists()
