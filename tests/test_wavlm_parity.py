"""WavLM backbone: parity with torchaudio and transformers, checkpoint formats, padding, train mode.

Run with ``-s`` to see the parity figures (max absolute differences).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import pytest
import torch
import torchaudio
import transformers

from models.wavlm import WavLM, WavLMConfig, parse_conv_feature_layers, relative_position_buckets
from models.wavlm_checkpoint import (
    BASE_PLUS_CFG,
    LARGE_CFG,
    TINY_WAVLM_CFG,
    CheckpointFormatError,
    load_pretrained_wavlm,
    save_random_wavlm_checkpoint,
)
from tests.helpers_models import max_abs_diff, random_wavlm, randomize_parameters_, torchaudio_copy

TOLERANCE = 1e-4
LARGE_LIKE_TINY = dataclasses.replace(TINY_WAVLM_CFG, extractor_mode="layer_norm", layer_norm_first=True)
PARITY_CONFIGS = {
    "tiny": TINY_WAVLM_CFG,
    "base_plus": BASE_PLUS_CFG,
    "large_like_tiny": LARGE_LIKE_TINY,
}


def _waveforms(batch: int, samples: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_layer_outputs_match_torchaudio(name):
    """Layers 1..L equal torchaudio's ``extract_features`` at two input lengths.

    torchaudio's WavLM cannot take ``lengths`` (its attention asserts on a mask), so padded
    batches are checked against transformers below.
    """
    model = random_wavlm(PARITY_CONFIGS[name], seed=3)
    reference = torchaudio_copy(model)
    diffs = {}
    for batch, samples in ((1, 16000), (2, 9000)):
        waveforms = _waveforms(batch, samples, seed=samples)
        with torch.no_grad():
            diffs[samples] = max_abs_diff(model(waveforms)[1:], reference.extract_features(waveforms)[0])
    print(f"\n[torchaudio parity] {name}: " + "; ".join(f"{n} samples {d:.2e}" for n, d in diffs.items()))
    assert max(diffs.values()) < TOLERANCE


def _huggingface_folder(tmp_path, stable: bool, weights_format: str, base_plus: bool = False):
    """A random ``transformers.WavLMModel`` saved as a Hugging Face folder (tiny, or WavLM Base+'s shape).

    transformers 5 only writes safetensors; the ``bin`` variant is written by ``torch.save`` with
    the pre-parametrisation ``weight_g``/``weight_v`` names, as in the older hub folders.
    """
    shape = (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
             if base_plus else
             dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4))
    config = transformers.WavLMConfig(**shape, do_stable_layer_norm=stable,
                                      feat_extract_norm="layer" if stable else "group", conv_bias=stable)
    torch.manual_seed(5)
    hf_model = transformers.WavLMModel(config)
    randomize_parameters_(hf_model, seed=6)
    hf_model.eval()
    folder = tmp_path / f"hf_{weights_format}"
    if weights_format == "safetensors":
        hf_model.save_pretrained(folder)
    else:
        folder.mkdir()
        config.to_json_file(folder / "config.json")
        renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
        state = {}
        for key, value in hf_model.state_dict().items():
            for old, new in renames.items():
                key = key.replace(old, new)
            state[key] = value
        torch.save(state, folder / "pytorch_model.bin")
    return hf_model, folder


@pytest.mark.parametrize("stable,weights_format", [(False, "safetensors"), (False, "bin"), (True, "safetensors")])
def test_hidden_states_match_transformers(tmp_path, stable, weights_format):
    """All hidden states, index 0 included, equal ``WavLMModel(output_hidden_states=True)``.

    Both index 0s are the transformer input: after the positional convolution, and after the
    encoder layer norm in the post-LN model (in transformers 5 the pre-LN model's last hidden
    state is also the raw last layer output; its ``last_hidden_state`` adds the encoder layer norm).
    """
    hf_model, folder = _huggingface_folder(tmp_path, stable, weights_format)
    path = str(folder) if weights_format == "safetensors" else str(folder / "config.json")
    model, reference = load_pretrained_wavlm(path)
    model.eval()
    assert model.cfg.layer_norm_first is stable and model.cfg.conv_bias is stable
    assert set(reference) == set(model.state_dict())
    waveforms, lengths = _waveforms(2, 12000, seed=7), torch.tensor([12000, 8321])
    sample_mask = (torch.arange(12000)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        ours = model(waveforms)
        output = hf_model(waveforms, output_hidden_states=True)
        ours_padded = model(waveforms * sample_mask, lengths)
        theirs_padded = hf_model(waveforms * sample_mask, attention_mask=sample_mask, output_hidden_states=True)
    diff = max_abs_diff(ours, list(output.hidden_states))
    frames = model.frame_lengths(lengths).tolist()
    diff_padded = max(float((a[row, :n] - b[row, :n]).abs().max())
                      for a, b in zip(ours_padded, theirs_padded.hidden_states) for row, n in enumerate(frames))
    print(f"\n[transformers parity] stable_layer_norm={stable} {weights_format}: {diff:.2e} over "
          f"{len(ours)} hidden states (2 x 12000 samples); padded batch (12000, 8321 samples) {diff_padded:.2e}")
    assert diff < TOLERANCE and diff_padded < TOLERANCE
    if stable:
        with torch.no_grad():
            final = model.encoder.layer_norm(ours[-1])
        assert float((final - output.last_hidden_state).abs().max()) < TOLERANCE


def test_base_plus_all_13_hidden_states_match_transformers(tmp_path):
    """WavLM Base+'s full shape (12 layers, 768 dims): all 13 hidden states equal transformers'."""
    hf_model, folder = _huggingface_folder(tmp_path, stable=False, weights_format="safetensors", base_plus=True)
    model, _ = load_pretrained_wavlm(str(folder))
    model.eval()
    assert model.num_hidden_states == 13 and model.embed_dim == 768
    waveforms = _waveforms(1, 16000, seed=8)
    with torch.no_grad():
        ours = model(waveforms)
        theirs = hf_model(waveforms, output_hidden_states=True).hidden_states
    diff = max_abs_diff(ours, list(theirs))
    print(f"\n[transformers parity] Base+ shape: {diff:.2e} over {len(ours)} hidden states (16000 samples)")
    assert len(theirs) == 13 and diff < TOLERANCE


def test_parameter_names_and_shapes_are_microsofts():
    """Hand-checked Base+ keys and shapes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        shapes = {key: tuple(value.shape) for key, value in WavLM(BASE_PLUS_CFG).state_dict().items()}
    assert shapes["feature_extractor.conv_layers.0.0.weight"] == (512, 1, 10)
    assert shapes["feature_extractor.conv_layers.0.2.weight"] == (512,)
    assert shapes["feature_extractor.conv_layers.6.0.weight"] == (512, 512, 2)
    assert "feature_extractor.conv_layers.1.2.weight" not in shapes
    assert shapes["layer_norm.weight"] == (512,)
    assert shapes["post_extract_proj.weight"] == (768, 512)
    assert shapes["mask_emb"] == (768,)
    assert shapes["encoder.pos_conv.0.weight_g"] == (1, 1, 128)
    assert shapes["encoder.pos_conv.0.weight_v"] == (768, 48, 128)
    assert shapes["encoder.layers.0.self_attn.relative_attention_bias.weight"] == (320, 12)
    assert not any(key.startswith("encoder.layers.1.self_attn.relative_attention_bias") for key in shapes)
    assert shapes["encoder.layers.11.self_attn.grep_linear.weight"] == (8, 64)
    assert shapes["encoder.layers.11.self_attn.grep_a"] == (1, 12, 1, 1)
    assert shapes["encoder.layers.11.fc1.weight"] == (3072, 768)
    per_layer = {key.split(".", 3)[3] for key in shapes if key.startswith("encoder.layers.5.")}
    assert per_layer == {f"{m}.{p}" for m in ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj",
                                               "self_attn.out_proj", "self_attn.grep_linear",
                                               "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
                         for p in ("weight", "bias")} | {"self_attn.grep_a"}
    # 7 convolutions + group norm, layer norm, projection, mask_emb, positional conv, encoder
    # layer norm, 19 tensors per layer, the bias table of layer 0
    assert len(shapes) == 9 + 2 + 2 + 1 + 3 + 2 + 12 * 19 + 1


@pytest.mark.parametrize("cfg,builder", [(BASE_PLUS_CFG, torchaudio.models.wavlm_base),
                                         (LARGE_CFG, torchaudio.models.wavlm_large)])
def test_parameter_count_equals_torchaudio_plus_mask_embedding(cfg, builder):
    """Base+ 94,381,936 and Large 315,453,120 parameters: torchaudio's count plus ``mask_emb``."""
    with torch.device("meta"):
        ours, theirs = WavLM(cfg), builder()
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) + cfg.encoder_embed_dim
    assert ours.num_hidden_states == cfg.encoder_layers + 1


