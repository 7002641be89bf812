"""The training step and loop in one process: L2 term, LLRD groups, frozen parameters, scheduler,
clean view, runs of trainSpeakerNet.py on the tiny config, resume."""
import math
import os
import re

import pytest
import torch

import training.run
import training.speaker_trainer
import trainSpeakerNet
from DatasetLoader import train_dataset_loader, train_dataset_sampler
from loss import LGL_threshold_update_gmm
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from tests.conftest import TINY_CONFIG
from training.speaker_trainer import ModelTrainer, rank_part_path
from utils import options
from utils.errors import InputError
from utils.records import read_records

CROP = 100 * 160 + 240
REG = 0.01  # weight_finetuning_reg of configs/tiny.yaml


def batch(seed=0, size=4):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.randn(size, CROP, generator=generator) * 0.1
    augmented = clean + torch.randn(size, CROP, generator=generator) * 0.01
    return augmented, clean, torch.arange(size) % 6


def pretrained(tiny_wavlm):
    return torch.load(tiny_wavlm, weights_only=True)["model"]


def perturb_(net, name, value):
    with torch.no_grad():
        dict(net.__S__.model.named_parameters())[name].add_(value)


# ----- the L2 term and the total objective (docs/method.md §5) -----

def test_weight_distance_is_the_sum_of_per_tensor_norms(tiny_net, tiny_wavlm):
    net = tiny_net()
    assert net.weight_distance().item() == 0.0
    perturb_(net, "encoder.layers.0.fc1.bias", 0.5)
    perturb_(net, "feature_extractor.conv_layers.1.0.weight", -0.1)  # frozen, but in the checkpoint: counted
    with torch.no_grad():
        net.__S__.backend.cmp_linear_k.bias.add_(3.0)  # not WavLM: not counted
    model = dict(net.__S__.model.named_parameters())
    by_hand = (0.5 * math.sqrt(model["encoder.layers.0.fc1.bias"].numel())
               + 0.1 * math.sqrt(model["feature_extractor.conv_layers.1.0.weight"].numel()))
    reference = pretrained(tiny_wavlm)
    independent = sum(torch.sqrt(((p.detach().double() - reference[k].double()) ** 2).sum()).item()
                      for k, p in model.items() if k in reference)
    assert net.weight_distance().item() == pytest.approx(by_hand, rel=1e-5)
    assert net.weight_distance().item() == pytest.approx(independent, rel=1e-5)


def test_total_is_one_at_the_pretrained_weights(tiny_net):
    net = tiny_net().eval()
    total, loss, prec1, ce = net(*batch(), epoch=1)
    assert loss.item() > 0 and ce.shape == (4,)
    assert total.item() == pytest.approx(1.0, abs=1e-6)


def test_total_gradient_is_the_normalised_formula(tiny_net):
    net = tiny_net().eval()
    name = "encoder.layers.1.fc2.weight"
    shape = dict(net.__S__.model.named_parameters())[name].shape
    delta = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    perturb_(net, name, 0.01 * delta)
    augmented, clean, labels = batch()
    parameter = dict(net.__S__.model.named_parameters())[name]

    loss = net.__L__(net.__S__(augmented), None, labels, 1)[0]
    loss_gradient, = torch.autograd.grad(loss, parameter)
    total = net(augmented, clean, labels, epoch=1)[0]
    total_gradient, = torch.autograd.grad(total, parameter)

    distance = (0.01 * delta).norm()
    assert total.item() == pytest.approx(1.0 + REG * distance.item() / (distance.item() + 1e-5), rel=1e-6)
    expected = loss_gradient / loss.detach() + REG * (0.01 * delta) / distance / (distance + 1e-5)
    torch.testing.assert_close(total_gradient, expected, rtol=1e-4, atol=1e-9)


def test_fully_gated_batch_keeps_gradients_finite(tiny_net):
    """Every sample above the gate: loss 0; the original's loss/loss.detach() would be NaN."""
    net = tiny_net().eval()
    net.__L__.lgl_threshold = -1e9
    perturb_(net, "encoder.layers.0.fc2.weight", 0.01)
    total, loss, _, _ = net(*batch(), epoch=1)
    assert loss.item() == 0.0
    total.backward()
    assert total.item() == pytest.approx(REG, rel=1e-3)  # 0 + reg * r / (r + 1e-5), r >> 1e-5
    for name, parameter in net.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
    assert net.__S__.backend.pooling_fc.weight.grad.abs().max().item() == 0.0
    assert net.__S__.model.encoder.layers[0].fc2.weight.grad.abs().max().item() > 0.0


