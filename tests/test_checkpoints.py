"""Checkpoint files: original key layout both ways, strict key and shape checks, listing, random states."""
import os
import random

import numpy as np
import pytest
import torch

from utils import checkpoints
from utils.checkpoints import CheckpointError


def randomized_state(net, seed):
    """The net's state dict with every tensor replaced by seeded random values (so a copy is visible)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) for k, v in net.state_dict().items()}


def original_loader(self_state, loaded_state):
    """The original's ``loadParameters``, restated: copy what matches, report what does not."""
    not_in_model, wrong_length = [], []
    for name, param in loaded_state.items():
        origname = name
        if name not in self_state:
            name = name.replace("module.", "")
            if name not in self_state:
                not_in_model.append(origname)
                continue
        if self_state[name].size() != loaded_state[origname].size():
            wrong_length.append(origname)
            continue
        self_state[name].copy_(param)
    return not_in_model, wrong_length


def test_state_dict_has_the_original_layout(tiny_net):
    keys = list(tiny_net().state_dict())
    assert {k.split(".")[0] for k in keys} == {"__S__", "__L__"}
    assert "__L__.weight" in keys and "__S__.model.encoder.layers.0.fc1.weight" in keys
    assert "__S__.backend.weights_k" in keys and "__S__.model.encoder.pos_conv.0.weight_g" in keys
    assert all(k.startswith(("__S__.model.", "__S__.backend.", "__L__.")) for k in keys)


def test_original_checkpoint_with_module_prefix_loads_every_tensor(tiny_net, tmp_path):
    net = tiny_net()
    saved = randomized_state(net, seed=1)
    path = str(tmp_path / "original.model")
    torch.save({"module." + k: v for k, v in saved.items()}, path)
    checkpoints.load_weights(net, path)
    loaded = net.state_dict()
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_our_checkpoint_loads_in_the_original_loader(tiny_net, tmp_path):
    source = tiny_net()
    source.load_state_dict(randomized_state(source, seed=2))
    path = str(tmp_path / "ours.model")
    checkpoints.save_weights(source, path)
    target = tiny_net(seed=5)
    target_state = target.state_dict()
    not_in_model, wrong_length = original_loader(target_state, torch.load(path))
    assert not_in_model == [] and wrong_length == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_wrapped_state_dict_loads(tiny_net, tmp_path):
    net = tiny_net()
    saved = randomized_state(net, seed=3)
    path = str(tmp_path / "wrapped.pt")
    torch.save({"state_dict": saved, "epoch": 3}, path)
    checkpoints.load_weights(net, path)
    assert torch.equal(net.state_dict()["__L__.weight"], saved["__L__.weight"])


def test_wrong_shape_names_tensor_both_shapes_and_the_option(tiny_net, tmp_path):
    path = str(tmp_path / "eight.model")
    checkpoints.save_weights(tiny_net(), path)  # nClasses 8, nOut 32
    net = tiny_net("--nClasses", "6")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        checkpoints.load_weights(net, path)
    assert "__L__.weight: checkpoint (8, 32) vs model (6, 32) — set --nClasses 8" in str(error.value)
    assert path in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing half-loaded


def test_strict_loss_false_ignores_the_aam_weight(tiny_net, tmp_path):
    source = tiny_net()
    source.load_state_dict(randomized_state(source, seed=4))
    path = str(tmp_path / "eight.model")
    checkpoints.save_weights(source, path)
    net = tiny_net("--nClasses", "6")
    aam_before = net.__L__.weight.detach().clone()
    checkpoints.load_weights(net, path, strict_loss=False)
    assert torch.equal(net.__L__.weight, aam_before)
    assert torch.equal(net.__S__.backend.pooling_fc.weight, source.__S__.backend.pooling_fc.weight)


def test_missing_and_unexpected_keys_are_listed(tiny_net, tmp_path):
    net = tiny_net()
    state = dict(net.state_dict())
    del state["__S__.backend.weights_v"]
    state["__S__.backend.extra"] = torch.zeros(2)
    path = str(tmp_path / "odd.model")
    torch.save(state, path)
    with pytest.raises(CheckpointError) as error:
        checkpoints.load_weights(net, path)
    message = str(error.value)
    assert "missing from the checkpoint: __S__.backend.weights_v" in message
    assert "not in the model: __S__.backend.extra" in message


def test_pretrained_wavlm_file_is_not_mistaken_for_a_training_checkpoint(tiny_net, tiny_wavlm):
    with pytest.raises(CheckpointError, match="missing from the checkpoint: __L__.weight"):
        checkpoints.load_weights(tiny_net(), tiny_wavlm)


def test_list_and_newest_checkpoint(tmp_path):
    folder = tmp_path / "model"
    assert checkpoints.list_checkpoints(str(folder)) == [] and checkpoints.newest_checkpoint(str(folder)) is None
    folder.mkdir()
    for name in ("model000000010.model", "model000000002.model", "state000000002.pt", "model_best.model",
                 ".model000000011.model.tmp", "model000000001.model"):
        (folder / name).write_bytes(b"")
    assert checkpoints.list_checkpoints(str(folder)) == [
        (1, str(folder / "model000000001.model")), (2, str(folder / "model000000002.model")),
        (10, str(folder / "model000000010.model"))]
    assert checkpoints.newest_checkpoint(str(folder)) == (10, str(folder / "model000000010.model"))
    assert checkpoints.model_path(str(folder), 7) == str(folder / "model000000007.model")
    assert checkpoints.state_path(str(folder), 7) == str(folder / "state000000007.pt")


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = checkpoints.capture_rng_state()
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    path = str(tmp_path / "state.pt")
    torch.save({"rng": state, "epoch": 1}, path)
    checkpoints.restore_rng_state(checkpoints.read_resume_state(path)["rng"])
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


def test_save_checkpoint_writes_weights_and_state_atomically(tiny_net, tmp_path):
    net = tiny_net()
    folder = str(tmp_path / "model")
    path = checkpoints.save_checkpoint(folder, 4, net, {"gate_threshold": 1.5})
    assert path == checkpoints.model_path(folder, 4)
    assert sorted(os.listdir(folder)) == ["model000000004.model", "state000000004.pt"]  # no temporary left
    assert checkpoints.read_resume_state(checkpoints.state_path(folder, 4)) == {"gate_threshold": 1.5, "epoch": 4}
    reloaded = torch.load(path, weights_only=True)
    assert all(torch.equal(reloaded[k], v) for k, v in net.state_dict().items())