def test_microsoft_round_trip_logs_skipped_keys_once(tmp_path, caplog):
    path = str(tmp_path / "random.pt")
    cfg = save_random_wavlm_checkpoint(path, seed=11, encoder_layers=3)
    saved = torch.load(path, weights_only=True)
    assert saved["cfg"]["mask_prob"] == 0.65 and saved["cfg"]["encoder_layers"] == 3
    with caplog.at_level(logging.INFO, logger="models.wavlm_checkpoint"):
        model, reference = load_pretrained_wavlm(path)
    assert model.cfg == cfg and model.num_hidden_states == 4
    skip_lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skip_lines) == 1
    assert all(k in skip_lines[0] for k in ("label_embs_concat", "final_proj.weight", "final_proj.bias"))
    state = model.state_dict()
    assert set(state) == set(reference) == set(saved["model"]) - {"label_embs_concat", "final_proj.weight",
                                                                   "final_proj.bias"}
    for key, value in state.items():
        assert torch.equal(value, saved["model"][key]) and torch.equal(reference[key], value), key
    with torch.no_grad():
        model.encoder.layers[0].fc1.weight.add_(1.0)
    assert torch.equal(reference["encoder.layers.0.fc1.weight"], saved["model"]["encoder.layers.0.fc1.weight"])