# ----- optimiser groups (docs/method.md §5) -----

@pytest.mark.parametrize("layers", [2, 3])
def test_llrd_groups_cover_every_layer(tiny_net, tmp_path, layers):
    path = str(tmp_path / f"wavlm_{layers}.pt")
    save_random_wavlm_checkpoint(path, seed=0, encoder_layers=layers)
    net = tiny_net("--pretrained_model_path", path, "--LLRD_factor", "0.5", "--LR_Transformer", "1e-3",
                   "--LR_MHFA", "5e-3")
    trainer = ModelTrainer(net, LR_MHFA=5e-3, LR_Transformer=1e-3, LLRD_factor=0.5, weight_decay=0.01)
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([5e-3] + [1e-3 * 0.5 ** i for i in range(layers)])
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(groups[0]["params"]) == ids(net.__S__.backend.parameters()) | {id(net.__L__.weight)}
    for index in range(layers):
        assert ids(groups[index + 1]["params"]) == ids(net.__S__.model.encoder.layers[index].parameters())
    assert all(g["weight_decay"] == 0.01 for g in groups)


def test_wavlm_parameters_outside_the_groups_never_change(tiny_net):
    net = tiny_net()
    trainer = ModelTrainer(net, LR_MHFA=5e-3, LR_Transformer=1e-2, weight_decay=0.5)
    grouped = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    outside = {k: p for k, p in net.__S__.model.named_parameters() if id(p) not in grouped}
    assert {k.split(".")[0] for k in outside} == {"feature_extractor", "layer_norm", "post_extract_proj",
                                                  "mask_emb", "encoder"}
    assert all(not k.startswith("encoder.layers.") for k in outside)
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    for seed in range(2):
        trainer.optimizer.zero_grad()
        net(*batch(seed), epoch=1)[0].backward()
        trainer.optimizer.step()
    after = dict(net.named_parameters())
    for key, parameter in outside.items():
        assert not parameter.requires_grad, key
        assert torch.equal(parameter, before["__S__.model." + key]), key
    for key in ("__S__.model.encoder.layers.0.fc1.weight", "__S__.model.encoder.layers.1.self_attn.q_proj.weight",
                "__S__.backend.pooling_fc.weight", "__L__.weight"):
        assert not torch.equal(after[key], before[key]), key


def test_scheduler_restored_equals_fast_forwarded(tiny_net):
    def trainer_of(net):
        return ModelTrainer(net, LR_MHFA=5e-3, LR_Transformer=1e-3, lr_decay=0.5, test_interval=1)

    net = tiny_net()
    trained = trainer_of(net)
    for epoch in range(3):
        trained.optimizer.zero_grad()
        net(*batch(epoch), epoch=1)[0].backward()
        trained.optimizer.step()
        trained.scheduler.step()
    restored = trainer_of(tiny_net())
    restored.load_state_dict(trained.state_dict())
    forwarded = trainer_of(tiny_net())
    forwarded.skip_epochs(3)
    expected = [5e-3 * 0.125, 1e-3 * 0.125, 1e-3 * 0.125]
    assert trained.learning_rates() == pytest.approx(expected)
    assert restored.learning_rates() == pytest.approx(expected)
    assert forwarded.learning_rates() == pytest.approx(expected)
    restored.scheduler.step()
    forwarded.scheduler.step()
    assert restored.learning_rates() == pytest.approx(forwarded.learning_rates())
    moments = restored.optimizer.state_dict()["state"]
    original = trained.optimizer.state_dict()["state"]
    assert moments.keys() == original.keys()
    assert all(torch.equal(moments[i]["exp_avg"], original[i]["exp_avg"]) for i in original)


# ----- the clean view (docs/method.md §4: no gradient; only under label correction) -----

def test_clean_view_only_from_lc_start_and_without_autograd(tiny_net):
    net = tiny_net()  # lc_start_epoch 3
    calls = []
    net.__S__.register_forward_hook(
        lambda module, args, output: calls.append((args[0], torch.is_grad_enabled(), module.training,
                                                   output.requires_grad)))
    augmented, clean, labels = batch()
    net(augmented, clean, labels, epoch=2)
    assert len(calls) == 1 and torch.equal(calls[0][0], augmented) and calls[0][1:] == (True, True, True)
    calls.clear()
    net.__L__.lgl_threshold = -100.0  # the gate drops every row: each one's clean view is read
    net(augmented, clean, labels, epoch=3)
    assert len(calls) == 2
    assert torch.equal(calls[1][0], clean)
    assert calls[1][1:] == (False, True, False)  # no grad, still in train mode (dropout as the original)


