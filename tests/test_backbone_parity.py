"""HuBERT and wav2vec 2.0 backbones: every hidden state equals transformers' and torchaudio's, from every file format.

Random ``transformers`` models (tiny, Base and Large layouts) are written as fairseq checkpoints (hydra
``cfg`` and older ``args``) and Hugging Face folders (safetensors, and the older ``pytorch_model.bin``),
read back by this project's loader, and run next to ``transformers`` (every hidden state, unpadded and
padded batches) and torchaudio (every layer output). Run with ``-s`` to see the largest relative
differences (max |difference| / max |reference| over all hidden states).
"""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from models.fairseq_checkpoint import HUBERT, WAV2VEC2
from models.hubert_mhfa import HuBERTMHFA
from models.wav2vec2_mhfa import Wav2Vec2MHFA
from models.wavlm import WavLM, WavLMConfig
from models.wavlm_checkpoint import CheckpointFormatError, load_pretrained, read_backbone_config, torch_load
from tests.helpers_backbones import (
    FAMILIES,
    FORMATS,
    random_huggingface_model,
    torchaudio_model,
    write_backbone,
    write_fairseq,
)

TOLERANCE = 1e-5  # relative
BACKBONES = {"hubert": HUBERT, "wav2vec2": WAV2VEC2}
ENCODERS = {"hubert": HuBERTMHFA, "wav2vec2": Wav2Vec2MHFA}
TRUSTED = {"fairseq_cfg", "fairseq_args"}  # fairseq's files need full unpickling (a Namespace, label dictionaries)
BASE = WavLMConfig(feature_grad_mult=0.1, encoder_layerdrop=0.05, dropout_input=0.1)
LARGE = dataclasses.replace(BASE, extractor_mode="layer_norm", encoder_layers=24, encoder_embed_dim=1024,
                            encoder_ffn_embed_dim=4096, encoder_attention_heads=16, layer_norm_first=True,
                            normalize=True, feature_grad_mult=1.0)