def test_same_seed_same_checkpoint_and_rng_untouched(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    save_random_wavlm_checkpoint(str(tmp_path / "a.pt"), seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    save_random_wavlm_checkpoint(str(tmp_path / "b.pt"), seed=4)
    a, b = (torch.load(tmp_path / n, weights_only=True)["model"] for n in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_wrong_shape_names_tensor_and_both_shapes(tmp_path):
    path = str(tmp_path / "random.pt")
    save_random_wavlm_checkpoint(path)
    content = torch.load(path, weights_only=True)
    content["model"]["encoder.layers.1.fc1.weight"] = torch.zeros(100, 64)
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=r"'encoder.layers.1.fc1.weight'.*\(100, 64\).*\(128, 64\)"):
        load_pretrained_wavlm(path)


def test_missing_tensor_is_named(tmp_path):
    path = str(tmp_path / "random.pt")
    save_random_wavlm_checkpoint(path)
    content = torch.load(path, weights_only=True)
    del content["model"]["encoder.layers.0.self_attn.grep_a"]
    del content["model"]["mask_emb"]  # optional: the pre-training mask embedding
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=r"missing encoder tensors \['encoder.layers.0.self_attn.grep_a'\]"):
        load_pretrained_wavlm(path)


def test_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointFormatError, match="is unreadable: empty, truncated or not a PyTorch file"):
        load_pretrained_wavlm(str(text))
    state_only = tmp_path / "state.pt"
    torch.save({"__S__.model.mask_emb": torch.zeros(3)}, state_only)
    with pytest.raises(CheckpointFormatError, match="expected a dict with 'cfg'"):
        load_pretrained_wavlm(str(state_only))
    with pytest.raises(CheckpointFormatError, match="not found"):
        load_pretrained_wavlm(str(tmp_path / "absent.pt"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "wavlm"}))
    with pytest.raises(CheckpointFormatError, match="no weights"):
        load_pretrained_wavlm(str(tmp_path / "hf"))
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    with pytest.raises(CheckpointFormatError, match="model_type is 'hubert'"):
        load_pretrained_wavlm(str(tmp_path / "hf"))
    bad_cfg = tmp_path / "bad_cfg.pt"
    torch.save({"cfg": {"encoder_layers": "12"}, "model": {}}, bad_cfg)
    with pytest.raises(CheckpointFormatError, match="encoder_layers.*expected int.*str"):
        load_pretrained_wavlm(str(bad_cfg))


