"""Pre-trained WavLM checkpoints: Microsoft ``.pt`` files and Hugging Face ``WavLMModel`` folders.

Both load into :class:`models.wavlm.WavLM` under Microsoft's key names. Tensors that are not part
of the encoder (pre-training heads such as ``label_embs_concat`` and ``final_proj.*``) are skipped
and listed in one log line. The loader also returns a copy of the loaded weights: the reference
that the L2-to-pre-trained regulariser pulls the fine-tuned encoder towards.

The same code reads the other backbones that :class:`models.wavlm.WavLM` runs (HuBERT and wav2vec 2.0,
models/fairseq_checkpoint.py): a :class:`BackboneFormat` names the authors' file reader and the Hugging
Face model type; the Hugging Face folders of all three share their layout and key names.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from models.wavlm import WavLM, WavLMConfig
from utils.atomic import atomic_torch_save
from utils.checkpoints import CheckpointError, load_file
from utils.errors import InputError

logger = logging.getLogger(__name__)

BASE_PLUS_CFG = WavLMConfig(
    extractor_mode="default", encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
    encoder_attention_heads=12, activation_fn="gelu", layer_norm_first=False,
    conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2", conv_bias=False,
    feature_grad_mult=0.1, normalize=False, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.05, dropout_input=0.1, conv_pos=128, conv_pos_groups=16,
    relative_position_embedding=True, num_buckets=320, max_distance=800, gru_rel_pos=True)
"""WavLM Base+ (94.7 M parameters), the backbone of the published system."""

LARGE_CFG = dataclasses.replace(
    BASE_PLUS_CFG, extractor_mode="layer_norm", encoder_layers=24, encoder_embed_dim=1024,
    encoder_ffn_embed_dim=4096, encoder_attention_heads=16, layer_norm_first=True, normalize=True,
    feature_grad_mult=1.0, encoder_layerdrop=0.1)
"""WavLM Large: pre-LN, layer norm in every convolution block, waveform normalisation."""

TINY_WAVLM_CFG = dataclasses.replace(
    BASE_PLUS_CFG, encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
    encoder_attention_heads=4, conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    conv_pos=16, conv_pos_groups=4)
"""Base+ with tiny sizes (2 layers, 64 dims): for tests and smoke runs."""

# Keys of Microsoft's cfg dict that only matter for pre-training (masking, targets): written into
# generated checkpoints so that they have the real file's shape, ignored when loading.
_PRETRAINING_CFG = {
    "dropout_features": 0.0, "mask_length": 10, "mask_prob": 0.65, "mask_selection": "static",
    "mask_other": 0, "no_mask_overlap": False, "mask_min_space": 1, "mask_channel_length": 10,
    "mask_channel_prob": 0.0, "mask_channel_selection": "static", "mask_channel_other": 0,
    "no_mask_channel_overlap": False, "mask_channel_min_space": 1, "label_rate": 50,
    "final_dim": 16, "logit_temp": 0.1,
}
_PRETRAINING_CLASSES = 10

# Encoder parameters a checkpoint may lack: the unused pre-training mask embedding
# (Hugging Face stores it only when masking was configured).
_OPTIONAL_KEYS = frozenset({"mask_emb"})

# Hugging Face's WavLMConfig defaults for the keys read below (config.json files may omit them).
_HF_DEFAULTS: Dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.0, "layerdrop": 0.1, "layer_norm_eps": 1e-5, "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "num_buckets": 320, "max_bucket_distance": 800,
    "do_stable_layer_norm": False, "add_adapter": False, "adapter_attn_dim": None, "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False,
}
# config.json values that the backbone requires (HuBERT's and wav2vec 2.0's options that WavLM lacks included).
_HF_REQUIRED: Dict[str, Any] = {
    "add_adapter": False, "adapter_attn_dim": None, "feat_extract_activation": "gelu", "layer_norm_eps": 1e-5,
    "feat_proj_layer_norm": True, "conv_pos_batch_norm": False,
}
_HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear",
                   "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate"}
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# (Hugging Face key pattern, Microsoft key template); {norm} is the conv block's norm slot.
_HF_KEY_MAP = [
    (r"masked_spec_embed", "mask_emb"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.\1.{norm}\2"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_g|parametrizations\.weight\.original0)", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.(?:weight_v|parametrizations\.weight\.original1)", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"encoder.layers.\1.self_attn.\2.\3"),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)",
     r"encoder.layers.\1.self_attn.grep_linear.\2"),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", r"encoder.layers.\1.self_attn.grep_a"),
    (r"encoder\.layers\.(\d+)\.attention\.rel_attn_embed\.weight",
     r"encoder.layers.\1.self_attn.relative_attention_bias.weight"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]


class CheckpointFormatError(InputError):
    """A checkpoint file or folder that cannot be read as a pre-trained backbone."""


FileReader = Callable[[str, bool], Tuple[WavLMConfig, Mapping[str, Any]]]
"""(path, trust_checkpoint) -> (encoder config, weights by Microsoft / fairseq key name) of an authors' file."""


