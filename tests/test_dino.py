"""DINO (training/dino.py, trainDINO.py): the ECAPA-TDNN, multi-crop views, the loss and its centre, the EMA
teacher, frozen prototypes, schedules, resume, embeddings, evaluation, collapse detection, two processes."""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import trainDINO
import training.run
from dataio.audio import crop_samples, read_audio
from dataio.embedding_store import embedding_key
from dataio.multicrop import MultiCropDataset
from demo.corpus import make_trials, write_train_list, write_trials
from loss.dino import DINOLoss, TeacherStatistics
from models.ecapa_tdnn import ECAPATDNN
from scoring.embedding import padding_is_exact
from tests.conftest import REPO_ROOT
from training import dino
from utils import options
from utils.errors import InputError, TrainingDiverged

DINO_TINY = os.path.join(REPO_ROOT, "configs", "dino_tiny.yaml")
GLOBAL, LOCAL = crop_samples(100), crop_samples(50)  # configs/dino_tiny.yaml


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two torch threads on a shared 2-core machine can make these runs many times slower, never faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_args(*extra):
    return options.parse_options("t", ["--config", DINO_TINY, *extra], dino.DINO_OPTIONS)


def dino_argv(corpus, save_path, *extra):
    return ["--config", DINO_TINY, "--train_list", corpus.train_list, "--train_path", corpus.train_path,
            "--musan_path", corpus.musan_path, "--rir_path", corpus.rir_path, "--save_path", save_path, *extra]


def random_views(seed=0, batch=4):
    generator = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(batch, 2, GLOBAL, generator=generator),
            0.1 * torch.randn(batch, 4, LOCAL, generator=generator))


# ----- the ECAPA-TDNN -----