def test_mixed_precision_runs_the_encoder_in_bf16_and_the_loss_in_fp32(tiny_net):
    net = tiny_net("--mixedprec", "true")
    net.__L__.lgl_threshold = -100.0
    dtypes = []
    net.__S__.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    total, loss, _, ce = net(*batch(), epoch=3)
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert ce.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(total)


# ----- trainSpeakerNet.py in one process -----

def sampler_sizes(corpus, epochs):
    dataset = train_dataset_loader(corpus.train_list, False, corpus.musan_path, corpus.rir_path, 100,
                                   corpus.train_path)
    sampler = train_dataset_sampler(dataset, nPerSpeaker=1, max_seg_per_spk=500, batch_size=4,
                                    distributed=False, seed=20211202)
    sizes = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        sizes.append(len(sampler))
    return sizes


def test_single_process_run_writes_every_output(two_epoch_run, tiny_corpus):
    save_path, argv, _ = two_epoch_run
    model_dir = os.path.join(save_path, "model")
    assert sorted(os.listdir(model_dir)) == ["model000000001.model", "model000000002.model",
                                             "state000000001.pt", "state000000002.pt"]
    assert sorted(os.listdir(os.path.join(save_path, "loss_vals"))) == ["epoch_1.txt", "epoch_2.txt"]
    relative = {rel for _, rel in tiny_corpus.entries}
    for epoch, size in zip((1, 2), sampler_sizes(tiny_corpus, (1, 2))):
        with open(os.path.join(save_path, "loss_vals", f"epoch_{epoch}.txt")) as handle:
            lines = [line.split() for line in handle]
        assert len(lines) == size > 0
        assert all(float(ce) >= 0 and path in relative for ce, path in lines)
    with open(os.path.join(save_path, "result", "scores.txt")) as handle:
        scores = handle.read().splitlines()
    assert len(scores) == 2
    assert re.fullmatch(r"Epoch 1, TEER/TAcc \d+\.\d\d, TLOSS \d+\.\d{6}, LR 0\.005000 ", scores[0])
    assert re.fullmatch(r"Epoch 2, TEER/TAcc \d+\.\d\d, TLOSS \d+\.\d{6}, LR 0\.002500 ", scores[1])
    records = read_records(os.path.join(save_path, "result", "train_metrics.jsonl"))
    state = torch.load(os.path.join(model_dir, "state000000002.pt"), weights_only=True)
    assert [(r["epoch"], r["lr"], r["gate_threshold"]) for r in records] == [
        (1, 0.005, 1e6), (2, 0.0025, state["gate_threshold"])]  # the tiny config fits the gate from epoch 2
    for line, record in zip(scores, records):
        assert line == f"Epoch {record['epoch']}, TEER/TAcc {record['accuracy']:2.2f}, TLOSS {record['loss']:f}, " \
                       f"LR {record['lr']:f} "
        assert record["steps"] > 0 and record["seconds"] > 0 and record["utterances_per_s"] > 0
    resolved = options.parse_options("t", ["--config", os.path.join(save_path, "config.yaml")])
    expected = options.parse_options("t", argv)
    assert {k: v for k, v in vars(resolved).items() if k != "config"} == \
        {k: v for k, v in vars(expected).items() if k != "config"}


def test_gate_threshold_is_fitted_on_the_previous_epoch(two_epoch_run):
    save_path, _, net = two_epoch_run
    state = torch.load(os.path.join(save_path, "model", "state000000002.pt"), weights_only=True)
    fitted = LGL_threshold_update_gmm(os.path.join(save_path, "loss_vals", "epoch_1.txt"), 1e6)
    assert state["gate_threshold"] == fitted == net.__L__.lgl_threshold
    first = torch.load(os.path.join(save_path, "model", "state000000001.pt"), weights_only=True)
    assert first["gate_threshold"] == 1e6  # gate_start_epoch 2: still open after epoch 1


