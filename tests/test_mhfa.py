"""MHFA head (docs/method.md §3) and the speaker-encoder factory."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import models.wavlm_mhfa
from models.encoder import ALIASES, ENCODERS, encoder_class, get_model_factory
from models.mhfa import MHFA
from models.wavlm_checkpoint import BASE_PLUS_CFG, TINY_WAVLM_CFG, save_random_wavlm_checkpoint
from models.wavlm_mhfa import MainModel, WavLMMHFA
from tests.helpers_models import randomize_parameters_

HEAD_KEYS = {"weights_k", "weights_v", "cmp_linear_k.weight", "cmp_linear_k.bias", "cmp_linear_v.weight",
             "cmp_linear_v.bias", "att_head.weight", "att_head.bias", "pooling_fc.weight", "pooling_fc.bias"}


def original_formula(head: MHFA, hidden_states):
    """docs/method.md §3 written on the stacked (B, D, T, L) tensor, step by step."""
    x = torch.stack(hidden_states, dim=-1).transpose(1, 2)  # (B, D, T, L)
    k = (x * F.softmax(head.weights_k, dim=-1)).sum(dim=-1).transpose(1, 2)  # (B, T, D)
    v = (x * F.softmax(head.weights_v, dim=-1)).sum(dim=-1).transpose(1, 2)
    k, v = head.cmp_linear_k(k), head.cmp_linear_v(v)  # (B, T, C)
    attention = F.softmax(head.att_head(k), dim=1)  # (B, T, H), softmax over time
    pooled = (v.unsqueeze(-2) * attention.unsqueeze(-1)).sum(dim=1)  # (B, H, C)
    return head.pooling_fc(pooled.reshape(pooled.shape[0], -1))


def random_head(seed: int = 0, **sizes) -> MHFA:
    torch.manual_seed(seed)
    head = MHFA(**{"num_layers": 5, "inputs_dim": 24, "head_nb": 4, "compression_dim": 8, "outputs_dim": 6, **sizes})
    randomize_parameters_(head, seed + 1, scale=0.5)
    return head


def random_states(batch: int, frames: int, dim: int = 24, layers: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, frames, dim, generator=generator) for _ in range(layers)]


def test_initial_layer_weights_and_parameter_names():
    head = MHFA(num_layers=13)
    assert set(head.state_dict()) == HEAD_KEYS
    assert torch.equal(head.weights_k, torch.ones(13)) and torch.equal(head.weights_v, torch.ones(13))
    assert head.att_head.weight.shape == (64, 128) and head.pooling_fc.weight.shape == (256, 64 * 128)
    assert head.cmp_linear_k.weight.shape == (128, 768)


def test_matches_original_formula():
    head = random_head()
    states = random_states(3, 17)
    with torch.no_grad():
        diff = float((head(states) - original_formula(head, states)).abs().max())
    print(f"\n[MHFA vs stacked (B, D, T, L) formula] max abs diff {diff:.2e}")
    assert diff < 1e-5


def test_masked_frames_are_ignored_exactly():
    """A padded row (padding filled with large values) pools like its truncated sequence."""
    head = random_head(seed=2)
    states = random_states(2, 20, seed=3)
    for state in states:
        state[1, 13:] = 1e4
    mask = torch.arange(20)[None, :] < torch.tensor([[20], [13]])
    with torch.no_grad():
        masked = head(states, mask)
        truncated = head([state[1:, :13] for state in states])
        full_row = head([state[:1] for state in states])
        unmasked = head(states, torch.ones(2, 20, dtype=torch.bool))
        plain = head(states)
    assert float((masked[1] - truncated[0]).abs().max()) < 1e-5
    assert float((masked[0] - full_row[0]).abs().max()) < 1e-5
    assert torch.equal(unmasked, plain)
    assert float((plain[1] - truncated[0]).abs().max()) > 1e-2  # the padding does matter unmasked


def test_layer_weights_learn_and_bad_inputs_are_explained():
    head = random_head(seed=4)
    head(random_states(2, 9)).square().sum().backward()
    assert head.weights_k.grad.abs().sum() > 0 and head.weights_v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expects 5 hidden states, got 4"):
        head(random_states(2, 9, layers=4))
    with pytest.raises(ValueError, match="frame_mask must be a bool tensor of shape"):
        head(random_states(2, 9), torch.ones(2, 9))


def test_one_layer_weight_per_hidden_state():
    tiny = WavLMMHFA(TINY_WAVLM_CFG.to_dict(), nOut=16, head_nb=4, compression_dim=8)
    assert tiny.backend.weights_k.numel() == tiny.backend.weights_v.numel() == 3
    with torch.device("meta"):
        base_plus = WavLMMHFA(BASE_PLUS_CFG.to_dict())
    assert base_plus.backend.weights_k.numel() == 13
    keys = set(base_plus.state_dict())
    assert {key[len("backend."):] for key in keys if key.startswith("backend.")} == HEAD_KEYS
    assert {key[len("model."):] for key in keys if key.startswith("model.")} == set(base_plus.model.state_dict())
    assert base_plus.backend.pooling_fc.weight.shape == (256, 64 * 128)


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    path = str(tmp_path / "tiny.pt")
    save_random_wavlm_checkpoint(path, seed=1, extractor_mode="layer_norm", layer_norm_first=True)
    return path


def test_padded_batch_embeds_like_single_utterances(tiny_checkpoint):
    """With a layer-norm extractor, lengths make padding invisible end to end."""
    encoder = MainModel(pretrained_model_path=tiny_checkpoint, nOut=16, head_nb=4).eval()
    randomize_parameters_(encoder.backend, seed=5, scale=0.5)
    waveforms = torch.randn(2, 7000, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        batched = encoder(waveforms, torch.tensor([7000, 4100]))
        alone = torch.cat([encoder(waveforms[:1]), encoder(waveforms[1:, :4100])])
    assert batched.shape == (2, 16)
    assert float((batched - alone).abs().max()) < 1e-5


def test_main_model_factory(tiny_checkpoint):
    factory = get_model_factory("Baseline.Spk_Encoder")
    assert factory is get_model_factory("spk_encoder") is get_model_factory("wavlm_mhfa") is models.wavlm_mhfa.MainModel
    assert encoder_class("Baseline.Spk_Encoder") is WavLMMHFA
    assert set(ENCODERS) == {"wavlm_mhfa", "ecapa_tdnn", "hubert_mhfa", "wav2vec2_mhfa"}
    assert set(ALIASES) == {"spk_encoder", "Baseline.Spk_Encoder"}
    encoder = factory(pretrained_model_path=tiny_checkpoint, nOut=32, head_nb=8, max_frames=300,
                      LR_MHFA=5e-3, model="Baseline.Spk_Encoder")
    assert encoder.backend.pooling_fc.out_features == 32 and encoder.backend.att_head.out_features == 8
    state = encoder.state_dict()
    assert not any("reference" in key for key in state)
    reference = encoder.reference_weights()
    assert set(reference) == {key for key in state if key.startswith("model.")}
    for key, value in reference.items():
        assert torch.equal(value, state[key])
    with pytest.raises(ValueError, match="--pretrained_model_path"):
        factory(pretrained_model_path=None)
    with pytest.raises(ValueError, match="unknown model 'ResNetSE34'.*ecapa_tdnn, hubert_mhfa, wav2vec2_mhfa, "
                                         "wavlm_mhfa.*Baseline.Spk_Encoder"):
        get_model_factory("ResNetSE34")
    with pytest.raises(ValueError, match="defines no MainModel"):
        get_model_factory("mhfa")


def test_large_like_head_uses_backbone_width():
    cfg = dataclasses.replace(TINY_WAVLM_CFG, encoder_embed_dim=48, encoder_layers=3)
    encoder = WavLMMHFA(cfg.to_dict(), nOut=10, head_nb=2, compression_dim=4)
    assert encoder.backend.cmp_linear_k.in_features == 48 and encoder.backend.weights_k.numel() == 4
    with torch.no_grad():
        assert encoder.eval()(torch.randn(2, 3000)).shape == (2, 10)
