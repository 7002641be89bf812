"""Tiny random HuBERT and wav2vec 2.0 models written in their authors' and Hugging Face's file formats.

The weights come from a random ``transformers`` model. The fairseq state dict is made from it without
this project's code: torchaudio imports the ``transformers`` model, and torchaudio's own fairseq key map
(``_map_key``, which raises on a key that fairseq does not have) names each of its tensors.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
import transformers
from torch import Tensor, nn
from torchaudio.models.wav2vec2.utils import import_huggingface_model
from torchaudio.models.wav2vec2.utils.import_fairseq import _map_key

from models.wavlm import WavLM, WavLMConfig
from tests.helpers_models import randomize_parameters_

FAMILIES = ("hubert", "wav2vec2")
FORMATS = ("fairseq_cfg", "fairseq_args", "safetensors", "bin")
TINY_SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def random_huggingface_model(family: str, large: bool, seed: int = 0, **sizes: Any) -> nn.Module:
    """A random ``HubertModel`` / ``Wav2Vec2Model``: tiny unless ``sizes`` say otherwise; ``large``: the Large
    models' layout (layer norm in every convolution block, convolution bias, pre-LN transformer)."""
    config_class = transformers.HubertConfig if family == "hubert" else transformers.Wav2Vec2Config
    config = config_class(**{**TINY_SIZES, **sizes}, do_stable_layer_norm=large,
                          feat_extract_norm="layer" if large else "group", conv_bias=large)
    torch.manual_seed(seed)
    model = (transformers.HubertModel if family == "hubert" else transformers.Wav2Vec2Model)(config)
    randomize_parameters_(model, seed=seed + 1)
    return model.eval()


def torchaudio_model(hf_model: nn.Module) -> nn.Module:
    """torchaudio's copy of a ``transformers`` model (its importer, not this project's code)."""
    return import_huggingface_model(hf_model).eval()


def fairseq_settings(config: Any) -> Dict[str, Any]:
    """The fairseq model settings of a ``transformers`` config, with pre-training settings the reader ignores."""
    conv = list(zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    return {
        "extractor_mode": "layer_norm" if config.feat_extract_norm == "layer" else "default",
        "encoder_layers": config.num_hidden_layers, "encoder_embed_dim": config.hidden_size,
        "encoder_ffn_embed_dim": config.intermediate_size, "encoder_attention_heads": config.num_attention_heads,
        "activation_fn": "gelu", "layer_norm_first": config.do_stable_layer_norm, "conv_feature_layers": str(conv),
        "conv_bias": config.conv_bias, "conv_pos": config.num_conv_pos_embeddings,
        "conv_pos_groups": config.num_conv_pos_embedding_groups, "dropout": 0.1, "attention_dropout": 0.1,
        "activation_dropout": 0.0, "encoder_layerdrop": 0.05, "dropout_input": 0.1, "feature_grad_mult": 0.1,
        "layer_type": "transformer", "pos_conv_depth": 1, "mask_prob": 0.65, "final_dim": 16, "logit_temp": 0.1,
    }


def fairseq_state_dict(hf_model: nn.Module, family: str, seed: int = 0) -> Dict[str, Tensor]:
    """``hf_model``'s weights under fairseq's names, with the pre-training tensors fairseq's files also hold."""
    settings = fairseq_settings(hf_model.config)
    with torch.device("meta"):
        fairseq_keys = list(WavLM(WavLMConfig.from_dict(settings)).state_dict())
    imported = torchaudio_model(hf_model).state_dict()
    state, used = {"mask_emb": hf_model.masked_spec_embed.detach().clone()}, set()
    for key in fairseq_keys:
        name = _map_key(key)
        if name is None:
            continue
        head, _, last = name.rpartition(".")
        name = f"{head}.{_WEIGHT_NORM[last]}" if last in _WEIGHT_NORM else name
        state[key] = imported[name].detach().clone()
        used.add(name)
    assert used == set(imported), f"torchaudio tensors without a fairseq name: {sorted(set(imported) - used)}"
    generator = torch.Generator().manual_seed(seed)
    dim = hf_model.config.hidden_size
    if family == "hubert":
        extras = {"label_embs_concat": (504, 16), "final_proj.weight": (16, dim), "final_proj.bias": (16,)}
    else:
        extras = {"quantizer.vars": (1, 640, 128), "quantizer.weight_proj.weight": (640, 32),
                  "quantizer.weight_proj.bias": (640,), "project_q.weight": (16, 256), "project_q.bias": (16,),
                  "final_proj.weight": (16, dim), "final_proj.bias": (16,)}
    state.update({key: torch.randn(shape, generator=generator) for key, shape in extras.items()})
    return state


def _save_with_fairseq_dictionary(content: Dict[str, Any], path: Path) -> None:
    """``torch.save`` with a label dictionary pickled as fairseq's ``fairseq.data.dictionary.Dictionary`` (HuBERT's
    files hold them), a module that is not installed here."""
    modules = {name: types.ModuleType(name) for name in ("fairseq", "fairseq.data", "fairseq.data.dictionary")}
    dictionary_class = type("Dictionary", (), {"__module__": "fairseq.data.dictionary"})
    modules["fairseq.data.dictionary"].Dictionary = dictionary_class
    labels = dictionary_class()
    labels.symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(index) for index in range(500)]
    with pytest.MonkeyPatch.context() as patch:
        for name, module in modules.items():
            patch.setitem(sys.modules, name, module)
        torch.save({**content, "task_state": {"dictionaries": [labels]}}, path)