def test_resumed_run_reproduces_the_uninterrupted_run(two_epoch_run, tiny_argv, tmp_path, caplog):
    straight_path, _, straight = two_epoch_run
    save_path = str(tmp_path / "exp")
    trainSpeakerNet.main(tiny_argv(save_path, "--max_epoch", "1"))
    caplog.clear()
    with caplog.at_level("INFO"):
        resumed = trainSpeakerNet.main(tiny_argv(save_path, "--max_epoch", "2"))
    assert "epochs 2..2 on" in caplog.text and "Restored optimizer" in caplog.text
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    for name in ("epoch_1.txt", "epoch_2.txt"):
        with open(os.path.join(save_path, "loss_vals", name)) as a, \
                open(os.path.join(straight_path, "loss_vals", name)) as b:
            assert a.read() == b.read()
    with open(os.path.join(save_path, "result", "scores.txt")) as a, \
            open(os.path.join(straight_path, "result", "scores.txt")) as b:
        assert a.read() == b.read()


def test_fewer_labels_than_classes_is_logged(tiny_argv, tmp_path, caplog):
    with caplog.at_level("INFO"):
        training.speaker_trainer.check_labels(
            train_dataset_loader(**vars(options.parse_options("t", tiny_argv(str(tmp_path))))), 8, "LIST")
    assert "LIST: 6 labels, nClasses 8: AAM rows 6..7 unused" in caplog.text


def test_more_labels_than_classes_fails_before_training(tiny_argv, tiny_corpus, tmp_path):
    save_path = str(tmp_path / "exp")
    with pytest.raises(InputError) as error:
        trainSpeakerNet.main(tiny_argv(save_path, "--nClasses", "4"))
    assert str(error.value) == (f"{tiny_corpus.train_list}: 6 distinct labels but nClasses is 4; "
                                "set --nClasses 6 (or more)")
    assert not os.path.exists(save_path), "a run refused for its inputs leaves no folder"


def test_eval_options_point_to_the_eval_script(tiny_argv, tmp_path):
    for flag in ("--eval", "--generate_embeddings"):
        with pytest.raises(InputError, match="trainSpeakerNet_Eval.py"):
            trainSpeakerNet.main(tiny_argv(str(tmp_path), flag))


def test_start_point_newest_checkpoint_wins_over_initial_model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    assert training.run.find_start(str(folder), None) == (1, None, None)
    assert training.run.find_start(str(folder), "round.model") == (1, "round.model", None)
    torch.save({"w": torch.zeros(2)}, folder / "model000000003.model")
    assert training.run.find_start(str(folder), "round.model") == (4, str(folder / "model000000003.model"), None)
    torch.save({"epoch": 3}, folder / "state000000003.pt")
    assert training.run.find_start(str(folder), None) == (
        4, str(folder / "model000000003.model"), str(folder / "state000000003.pt"))


def test_weights_only_resume_fast_forwards_the_scheduler(tiny_net):
    trainer = ModelTrainer(tiny_net(), LR_MHFA=5e-3, LR_Transformer=1e-3, lr_decay=0.5)
    training.run.restore(trainer, start_epoch=4, state_file=None)
    assert trainer.learning_rates() == pytest.approx([5e-3 / 8, 1e-3 / 8, 1e-3 / 8])


def test_rank_part_path():
    assert rank_part_path("/x/loss_vals/epoch_3.txt", 1) == "/x/loss_vals/epoch_3_rank1.txt"


def test_tiny_config_is_valid():
    args = options.parse_options("t", ["--config", TINY_CONFIG])
    assert (args.max_frames, args.batch_size, args.nClasses, args.nOut, args.max_epoch) == (100, 4, 8, 32, 2)


# ----- a loss without a gate (loss/aam.py) -----

def test_plain_aam_equals_the_gated_loss_with_the_gate_open():
    """loss/aam.py is aamsoftmax's loss with the gate open and before label correction, and has no hooks."""
    from loss.aam import LossFunction as PlainAAM
    from loss.aamsoftmax import LossFunction as GatedAAM

    torch.manual_seed(0)
    plain = PlainAAM(nOut=8, nClasses=5, margin=0.2, scale=30)
    gated = GatedAAM(nOut=8, nClasses=5, margin=0.2, scale=30)
    gated.load_state_dict(plain.state_dict())
    x, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    for ours, theirs in zip(plain(x, None, labels, 1), gated(x, None, labels, 1)):
        assert torch.equal(ours, theirs)
    assert plain.hook_state() == {} and not plain.needs_clean_view(99)