def test_ecapa_tdnn_embeds_waveforms_row_by_row_from_mean_normalised_filterbanks():
    torch.manual_seed(0)
    encoder = ECAPATDNN(channels=16, nOut=8).eval()
    waveforms = 0.1 * torch.randn(3, GLOBAL)
    with torch.no_grad():
        embeddings = encoder(waveforms)
        features = encoder.features(waveforms)
        assert embeddings.shape == (3, 8)
        assert torch.equal(encoder(waveforms, torch.tensor([GLOBAL, 100, 5])), embeddings)  # lengths are ignored
        torch.testing.assert_close(encoder(waveforms[1:2])[0], embeddings[1], rtol=1e-5, atol=1e-6)
    assert features.shape == (3, 80, GLOBAL // 160 + 1)
    assert features.mean(dim=2).abs().max().item() < 1e-4
    raw = ECAPATDNN(channels=16, nOut=8, mean_norm=False).features(waveforms)
    torch.testing.assert_close(raw - raw.mean(dim=2, keepdim=True), features)
    assert raw.mean(dim=2).abs().max().item() > 1.0  # the long-term spectrum is kept
    assert not padding_is_exact(encoder)  # embed_files batches equal lengths only
    with pytest.raises(ValueError, match="multiple of the Res2Net scale"):
        ECAPATDNN(channels=20)


# ----- multi-crop views -----

def find_start(padded, crop):
    for start in np.flatnonzero(padded[:len(padded) - len(crop) + 1] == crop[0]):
        if np.array_equal(padded[start:start + len(crop)], crop):
            return int(start)
    return None


def test_multicrop_views_are_random_crops_of_the_utterance(tiny_corpus):
    dataset = MultiCropDataset(tiny_corpus.train_list, tiny_corpus.train_path, False, tiny_corpus.musan_path,
                               tiny_corpus.rir_path, global_frames=100, local_frames=50, local_crops=4)
    global_views, local_views = dataset[5]
    assert global_views.shape == (2, GLOBAL) and local_views.shape == (4, LOCAL)
    assert global_views.dtype == local_views.dtype == torch.float32
    audio = read_audio(dataset.data_list[5])
    for views, length in ((global_views, GLOBAL), (local_views, LOCAL)):
        padded = np.pad(audio, (0, max(0, length - len(audio) + 1)), mode="wrap")  # the project's wrap padding
        for view in views.numpy():
            assert find_start(padded, view) is not None
    starts = {find_start(audio, view) for view in local_views.numpy()}
    assert len(starts) > 1  # each crop at its own start


def test_each_crop_draws_its_own_augmentation_at_its_length(tiny_corpus, monkeypatch):
    dataset = MultiCropDataset(tiny_corpus.train_list, tiny_corpus.train_path, True, tiny_corpus.musan_path,
                               tiny_corpus.rir_path, global_frames=100, local_frames=50, local_crops=4)
    assert (dataset.global_augment.max_audio, dataset.local_augment.max_audio) == (GLOBAL, LOCAL)
    drawn = []
    for augment in (dataset.global_augment, dataset.local_augment):
        original = augment.draw
        monkeypatch.setattr(augment, "draw", lambda original=original, augment=augment: (
            drawn.append(augment.max_audio), original())[1])
    global_views, local_views = dataset[0]
    assert drawn == [GLOBAL] * 2 + [LOCAL] * 4
    assert global_views.shape == (2, GLOBAL) and local_views.shape == (4, LOCAL)


def test_labels_are_ignored_and_missing_files_are_named(tiny_corpus, tmp_path):
    relative = [rel for _, rel in tiny_corpus.entries]
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("".join(f"x {rel}\n" for rel in relative))
    dataset = MultiCropDataset(str(unlabelled), tiny_corpus.train_path, False, "", "")
    assert dataset.relative_paths == relative
    missing = tmp_path / "missing.txt"
    write_train_list([relative[0], "id99999/none/00001.wav"], missing)
    with pytest.raises(InputError, match=r"missing.txt: 1 of 2 listed files do not exist .*line 2: .*id99999"):
        MultiCropDataset(str(missing), tiny_corpus.train_path, False, "", "")


# ----- the loss and the centre -----

def test_loss_statistics_and_centre_match_a_hand_computation():
    generator = torch.Generator().manual_seed(3)
    student = [torch.randn(2, 3, generator=generator) for _ in range(3)]  # 2 global views + 1 local, B = 2, K = 3
    teacher = [torch.randn(2, 3, generator=generator) for _ in range(2)]
    loss_fn = DINOLoss(3, student_temp=0.1, center_momentum=0.9)
    center = torch.tensor([[0.5, -0.2, 0.1]])
    loss_fn.center.copy_(center)
    loss, statistics = loss_fn(student, teacher, teacher_temp=0.04)

    def softmax(row):
        e = [math.exp(v - max(row)) for v in row]
        return [v / sum(e) for v in e]

    targets = [[softmax([(t - c) / 0.04 for t, c in zip(row, center[0].tolist())]) for row in view.tolist()]
               for view in teacher]
    logs = [[[math.log(p) for p in softmax([s / 0.1 for s in row])] for row in view.tolist()] for view in student]
    pairs = [(i, j) for i in range(2) for j in range(3) if j != i]
    expected = sum(-sum(sum(p * q for p, q in zip(targets[i][b], logs[j][b])) for b in range(2)) / 2
                   for i, j in pairs) / len(pairs)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    rows = [row for view in targets for row in view]
    entropies = [-sum(p * math.log(p) for p in row) for row in rows]
    mean_row = [sum(column) / len(rows) for column in zip(*rows)]
    assert statistics.entropy == pytest.approx(sum(entropies) / len(rows), rel=1e-5)
    assert statistics.batch_entropy == pytest.approx(-sum(p * math.log(p) for p in mean_row), rel=1e-5)
    assert statistics.kl == pytest.approx(expected - sum(entropies) / len(rows), rel=1e-4)

    loss_fn.update_center(torch.cat(teacher))
    batch_mean = [sum(column) / 4 for column in zip(*torch.cat(teacher).tolist())]
    expected_center = [0.9 * c + 0.1 * m for c, m in zip(center[0].tolist(), batch_mean)]
    assert loss_fn.center[0].tolist() == pytest.approx(expected_center, rel=1e-6)


# ----- one training step: EMA teacher, frozen prototypes -----

def test_teacher_is_the_ema_of_the_student_and_prototypes_are_frozen_in_epoch_one():
    args = tiny_args()
    torch.manual_seed(0)
    model = dino.build_dino_model(**vars(args))
    model.reset_teacher()
    trainer = dino.DINOTrainer(model, model.student, dino.schedules_of(args, steps_per_epoch=3), **vars(args))
    assert not any(p.requires_grad for p in model.teacher.parameters())
    teacher_before = {k: v.clone() for k, v in model.teacher.named_parameters()}
    student_before = {k: v.clone() for k, v in model.student.named_parameters()}

    trainer.step(random_views(0), epoch=1)
    momentum = trainer.schedules.momentum(0)
    assert momentum == pytest.approx(0.996) and trainer.step_count == 1
    assert trainer.optimizer.param_groups[0]["lr"] == trainer.schedules.learning_rate(0)
    student = dict(model.student.named_parameters())
    for name, parameter in model.teacher.named_parameters():
        expected = momentum * teacher_before[name] + (1 - momentum) * student[name].detach()
        torch.testing.assert_close(parameter, expected, rtol=0, atol=1e-7)
    # Besides the frozen prototypes, only two biases have an exactly zero gradient: a constant added to
    # the attention logits cancels in their softmax over time, and one added to the embedding cancels in
    # the batch norm after the head's first layer.
    unmoved = {name for name in student if torch.equal(student[name], student_before[name])}
    assert unmoved == {"head.last_layer.weight", "backbone.pooling.attention.bias", "backbone.embedding.bias"}
    assert not torch.equal(model.teacher.backbone.embedding.weight, teacher_before["backbone.embedding.weight"])

    trainer.step(random_views(1), epoch=2)
    assert not torch.equal(model.student.head.last_layer.weight, student_before["head.last_layer.weight"])


def test_schedules_warm_up_then_decay_and_raise_the_momentum_to_one():
    schedules = dino.Schedules(steps_per_epoch=10, max_epoch=5, lr=0.2, min_lr=1e-4, warmup_epochs=2,
                          teacher_momentum=0.996, teacher_temp=0.04, teacher_temp_warmup=0.02,
                          teacher_temp_warmup_epochs=3)
    assert [schedules.learning_rate(s) for s in (0, 9, 19)] == pytest.approx([0.01, 0.1, 0.2])
    assert schedules.learning_rate(20) == pytest.approx(0.2)
    assert schedules.learning_rate(35) == pytest.approx(1e-4 + (0.2 - 1e-4) / 2)
    decay = [schedules.learning_rate(s) for s in range(20, 50)]
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] > 1e-4
    assert schedules.momentum(0) == pytest.approx(0.996) and schedules.momentum(50) == pytest.approx(1.0)
    assert schedules.momentum(25) == pytest.approx(0.998)
    assert [schedules.teacher_temperature(e) for e in (1, 2, 3, 4)] == pytest.approx([0.02, 0.03, 0.04, 0.04])
    assert tiny_args("--batch_size", "32").lr == 0.2
    assert dino.schedules_of(tiny_args("--batch_size", "32"), 5).lr == pytest.approx(0.2 * 32 / 128)