def write_fairseq(hf_model: nn.Module, family: str, path: Path, layout: str, normalize: bool) -> Path:
    """A fairseq checkpoint of ``hf_model``: ``layout`` ``cfg`` (hydra) or ``args`` (an argparse Namespace; settings
    at fairseq's defaults left out, as in older files). HuBERT's also pickle fairseq's label dictionaries."""
    settings = fairseq_settings(hf_model.config)
    content: Dict[str, Any] = {"model": fairseq_state_dict(hf_model, family), "optimizer_history": [
        {"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam", "num_updates": 400000}],
        "extra_state": {"epoch": 100, "val_loss": 3.2}, "last_optimizer_state": None}
    task = "hubert_pretraining" if family == "hubert" else "audio_pretraining"
    if layout == "cfg":
        content["cfg"] = {"_name": None, "common": {"fp16": True, "seed": 1337},
                          "task": {"_name": task, "normalize": normalize, "sample_rate": 16000},
                          "model": {"_name": family, **settings}}
    else:
        defaults = WavLMConfig().to_dict()
        kept = {key: value for key, value in settings.items() if defaults.get(key, object()) != value}
        content["args"] = argparse.Namespace(arch=family, task=task, normalize=normalize, lr=[0.0005], **kept)
    if family == "hubert":
        _save_with_fairseq_dictionary(content, path)
    else:
        torch.save(content, path)
    return path


def write_huggingface(hf_model: nn.Module, family: str, folder: Path, weights_format: str, normalize: bool) -> Path:
    """A Hugging Face folder of ``hf_model`` with ``preprocessor_config.json``.

    ``safetensors``: ``save_pretrained``. ``bin``: ``torch.save`` of the pre-training model's layout (names
    under ``<model_type>.``, pre-parametrisation ``weight_g``/``weight_v``, and pre-training tensors) as in
    the older hub folders.
    """
    if weights_format == "safetensors":
        hf_model.save_pretrained(folder)
    else:
        folder.mkdir()
        hf_model.config.to_json_file(folder / "config.json")
        state = {}
        for key, value in hf_model.state_dict().items():
            for new, old in _WEIGHT_NORM.items():
                key = key.replace(old, new)
            state[f"{family}.{key}"] = value
        state["project_q.weight"] = torch.zeros(16, 256)
        torch.save(state, folder / "pytorch_model.bin")
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": normalize, "sampling_rate": 16000}))
    return folder


def write_backbone(hf_model: nn.Module, family: str, directory: Path, file_format: str, normalize: bool) -> Path:
    """``hf_model`` in one of :data:`FORMATS`; the path ``--pretrained_model_path`` takes."""
    if file_format.startswith("fairseq_"):
        return write_fairseq(hf_model, family, directory / f"{family}.pt", file_format[len("fairseq_"):], normalize)
    return write_huggingface(hf_model, family, directory / f"hf_{family}_{file_format}", file_format, normalize)