def _waveforms(batch: int, samples: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _normalized(waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row zero-mean, unit-variance over its valid samples (layer norm, eps 1e-5), zero after them."""
    rows = [F.layer_norm(row[:n], (int(n),)) for row, n in zip(waveforms, lengths)]
    return torch.stack([F.pad(row, (0, waveforms.shape[1] - row.shape[0])) for row in rows])


def _relative(ours, theirs, frames=None) -> float:
    """max |ours - theirs| / max |theirs| over the states (and, given ``frames``, each row's valid frames)."""
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if frames is None:
            worst = max(worst, float((a - b).abs().max() / b.abs().max()))
        else:
            for row, n in enumerate(frames):
                worst = max(worst, float((a[row, :n] - b[row, :n]).abs().max() / b[row, :n].abs().max()))
    return worst


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("large", [False, True], ids=["base", "large"])
@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_transformers_and_torchaudio(tmp_path, family, large, file_format):
    hf_model = random_huggingface_model(family, large, seed=3)
    path = write_backbone(hf_model, family, tmp_path, file_format, normalize=large)
    model, reference = load_pretrained(str(path), BACKBONES[family], trust_checkpoint=file_format in TRUSTED)
    model.eval()
    cfg = model.cfg
    assert not cfg.relative_position_embedding and cfg.normalize is large and cfg.layer_norm_first is large
    assert set(reference) == set(model.state_dict())
    ta_model = torchaudio_model(hf_model)
    waveforms, lengths = _waveforms(2, 8000, seed=7), torch.tensor([8000, 5321])
    padded = waveforms * (torch.arange(8000)[None, :] < lengths[:, None])
    # transformers and torchaudio take the waveform as their feature extractor leaves it
    inputs = _normalized(waveforms, torch.tensor([8000, 8000])) if large else waveforms
    padded_inputs = _normalized(padded, lengths) if large else padded
    attention_mask = (torch.arange(8000)[None, :] < lengths[:, None]).long()
    frames = model.frame_lengths(lengths).tolist()
    with torch.no_grad():
        ours, ours_padded = model(waveforms), model(padded, lengths)
        hf = hf_model(inputs, output_hidden_states=True).hidden_states
        hf_padded = hf_model(padded_inputs, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        ta = ta_model.extract_features(inputs)[0]
        ta_padded = ta_model.extract_features(padded_inputs, lengths)[0]
    figures = {"transformers": _relative(ours, hf), "transformers padded": _relative(ours_padded, hf_padded, frames),
               "torchaudio": _relative(ours[1:], ta),
               "torchaudio padded": _relative(ours_padded[1:], ta_padded, frames)}
    print(f"\n[parity] {family} {'large' if large else 'base'} {file_format}: "
          + "; ".join(f"{name} {value:.1e}" for name, value in figures.items())
          + f" (relative, {len(ours)} hidden states)")
    assert len(ours) == len(hf) == cfg.encoder_layers + 1
    assert max(figures.values()) < TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_row_equals_row_alone_with_layer_norm_extractor(tmp_path, family):
    """Large layout: padding is exact end to end (encoder included), so the evaluator may batch files of any
    length; the Base layout's group norm is not (models/wavlm.py), and the encoder says so."""
    for large in (True, False):
        path = write_backbone(random_huggingface_model(family, large, seed=4), family, tmp_path / str(large),
                              "safetensors", normalize=large)
        cfg = read_backbone_config(str(path), BACKBONES[family])
        encoder = ENCODERS[family](cfg.to_dict(), nOut=8, head_nb=2, compression_dim=4).eval()
        waveforms = _waveforms(2, 8000, seed=9)
        with torch.no_grad():
            batched = encoder(waveforms, torch.tensor([8000, 5000]))
            alone = encoder(waveforms[1:, :5000])
        diff = float((batched[1] - alone[0]).abs().max() / alone.abs().max())
        assert encoder.padding_is_exact is large
        assert (diff < 1e-5) if large else (diff > 1e-4), (large, diff)


@pytest.mark.parametrize("family,builder", [("hubert", "hubert_base"), ("hubert", "hubert_large"),
                                            ("wav2vec2", "wav2vec2_base"), ("wav2vec2", "wav2vec2_large_lv60k")])
def test_full_sizes_have_torchaudios_parameter_count(family, builder):
    """HuBERT Base / Large and wav2vec 2.0 Base / Large (LV-60) at full size: torchaudio's count plus ``mask_emb``."""
    cfg = LARGE if "large" in builder else BASE
    if builder == "wav2vec2_large_lv60k":
        cfg = dataclasses.replace(cfg, conv_bias=True)
    with torch.device("meta"):
        ours, theirs = WavLM(cfg), getattr(torchaudio.models, builder)()
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) + cfg.encoder_embed_dim
    print(f"\n[parameters] {builder}: {count:,} ({cfg.encoder_layers} layers)")


def test_fairseq_files_need_trust_and_pretraining_tensors_are_skipped(tmp_path, caplog):
    hf_model = random_huggingface_model("wav2vec2", large=False)
    args_file = write_fairseq(hf_model, "wav2vec2", tmp_path / "wav2vec_small.pt", "args", normalize=False)
    with pytest.raises(CheckpointFormatError, match="safe loading refuses it .* pass --trust_checkpoint true"):
        load_pretrained(str(args_file), WAV2VEC2)
    with caplog.at_level(logging.INFO, logger="models.wavlm_checkpoint"):
        model, _ = load_pretrained(str(args_file), WAV2VEC2, trust_checkpoint=True)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and all(k in skipped[0] for k in ("quantizer.vars", "project_q.weight", "final_proj.bias"))
    assert model.cfg.dropout_input == 0.1 and model.cfg.extractor_mode == "default"  # from args / fairseq's defaults
    hubert_file = write_fairseq(random_huggingface_model("hubert", False), "hubert", tmp_path / "h.pt", "cfg", False)
    with pytest.raises(CheckpointFormatError, match="safe loading refuses it"):  # its pickled label dictionaries
        load_pretrained(str(hubert_file), HUBERT)


def test_wrong_family_and_unsupported_settings_are_explained(tmp_path):
    hf_model = random_huggingface_model("hubert", large=False)
    hubert_file = write_fairseq(hf_model, "hubert", tmp_path / "hubert.pt", "cfg", normalize=False)
    with pytest.raises(CheckpointFormatError, match="holds a fairseq 'hubert' model; expected the pre-trained "
                                                    r"wav2vec 2.0 model \('wav2vec2'\)"):
        load_pretrained(str(hubert_file), WAV2VEC2, trust_checkpoint=True)
    wav2vec2_file = write_fairseq(random_huggingface_model("wav2vec2", False), "wav2vec2", tmp_path / "w.pt", "cfg",
                                  normalize=False)
    content = torch_load(str(wav2vec2_file), trust_checkpoint=True)
    content["cfg"]["model"]["pos_conv_depth"] = 5
    torch.save(content, tmp_path / "deeper.pt")
    with pytest.raises(CheckpointFormatError, match="pos_conv_depth=5 is not supported; expected 1"):
        load_pretrained(str(tmp_path / "deeper.pt"), WAV2VEC2, trust_checkpoint=True)
    torch.save({"cfg": {"encoder_layers": 2}, "model": {}}, tmp_path / "wavlm_like.pt")
    with pytest.raises(CheckpointFormatError, match="not a fairseq checkpoint; expected a dict with 'model'"):
        load_pretrained(str(tmp_path / "wavlm_like.pt"), HUBERT)
    folder = write_backbone(hf_model, "hubert", tmp_path, "safetensors", normalize=False)
    with pytest.raises(CheckpointFormatError, match="model_type is 'hubert', expected 'wav2vec2' for a wav2vec 2.0"):
        load_pretrained(str(folder), WAV2VEC2)
    hf_model.config.conv_pos_batch_norm = True
    hf_model.config.to_json_file(folder / "config.json")
    with pytest.raises(CheckpointFormatError, match="conv_pos_batch_norm=True is not supported; expected false"):
        load_pretrained(str(folder), HUBERT)