# ----- collapse -----

def epoch_means(collapsed, steps=4, entropy=2.0, batch_entropy=3.0):
    """The mean figures of an epoch of ``steps`` steps, ``collapsed[kind]`` of them collapsed that way."""
    return {"loss": 5.0, "teacher_entropy": entropy, "teacher_batch_entropy": batch_entropy, "kl": 0.5,
            **{figure: collapsed[kind] / steps for kind, figure in dino.COLLAPSE_FIGURES.items()}}


def test_collapse_kinds_and_whole_epoch_rule():
    k = 256
    one_winner = TeacherStatistics(entropy=0.01, batch_entropy=dino.ONE_PROTOTYPE_ENTROPY / 2, kl=0.0)
    assert dino.collapse_kind(one_winner, k) == "one prototype"
    assert dino.collapse_kind(TeacherStatistics(entropy=0.01, batch_entropy=3.0, kl=1.0), k) is None  # sharp, spread
    assert dino.collapse_kind(TeacherStatistics(entropy=dino.UNIFORM_FRACTION * math.log(k) + 1e-3,
                                           batch_entropy=math.log(k), kl=0.0), k) == "uniform"
    dino.check_collapse(epoch_means({"one prototype": 3, "uniform": 0}), 1, k, 0.04)  # not the whole epoch
    with pytest.raises(TrainingDiverged, match=r"epoch 7: the teacher collapsed to one prototype at every step: "
                                               r"entropy of its batch-mean distribution 0\.0200"):
        dino.check_collapse(epoch_means({"one prototype": 4, "uniform": 0}, batch_entropy=0.02), 7, k, 0.04)


