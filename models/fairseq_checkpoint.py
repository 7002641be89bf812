"""Pre-trained HuBERT and wav2vec 2.0: fairseq checkpoints as their authors publish them, and Hugging Face folders.

Both are :class:`models.wavlm.WavLM` without the relative position bias (``relative_position_embedding``
and ``gru_rel_pos`` off): WavLM was built on fairseq's wav2vec 2.0 code, so the layers and their
parameter names are the same, and a fairseq state dict loads without renaming. Pre-training tensors
(HuBERT's ``label_embs_concat`` and ``final_proj.*``; wav2vec 2.0's ``quantizer.*``, ``project_q.*`` and
``final_proj.*``) are skipped. Hugging Face ``HubertModel`` / ``Wav2Vec2Model`` folders are read by the
code that reads WavLM's (models/wavlm_checkpoint.py).

A fairseq file is a dict holding ``model`` (the state dict) and the settings, in one of two layouts:

- ``cfg`` (newer, hydra): a dict whose ``model`` dict holds the model's settings (``_name`` is
  ``hubert`` or ``wav2vec2``) and whose ``task`` dict holds ``normalize`` (waveform normalisation);
- ``args`` (older, e.g. ``wav2vec_small.pt`` and ``hubert_base_ls960.pt``): one ``argparse.Namespace`` of
  every setting (``arch`` names the model); settings it lacks take fairseq's defaults, which are
  :class:`models.wavlm.WavLMConfig`'s.

Safe (weights-only) unpickling refuses a ``Namespace``, and HuBERT's files also pickle fairseq's label
dictionaries: such files load only with ``--trust_checkpoint true`` (models/wavlm_checkpoint.py,
:func:`torch_load`; fairseq need not be installed). Hugging Face folders load safely.
"""
from __future__ import annotations

import argparse
import functools
import os
from typing import Any, Mapping, Tuple

from models.wavlm import WavLMConfig
from models.wavlm_checkpoint import BackboneFormat, CheckpointFormatError, torch_load

# fairseq settings that change the network but that this backbone does not implement, with the value it needs.
_REQUIRED_SETTINGS = {"layer_type": "transformer", "pos_conv_depth": 1}


def _fairseq_settings(content: Any, path: str) -> Tuple[Mapping[str, Any], Any]:
    """The model's settings and the ``normalize`` flag of a fairseq checkpoint's ``cfg`` or ``args``."""
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        cfg, args = content.get("cfg"), content.get("args")
        if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
            task = cfg.get("task") if isinstance(cfg.get("task"), Mapping) else {}
            return cfg["model"], task.get("normalize", False)
        if isinstance(args, argparse.Namespace):
            return vars(args), getattr(args, "normalize", False)
    found = sorted(map(str, content))[:10] if isinstance(content, Mapping) else type(content).__name__
    raise CheckpointFormatError(
        f"{path}: not a fairseq checkpoint; expected a dict with 'model' (state dict) and 'cfg' (a dict holding "
        f"'model' and 'task') or 'args' (an argparse Namespace), as in hubert_base_ls960.pt; found {found}")


def _read_fairseq(path: str, trust_checkpoint: bool, arch: str, name: str) -> Tuple[WavLMConfig, Mapping[str, Any]]:
    """The encoder config and state dict of fairseq's pre-trained ``arch`` model (``hubert``, ``wav2vec2``)."""
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"pre-trained {name} checkpoint not found: {path}")
    content = torch_load(path, trust_checkpoint)
    settings, normalize = _fairseq_settings(content, path)
    found = settings.get("_name", settings.get("arch"))
    if found != arch:
        raise CheckpointFormatError(f"{path}: holds a fairseq {found!r} model; expected the pre-trained {name} "
                                    f"model ({arch!r}), not a fine-tuned one")
    for key, required in _REQUIRED_SETTINGS.items():
        if settings.get(key, required) != required:
            raise CheckpointFormatError(f"{path}: {key}={settings[key]!r} is not supported; expected {required!r}")
    try:
        cfg = WavLMConfig.from_dict({**settings, "normalize": normalize, "relative_position_embedding": False,
                                     "gru_rel_pos": False})
    except (TypeError, ValueError) as error:
        raise CheckpointFormatError(f"{path}: bad settings: {error}") from None
    return cfg, content["model"]


HUBERT = BackboneFormat(name="HuBERT", model_type="hubert", huggingface_class="HubertModel", relative_position=False,
                        read_file=functools.partial(_read_fairseq, arch="hubert", name="HuBERT"),
                        example_file="hubert_base_ls960.pt")
WAV2VEC2 = BackboneFormat(name="wav2vec 2.0", model_type="wav2vec2", huggingface_class="Wav2Vec2Model",
                          relative_position=False,
                          read_file=functools.partial(_read_fairseq, arch="wav2vec2", name="wav2vec 2.0"),
                          example_file="wav2vec_small.pt")