@dataclass(frozen=True)
class BackboneFormat:
    """A family of pre-trained backbones that :class:`models.wavlm.WavLM` runs, and how its files are read.

    ``read_file`` reads the authors' own file format; ``model_type`` is the Hugging Face ``config.json``
    model type, also the prefix of its weight names; WavLM alone has the gated relative position bias.
    """

    name: str
    model_type: str
    huggingface_class: str
    relative_position: bool
    read_file: FileReader
    example_file: str


def read_pretrained(path: str, backbone: BackboneFormat,
                    trust_checkpoint: bool = False) -> Tuple[WavLMConfig, Mapping[str, Any]]:
    """The encoder config and the weights (Microsoft key names, not yet checked) of a pre-trained ``backbone``.

    ``path``: the authors' checkpoint (for WavLM Microsoft's ``{'cfg': dict, 'model': state_dict}``, e.g.
    ``WavLM-Base+.pt``), a Hugging Face folder of ``backbone.huggingface_class`` (``config.json`` with
    ``model.safetensors`` or ``pytorch_model.bin``), or that folder's ``config.json``.
    """
    folder = _huggingface_folder(path)
    if folder is not None:
        cfg = _read_huggingface_cfg(folder, backbone)
        return cfg, _huggingface_to_microsoft_keys(_read_huggingface_weights(folder, trust_checkpoint), cfg, backbone)
    return backbone.read_file(path, trust_checkpoint)


def load_pretrained(path: str, backbone: BackboneFormat,
                    trust_checkpoint: bool = False) -> Tuple[WavLM, Dict[str, Tensor]]:
    """Build the network of ``path`` (see :func:`read_pretrained`) and return it with a copy of the weights it
    loaded: float32 CPU tensors by Microsoft key name."""
    cfg, weights = read_pretrained(path, backbone, trust_checkpoint)
    model = WavLM(cfg)
    return model, copy_pretrained_weights(model, weights, path)


def read_backbone_config(path: str, backbone: BackboneFormat, trust_checkpoint: bool = False) -> WavLMConfig:
    """The encoder config of a pre-trained ``backbone`` (same ``path`` forms as :func:`read_pretrained`).

    Reads no weights: a Hugging Face folder's ``config.json``, or the authors' file memory-mapped so
    that only its configuration is read from disk.
    """
    folder = _huggingface_folder(path)
    return (_read_huggingface_cfg(folder, backbone) if folder is not None
            else backbone.read_file(path, trust_checkpoint)[0])


def load_pretrained_wavlm(path: str, trust_checkpoint: bool = False) -> Tuple[WavLM, Dict[str, Tensor]]:
    """:func:`load_pretrained` of a WavLM."""
    return load_pretrained(path, WAVLM, trust_checkpoint)


def _huggingface_folder(path: str) -> Optional[str]:
    """The Hugging Face folder ``path`` names (the folder or its ``config.json``), or None for a Microsoft file."""
    if os.path.isdir(path):
        return path
    return os.path.dirname(path) or "." if os.path.basename(path) == "config.json" else None


def save_random_wavlm_checkpoint(path: str, seed: int = 0, **cfg_overrides: Any) -> WavLMConfig:
    """Write a random-weights checkpoint in Microsoft's format; return its encoder config.

    The config is :data:`TINY_WAVLM_CFG` with ``cfg_overrides`` applied (WavLMConfig field names).
    Like a real file, the cfg dict carries pre-training keys and the state dict carries tensors
    that are not part of the encoder (``label_embs_concat``, ``final_proj.*``).
    """
    unknown = sorted(set(cfg_overrides) - {field.name for field in dataclasses.fields(WavLMConfig)})
    if unknown:
        raise TypeError(f"save_random_wavlm_checkpoint: unknown WavLM cfg keys {unknown}")
    cfg = dataclasses.replace(TINY_WAVLM_CFG, **cfg_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = {key: value.detach().clone() for key, value in WavLM(cfg).state_dict().items()}
        final_dim = _PRETRAINING_CFG["final_dim"]
        state["label_embs_concat"] = torch.randn(_PRETRAINING_CLASSES, final_dim)
        state["final_proj.weight"] = torch.randn(final_dim, cfg.encoder_embed_dim) * 0.02
        state["final_proj.bias"] = torch.zeros(final_dim)
    atomic_torch_save({"cfg": {**_PRETRAINING_CFG, **cfg.to_dict()}, "model": state}, path)
    return cfg


def _read_microsoft(path: str, trust_checkpoint: bool) -> Tuple[WavLMConfig, Mapping[str, Any]]:
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"pre-trained WavLM checkpoint not found: {path}")
    content = torch_load(path, trust_checkpoint)
    if not (isinstance(content, Mapping) and isinstance(content.get("cfg"), Mapping)
            and isinstance(content.get("model"), Mapping)):
        found = sorted(map(str, content))[:10] if isinstance(content, Mapping) else type(content).__name__
        raise CheckpointFormatError(
            f"{path}: not a WavLM checkpoint; expected a dict with 'cfg' (dict) and 'model' "
            f"(state dict) as in Microsoft's WavLM-Base+.pt, or a Hugging Face WavLMModel folder; "
            f"found {found}")
    try:
        cfg = WavLMConfig.from_dict(content["cfg"])
    except (TypeError, ValueError) as error:
        raise CheckpointFormatError(f"{path}: bad 'cfg': {error}") from None
    return cfg, content["model"]