def test_a_loss_without_a_gate_trains_through_the_script(tiny_argv, tmp_path):
    save_path = str(tmp_path / "exp")
    net = trainSpeakerNet.main(tiny_argv(save_path, "--trainfunc", "aam", "--max_epoch", "2"))
    assert type(net.__L__).__module__ == "loss.aam"
    records = read_records(os.path.join(save_path, "result", "train_metrics.jsonl"))
    assert [r["epoch"] for r in records] == [1, 2] and "gate_threshold" not in records[0]
    assert records[1]["loss"] < records[0]["loss"]
    state = torch.load(os.path.join(save_path, "model", "state000000002.pt"), weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "rng", "world_size", "epoch"}
    with pytest.raises(InputError, match="unknown trainfunc 'softmaxx'; the losses are aam, aamsoftmax"):
        trainSpeakerNet.main(tiny_argv(str(tmp_path / "other"), "--trainfunc", "softmaxx"))


# ----- label-correction epochs: the clean view of the dropped rows only -----

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
                  dropout_input=0.0)


def whole_batch_step(net, augmented, clean, labels, epoch):
    """The step as it was before: the clean view of every row, then the same loss and objective."""
    embeddings = net.__S__(augmented).float()
    with torch.no_grad():
        clean_embeddings = net.__S__(clean).float()
    loss, prec1, ce = net.__L__(embeddings, clean_embeddings, labels, epoch)
    distance = net.weight_distance()
    total = loss / loss.detach() + net.weight_finetuning_reg * distance / (distance.detach() + 1e-5)
    return total, loss.detach(), prec1, clean_embeddings


def test_clean_view_of_the_dropped_rows_only_gives_the_whole_batch_results(tiny_net, tmp_path):
    path = str(tmp_path / "wavlm.pt")
    save_random_wavlm_checkpoint(path, seed=0, **NO_DROPOUT)
    net = tiny_net("--pretrained_model_path", path, "--lc_start_epoch", "1", "--lc_confidence", "0.0",
                   "--nClasses", "6")
    augmented, clean, labels = batch(seed=3, size=6)
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(net.__L__.margin_logits(net.__S__(augmented), labels), labels,
                                               reduction="none")
    net.__L__.lgl_threshold = float(torch.log(ce).median())  # the gate drops half of the batch
    forwarded = []
    hook = net.__S__.register_forward_hook(lambda module, inputs, output: forwarded.append(inputs[0].shape[0]))
    total, loss, prec1, _ = net(augmented, clean, labels, epoch=1)
    hook.remove()
    total.backward()
    ours = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    dropped = net.__L__.clean_view_rows(net.__S__(augmented).detach().float(), labels, 1)
    assert forwarded == [6, int(dropped.sum())] and 0 < int(dropped.sum()) < 6

    net.zero_grad()
    whole_total, whole_loss, whole_prec1, whole_clean = whole_batch_step(net, augmented, clean, labels, 1)
    whole_total.backward()
    assert torch.equal(loss, whole_loss) and torch.equal(prec1, whole_prec1) and torch.equal(total, whole_total)
    for name, p in net.named_parameters():
        if p.grad is not None:
            assert torch.equal(ours[name], p.grad), name
    ours_clean = net.clean_view(clean, dropped, whole_clean.shape[1])
    assert torch.equal(net.__L__.corrected_labels(ours_clean)[0][dropped],
                       net.__L__.corrected_labels(whole_clean)[0][dropped])
    print(f"gate kept {6 - int(dropped.sum())} of 6 rows; max |clean embedding difference| "
          f"{(ours_clean[dropped] - whole_clean[dropped]).abs().max():.1e}")


def test_no_clean_forward_when_the_gate_keeps_every_row(tiny_net):
    net = tiny_net("--lc_start_epoch", "1")
    forwarded = []
    net.__S__.register_forward_hook(lambda module, inputs, output: forwarded.append(inputs[0].shape[0]))
    net(*batch(seed=4), epoch=1)  # the gate is open (threshold 1e6): every row is kept
    assert forwarded == [4]


def test_clean_view_of_a_batch_norm_encoder_uses_running_statistics(tiny_argv, tmp_path):
    args = options.parse_options("t", tiny_argv(str(tmp_path), "--model", "ecapa_tdnn", "--channels", "16",
                                                "--nOut", "8", "--n_mels", "20", "--lc_start_epoch", "1",
                                                "--pretrained_model_path", ""))
    from training.speaker_net import SpeakerNet

    torch.manual_seed(0)
    net = SpeakerNet(**vars(args)).train()
    running = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    clean = batch(seed=5)[1]
    one_row = net.clean_view(clean, torch.tensor([False, True, False, False]), 8)
    assert net.__S__.training and all(torch.equal(v, net.state_dict()[k]) for k, v in running.items())
    net.eval()
    with torch.no_grad():
        assert torch.allclose(one_row[1], net.__S__(clean[1:2])[0], atol=1e-6) and not one_row[0].any()