def test_config_parsing():
    assert parse_conv_feature_layers(BASE_PLUS_CFG.conv_feature_layers) == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ("__import__('os').system('true')", "[(512, 10)]", "[(512,10,5)] * 2.0", "[]", "[(1,2,3)"):
        with pytest.raises(ValueError, match="conv_feature_layers"):
            parse_conv_feature_layers(bad)
    full = {**BASE_PLUS_CFG.to_dict(), "mask_prob": 0.65, "label_rate": 50}
    assert WavLMConfig.from_dict(full) == BASE_PLUS_CFG
    assert WavLMConfig.from_dict({"dropout": 0}).dropout == 0.0
    with pytest.raises(ValueError, match="extractor_mode"):
        WavLMConfig(extractor_mode="group_norm")
    with pytest.raises(TypeError, match="'layer_norm_first': expected bool"):
        WavLMConfig(layer_norm_first=1)


def test_frame_lengths_match_transformers_and_real_frames():
    model = random_wavlm(TINY_WAVLM_CFG)
    lengths = torch.tensor([400, 401, 719, 720, 16000, 16319, 16320, 48000])
    hf_model = transformers.WavLMModel(transformers.WavLMConfig(conv_dim=(32,) * 7, num_hidden_layers=1))
    assert model.frame_lengths(lengths).tolist() == hf_model._get_feat_extract_output_lengths(lengths).tolist()
    assert model.frame_lengths(lengths)[:4].tolist() == [1, 1, 1, 2]
    assert model.receptive_field == 400
    with torch.no_grad():
        for n in (400, 720, 16319):
            assert model.feature_extractor(torch.zeros(1, n)).shape[-1] == int(model.frame_lengths(torch.tensor(n)))


def test_relative_position_buckets_by_hand():
    buckets = relative_position_buckets(200, num_buckets=320, max_distance=800)
    # offsets under 80 have their own bucket; positive offsets use the upper half (160..319)
    assert buckets[0, 0] == 0 and buckets[5, 0] == 5 and buckets[0, 5] == 165 and buckets[0, 79] == 239
    # offset 80: 80 + floor(log(80/80) / log(800/80) * 80) = 80; offset 160: 80 + floor(log(2)/log(10)*80) = 104
    assert buckets[80, 0] == 80 and buckets[160, 0] == 104 and buckets[0, 160] == 264
    assert torch.equal(buckets.diagonal(offset=3), torch.full((197,), 163))


def test_padding_is_exact_only_with_layer_norm_extractor():
    """What WavLM.forward's docstring promises about padded batches."""
    waveforms, lengths = _waveforms(2, 8000, seed=9), torch.tensor([8000, 5000])
    for cfg, exact in ((LARGE_LIKE_TINY, True), (TINY_WAVLM_CFG, False)):
        model = random_wavlm(cfg, seed=2)
        with torch.no_grad():
            batched = model(waveforms, lengths)
            alone = model(waveforms[1:, :5000])
        frames = int(model.frame_lengths(lengths[1]))
        diff = max(float((b[1, :frames] - a[0]).abs().max()) for b, a in zip(batched, alone))
        assert (diff < 1e-5) if exact else (diff > 1e-3), (cfg.extractor_mode, diff)