WAVLM = BackboneFormat(name="WavLM", model_type="wavlm", huggingface_class="WavLMModel", relative_position=True,
                       read_file=_read_microsoft, example_file="WavLM-Base+.pt")


class _Unavailable:
    """Stands in, when a trusted file is unpickled in full, for a class whose module is not installed (fairseq's
    ``Dictionary`` in HuBERT checkpoints): the object keeps its attributes and nothing of it is used."""


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError:
            return type(name, (_Unavailable,), {"__module__": module})


_TOLERANT_PICKLE = types.ModuleType("tolerant_pickle")
_TOLERANT_PICKLE.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]
_TOLERANT_PICKLE.load = lambda file, **kwargs: _TolerantUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]


def torch_load(path: str, trust_checkpoint: bool) -> Any:
    """``torch.load`` with safe (weights-only) unpickling, or full unpickling when the user trusts the file.

    Microsoft's ``WavLM-Base+.pt`` (a dict of a plain ``cfg`` dict and a state dict) and Hugging Face's
    ``pytorch_model.bin`` (a state dict) load safely; a file that needs more (fairseq's checkpoints, with
    their argparse ``args`` or their task's dictionaries) could run code when unpickled, so it is refused
    unless ``trust_checkpoint``. Unpickled in full, objects of modules that are not installed (fairseq's)
    become inert stand-ins: fairseq is not needed. Memory-mapped where the format allows (zip archives):
    tensors are read from disk only when used.
    """
    if trust_checkpoint:
        logger.warning("%s: unpickled in full (--trust_checkpoint): only do this for files you trust", path)
    try:
        return load_file(path, "pre-trained checkpoint", weights_only=not trust_checkpoint, mmap=True,
                         refused_hint=". Microsoft's WavLM and Hugging Face's files load safely, fairseq's HuBERT and "
                                      "wav2vec 2.0 files do not; if you trust this file, pass --trust_checkpoint true",
                         pickle_module=_TOLERANT_PICKLE)
    except CheckpointError as error:
        raise CheckpointFormatError(str(error)) from None


def _read_huggingface_cfg(folder: str, backbone: BackboneFormat) -> WavLMConfig:
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointFormatError(f"{folder}: no config.json; expected a Hugging Face "
                                    f"{backbone.huggingface_class} folder")
    with open(config_path, encoding="utf-8") as handle:
        try:
            config = json.load(handle)
        except json.JSONDecodeError as error:
            raise CheckpointFormatError(f"{config_path}: invalid JSON ({error})") from None
    if config.get("model_type", backbone.model_type) != backbone.model_type:
        raise CheckpointFormatError(f"{config_path}: model_type is {config['model_type']!r}, expected "
                                    f"{backbone.model_type!r} for a {backbone.name} backbone")
    normalize = False
    preprocessor_path = os.path.join(folder, "preprocessor_config.json")
    if os.path.isfile(preprocessor_path):
        with open(preprocessor_path, encoding="utf-8") as handle:
            normalize = bool(json.load(handle).get("do_normalize", False))
    return _cfg_from_huggingface({**_HF_DEFAULTS, **config}, normalize, config_path, backbone.relative_position)