def test_a_uniform_teacher_stops_training_without_a_checkpoint(tiny_corpus, tmp_path):
    save_path = str(tmp_path / "exp")
    message = (r"epoch 1: the teacher collapsed to the uniform distribution at every step: per-sample entropy "
               r"5\.54\d\d nats of at most log K = 5\.5452")
    with pytest.raises(TrainingDiverged, match=message):
        trainDINO.main(dino_argv(tiny_corpus, save_path, "--teacher_temp", "1000", "--teacher_temp_warmup", "1000"))
    assert os.listdir(os.path.join(save_path, "model")) == []


# ----- trainDINO.py in one process -----

@pytest.fixture(scope="module")
def two_epoch_run(tiny_corpus, tmp_path_factory):
    save_path = str(tmp_path_factory.mktemp("dino") / "exp")
    argv = dino_argv(tiny_corpus, save_path)
    return save_path, argv, trainDINO.main(argv)


def read_records(save_path):
    with open(os.path.join(save_path, "result", "train_metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def test_training_writes_checkpoints_metrics_and_config(two_epoch_run):
    save_path, argv, model = two_epoch_run
    assert sorted(os.listdir(os.path.join(save_path, "model"))) == [
        "model000000001.model", "model000000002.model", "state000000001.pt", "state000000002.pt"]
    saved = torch.load(os.path.join(save_path, "model", "model000000002.model"), weights_only=True)
    assert saved.keys() == model.state_dict().keys() and "loss.center" in saved
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    state = torch.load(os.path.join(save_path, "model", "state000000002.pt"), weights_only=True)
    assert state["step"] == 12 and state["epoch"] == 2 and len(state["rng"]) == 1  # 24 files / batch 4 = 6 steps
    records = read_records(save_path)
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) == {"epoch", "loss", "lr", "teacher_momentum", "teacher_temp", "teacher_entropy",
                               "teacher_batch_entropy", "kl", "steps", "skipped_steps", "seconds",
                               "utterances_per_s"}
    assert records[1]["teacher_momentum"] > records[0]["teacher_momentum"] > 0.996
    assert all(0 < r["teacher_entropy"] <= r["teacher_batch_entropy"] <= math.log(256) for r in records)
    resolved = options.parse_options("t", ["--config", os.path.join(save_path, "config.yaml")], dino.DINO_OPTIONS)
    expected = options.parse_options("t", argv, dino.DINO_OPTIONS)
    assert {k: v for k, v in vars(resolved).items() if k != "config"} == \
        {k: v for k, v in vars(expected).items() if k != "config"}


class Interrupted(Exception):
    pass


def test_resumed_run_is_bitwise_the_uninterrupted_run(two_epoch_run, tiny_corpus, tmp_path, caplog, monkeypatch):
    straight_path, _, straight = two_epoch_run
    save_path = str(tmp_path / "exp")
    save_checkpoint = training.run.save_checkpoint

    def save_then_stop(*args):
        save_checkpoint(*args)
        raise Interrupted  # killed right after epoch 1's checkpoint (same max_epoch, so the same schedules)

    monkeypatch.setattr(training.run, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        trainDINO.main(dino_argv(tiny_corpus, save_path))
    monkeypatch.setattr(training.run, "save_checkpoint", save_checkpoint)
    with caplog.at_level("INFO"):
        resumed = trainDINO.main(dino_argv(tiny_corpus, save_path))
    assert "epochs 2..2 on" in caplog.text and "Restored the optimizer and step 6" in caplog.text
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    timing = {"seconds", "utterances_per_s"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in read_records(save_path)] == \
        [{k: v for k, v in r.items() if k not in timing} for r in read_records(straight_path)]


KILLED_WHILE_SAVING = """
import os, signal, sys
import torch
import trainDINO

real_save = torch.save


def save_then_die(obj, handle, *args, **kwargs):
    real_save(obj, handle, *args, **kwargs)
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed inside the atomic write: its temporary file stays behind


torch.save = save_then_die
trainDINO.main(sys.argv[1:])
"""


def test_a_run_killed_while_writing_a_checkpoint_leaves_no_temporary_after_the_rerun(tiny_corpus, tmp_path):
    save_path = str(tmp_path / "exp")
    argv = dino_argv(tiny_corpus, save_path, "--max_epoch", "1")
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *argv], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    model_dir = os.path.join(save_path, "model")
    left = [name for name in os.listdir(model_dir) if name.endswith(".tmp")]
    assert left and not [name for name in os.listdir(model_dir) if not name.endswith(".tmp")]
    trainDINO.main(argv)
    assert sorted(os.listdir(model_dir)) == ["model000000001.model", "state000000001.pt"]


def test_embeddings_file_holds_the_teacher_embedding_of_every_file(two_epoch_run, tiny_corpus, tmp_path):
    save_path, _, model = two_epoch_run
    output = str(tmp_path / "dino_embeddings.pt")
    assert trainDINO.main(dino_argv(tiny_corpus, save_path, "--generate_embeddings",
                                    "--embeddings_path", output)) is None
    stored = torch.load(output, weights_only=True)
    paths = [os.path.join(tiny_corpus.train_path, rel) for _, rel in tiny_corpus.entries]
    assert list(stored) == [embedding_key(path) for path in paths]
    assert all(value.shape == (1, 16) and value.dtype == torch.float32 for value in stored.values())
    teacher, student = model.teacher.backbone.eval(), model.student.backbone.eval()
    with torch.no_grad():
        waveform = torch.from_numpy(read_audio(paths[7]))[None]
        torch.testing.assert_close(stored[embedding_key(paths[7])], teacher(waveform), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(stored[embedding_key(paths[7])], student(waveform), atol=1e-3)


def test_eval_scores_a_trial_list_with_the_teacher(two_epoch_run, tiny_corpus, tmp_path):
    save_path, _, _ = two_epoch_run
    trial_list = str(tmp_path / "trials.txt")
    write_trials(make_trials([rel for _, rel in tiny_corpus.entries], max_trials=40), trial_list)
    trainDINO.main(dino_argv(tiny_corpus, save_path, "--eval", "--test_list", trial_list,
                             "--test_path", tiny_corpus.train_path))
    result_dir = os.path.join(save_path, "result")
    with open(os.path.join(result_dir, "eval_results.txt")) as handle:
        lines = handle.read().splitlines()
    assert len(lines) == 1 and "checkpoint model000000002 |" in lines[0] and "(40 trials: 20 target" in lines[0]
    with open(os.path.join(result_dir, "scores_model000000002_trials.txt")) as handle:
        assert len(handle.read().splitlines()) == 40
    with pytest.raises(InputError, match="at most one of --eval and --generate_embeddings"):
        trainDINO.main(dino_argv(tiny_corpus, save_path, "--eval", "--generate_embeddings"))


@pytest.mark.parametrize("option, value, message", [
    ("--channels", "20", "--channels must be a multiple of 8 .the Res2Net scale., got 20"),
    ("--teacher_temp", "0", "--teacher_temp must be positive, got 0.0"),
    ("--teacher_momentum", "1.5", r"--teacher_momentum must lie in \[0, 1\], got 1.5"),
    ("--batch_size", "0", "--batch_size must be at least 1, got 0"),
])
def test_unusable_options_are_input_errors_naming_the_option(tiny_corpus, tmp_path, option, value, message):
    with pytest.raises(InputError, match=message):
        trainDINO.main(dino_argv(tiny_corpus, str(tmp_path / "exp"), option, value))
    assert not os.path.exists(tmp_path / "exp")


# ----- two processes under torchrun -----

WRAPPER = """
import os, sys
import torch
import trainDINO
model = trainDINO.main(sys.argv[2:])
torch.save(model.state_dict(), os.path.join(sys.argv[1], "rank%s.pt" % os.environ["RANK"]))
"""


def test_two_processes_keep_identical_teachers_and_centres(tiny_corpus, tmp_path):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    save_path = str(tmp_path / "exp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(wrapper),
               str(tmp_path), *dino_argv(tiny_corpus, save_path), "--distributed"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    ranks = [torch.load(str(tmp_path / f"rank{r}.pt"), weights_only=True) for r in range(2)]
    saved = torch.load(os.path.join(save_path, "model", "model000000002.model"), weights_only=True)
    assert ranks[0].keys() == ranks[1].keys() == saved.keys()
    for key in saved:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.equal(saved[key], ranks[0][key]), key
    assert not torch.equal(saved["teacher.backbone.embedding.weight"], saved["student.backbone.embedding.weight"])
    assert saved["loss.center"].abs().sum() > 0
    state = torch.load(os.path.join(save_path, "model", "state000000002.pt"), weights_only=True)
    assert state["step"] == 6 and len(state["rng"]) == 2  # 12 files per process / batch 4 = 3 steps per epoch
    assert "x 2, 3 steps per epoch" in result.stdout