def test_normalize_is_per_utterance_over_valid_samples():
    cfg = dataclasses.replace(LARGE_LIKE_TINY, normalize=True)
    model = random_wavlm(cfg, seed=4)
    plain = WavLM(dataclasses.replace(cfg, normalize=False)).eval()
    plain.load_state_dict(model.state_dict())
    waveforms = _waveforms(2, 6000, seed=3) * 7 + 2
    with torch.no_grad():
        batched = model(waveforms, torch.tensor([6000, 4000]))
        first = waveforms[1, :4000]
        by_hand = plain(((first - first.mean()) / torch.sqrt(first.var(unbiased=False) + 1e-5))[None])
    frames = int(model.frame_lengths(torch.tensor(4000)))
    assert max(float((b[1, :frames] - h[0]).abs().max()) for b, h in zip(batched, by_hand)) < 1e-5


def test_ungated_bias_equals_gate_fixed_at_one():
    """gru_rel_pos=False equals the gated model whose gate is 1 (grep_a = 0, sigmoid saturated)."""
    gated = random_wavlm(TINY_WAVLM_CFG, seed=8)
    ungated = WavLM(dataclasses.replace(TINY_WAVLM_CFG, gru_rel_pos=False)).eval()
    missing = ungated.load_state_dict(gated.state_dict(), strict=False)
    assert not missing.missing_keys and all("grep" in key for key in missing.unexpected_keys)
    with torch.no_grad():
        for layer in gated.encoder.layers:
            layer.self_attn.grep_a.zero_()
            layer.self_attn.grep_linear.weight.zero_()
            layer.self_attn.grep_linear.bias.fill_(25.0)  # gate_a = sigmoid(4 * 25) == 1.0 in float32
        waveforms = _waveforms(1, 6000, seed=1)
        assert max_abs_diff(gated(waveforms), ungated(waveforms)) < 1e-6


def test_train_mode_dropout_layerdrop_and_frozen_extractor():
    model = random_wavlm(TINY_WAVLM_CFG, seed=1).train()
    waveforms = _waveforms(2, 6000, seed=5)
    torch.manual_seed(0)
    first = model(waveforms)
    torch.manual_seed(1)
    second = model(waveforms)
    assert max_abs_diff(first, second) > 1e-3
    sum(state.sum() for state in first).backward()
    assert all(p.grad is None for p in model.feature_extractor.parameters())
    assert all(p.grad is not None for p in model.encoder.layers.parameters())
    model.eval()
    with torch.no_grad():
        assert max_abs_diff(model(waveforms), model(waveforms)) == 0.0
    always_dropped = WavLM(dataclasses.replace(TINY_WAVLM_CFG, encoder_layerdrop=1.0)).train()
    states = always_dropped(waveforms)
    assert all(torch.equal(state, states[0]) for state in states[1:])


def test_bad_inputs_are_explained():
    model = random_wavlm(TINY_WAVLM_CFG)
    with pytest.raises(ValueError, match="at least 400 samples"):
        model(torch.zeros(1, 399))
    with pytest.raises(ValueError, match=r"shape \(batch, samples\)"):
        model(torch.zeros(2, 1, 1000))
    with pytest.raises(ValueError, match=r"lengths must lie in \[400, 1000\]"):
        model(torch.zeros(2, 1000), torch.tensor([1000, 300]))


@pytest.mark.skipif(not os.path.isdir("/work/shared/data/fsdd"), reason="FSDD recordings not present")
def test_real_speech_runs_through_tiny_model():
    import glob

    import soundfile

    files = sorted(glob.glob("/work/shared/data/fsdd/**/*.wav", recursive=True))[:1]
    if not files:
        pytest.skip("no FSDD wav files")
    audio, _ = soundfile.read(files[0], dtype="float32")
    audio = torch.from_numpy(audio)[None, :]
    if audio.shape[1] < 400:
        pytest.skip("recording shorter than the receptive field")
    model = random_wavlm(TINY_WAVLM_CFG)
    reference = torchaudio_copy(model)
    with torch.no_grad():
        assert max_abs_diff(model(audio)[1:], reference.extract_features(audio)[0]) < TOLERANCE