def _cfg_from_huggingface(config: Mapping[str, Any], normalize: bool, source: str,
                          relative_position: bool) -> WavLMConfig:
    def unsupported(key: str, expected: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"{source}: {key}={config[key]!r} is not supported; expected {expected}")

    for key, required in _HF_REQUIRED.items():
        if config[key] != required:
            raise unsupported(key, json.dumps(required))
    if config["feat_extract_norm"] not in ("group", "layer"):
        raise unsupported("feat_extract_norm", "'group' or 'layer'")
    if config["hidden_act"] not in _HF_ACTIVATIONS:
        raise unsupported("hidden_act", f"one of {sorted(_HF_ACTIVATIONS)}")
    conv = list(zip(config["conv_dim"], config["conv_kernel"], config["conv_stride"]))
    if not (len(conv) == len(config["conv_dim"]) == len(config["conv_kernel"]) == len(config["conv_stride"])):
        raise unsupported("conv_dim", "conv_dim, conv_kernel and conv_stride of equal length")
    try:
        return WavLMConfig(
            extractor_mode="default" if config["feat_extract_norm"] == "group" else "layer_norm",
            encoder_layers=config["num_hidden_layers"], encoder_embed_dim=config["hidden_size"],
            encoder_ffn_embed_dim=config["intermediate_size"],
            encoder_attention_heads=config["num_attention_heads"],
            activation_fn=_HF_ACTIVATIONS[config["hidden_act"]],
            layer_norm_first=config["do_stable_layer_norm"],
            conv_feature_layers="[" + ", ".join(f"({c}, {k}, {s})" for c, k, s in conv) + "]",
            conv_bias=config["conv_bias"], normalize=normalize, dropout=config["hidden_dropout"],
            attention_dropout=config["attention_dropout"], activation_dropout=config["activation_dropout"],
            encoder_layerdrop=config["layerdrop"], dropout_input=config["feat_proj_dropout"],
            conv_pos=config["num_conv_pos_embeddings"], conv_pos_groups=config["num_conv_pos_embedding_groups"],
            relative_position_embedding=relative_position, num_buckets=config["num_buckets"],
            max_distance=config["max_bucket_distance"], gru_rel_pos=relative_position)
    except (TypeError, ValueError) as error:
        raise CheckpointFormatError(f"{source}: {error}") from None


def _read_huggingface_weights(folder: str, trust_checkpoint: bool) -> Dict[str, Any]:
    safetensors_path, bin_path = (os.path.join(folder, name) for name in _HF_WEIGHT_FILES)
    if os.path.isfile(safetensors_path):
        from safetensors.torch import load_file

        return load_file(safetensors_path, device="cpu")
    if os.path.isfile(bin_path):
        return torch_load(bin_path, trust_checkpoint)
    raise CheckpointFormatError(f"{folder}: no weights; expected one of {list(_HF_WEIGHT_FILES)} "
                                f"(sharded checkpoints are not supported)")


def _huggingface_to_microsoft_keys(weights: Mapping[str, Any], cfg: WavLMConfig,
                                   backbone: BackboneFormat) -> Dict[str, Any]:
    """Rename Hugging Face tensors to Microsoft's keys; unknown keys keep their name (then skipped)."""
    norm_slot = "2.1." if cfg.extractor_mode == "layer_norm" else "2."
    prefix = backbone.model_type + "."
    renamed = {}
    for key, value in weights.items():
        bare = key[len(prefix):] if key.startswith(prefix) else key
        for pattern, template in _HF_KEY_MAP:
            match = re.fullmatch(pattern, bare)
            if match:
                renamed[match.expand(template.replace("{norm}", norm_slot))] = value
                break
        else:
            renamed[key] = value
    return renamed


def copy_pretrained_weights(model: WavLM, weights: Mapping[str, Any], source: str) -> Dict[str, Tensor]:
    """Copy ``weights`` into ``model``; every encoder tensor must be there with its shape. Returns copies of the
    loaded tensors (the L2 regulariser's reference), by Microsoft key name in the model's order."""
    expected = model.state_dict()
    missing = sorted(key for key in expected if key not in weights and key not in _OPTIONAL_KEYS)
    if missing:
        raise CheckpointFormatError(f"{source}: missing encoder tensors {missing} for the checkpoint's cfg")
    loaded = [key for key in expected if key in weights]
    for key in loaded:
        value = weights[key]
        if not isinstance(value, Tensor):
            raise CheckpointFormatError(f"{source}: {key!r} is a {type(value).__name__}, expected a tensor")
        if value.shape != expected[key].shape:
            raise CheckpointFormatError(f"{source}: tensor {key!r} has shape {tuple(value.shape)} but the "
                                        f"model built from the cfg expects {tuple(expected[key].shape)}")
    skipped = sorted(key for key in weights if key not in expected)
    if skipped:
        logger.info("%s: skipped %d tensors that are not part of the encoder: %s",
                    source, len(skipped), ", ".join(skipped))
    with torch.no_grad():
        for key in loaded:
            expected[key].copy_(weights[key])
    return {key: expected[key].detach().clone() for key in loaded}
