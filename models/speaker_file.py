"""The speaker model file: a trained encoder with what using it needs, and nothing that only training needs.

A ``torch.save`` dict of plain values and tensors, read with weights-only unpickling:

- ``format`` (:data:`FORMAT`) and ``version``;
- ``wavlm_cfg``: the WavLM ``cfg`` dict (:class:`models.wavlm.WavLMConfig` keys), and ``encoder``: the
  MHFA shapes ``nOut``, ``head_nb``, ``compression_dim``;
- ``state_dict``: the encoder's weights, keys ``model.*`` (WavLM) and ``backend.*`` (MHFA): the
  checkpoint's ``__S__.*`` without the prefix. No AAM weight, no copy of the pre-trained weights, no
  optimiser state;
- ``sample_rate`` (16000) and ``protocol``: the evaluation settings (:class:`EvalProtocol`);
- ``eer_threshold``: the EER operating point of an evaluation, or None, and ``threshold_source``
  (which evaluation it came from); ``source``: the checkpoint the file was made from.

It needs no ``--pretrained_model_path``: the encoder is built from ``wavlm_cfg`` on the meta device and
takes the stored tensors as its parameters (:func:`models.spk_encoder.encoder_from_config`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import nn

from models.spk_encoder import SpeakerEncoder, encoder_from_config
from models.wavlm import WavLMConfig
from utils.atomic import atomic_torch_save
from utils.checkpoints import CheckpointError, check_finite, load_file, load_weights

FORMAT = "wavlm_ssl_sv speaker model"
VERSION = 1
ENCODER_PREFIX = "__S__"
"""The encoder's attribute in SpeakerNet: its training checkpoint keys start with ``__S__.``."""


@dataclass(frozen=True)
class EvalProtocol:
    """How a file is embedded and scored (docs/method.md §7): ``num_eval`` crops of ``eval_frames``
    frames and, when ``whole_file``, the whole file cut to ``max_eval_samples`` samples (0: uncut),
    the two scores averaged."""

    eval_frames: int
    num_eval: int
    max_eval_samples: int
    whole_file: bool = True

    def __str__(self) -> str:
        crops = f"{self.num_eval} crops of {self.eval_frames} frames" if self.eval_frames else "the whole file"
        if not self.whole_file:
            return crops
        cap = f"first {self.max_eval_samples} samples" if self.max_eval_samples else "uncut"
        return f"{crops} + the whole file ({cap})"


@dataclass
class SpeakerModelFile:
    """The content of a speaker model file, its encoder built and in evaluation mode."""

    encoder: SpeakerEncoder
    protocol: EvalProtocol
    sample_rate: int
    eer_threshold: Optional[float]
    threshold_source: Optional[str]
    source: str


def encoder_from_checkpoint(path: str, cfg: WavLMConfig, nOut: int, head_nb: int,
                            compression_dim: int) -> SpeakerEncoder:
    """The encoder of a training checkpoint (ours or the original's layout, ``module.`` prefix or not).

    Every ``__S__.*`` tensor must fit ``cfg`` and the MHFA shapes (the error names the tensor and both
    shapes); the AAM weight is ignored. No pre-trained weights are read.
    """
    encoder = encoder_from_config(cfg, nOut, head_nb, compression_dim)
    load_weights(nn.ModuleDict({ENCODER_PREFIX: encoder}), path, strict_loss=False, assign=True)
    return encoder.eval()


def save_speaker_model(path: str, encoder: SpeakerEncoder, protocol: EvalProtocol, sample_rate: int,
                       eer_threshold: Optional[float], threshold_source: Optional[str], source: str) -> None:
    """Write ``encoder`` and its settings as a speaker model file, atomically."""
    backend = encoder.backend
    atomic_torch_save({
        "format": FORMAT, "version": VERSION,
        "wavlm_cfg": encoder.model.cfg.to_dict(),
        "encoder": {"nOut": backend.pooling_fc.out_features, "head_nb": backend.att_head.out_features,
                    "compression_dim": backend.cmp_linear_k.out_features},
        "state_dict": {key: value.detach().cpu().contiguous() for key, value in encoder.state_dict().items()},
        "sample_rate": sample_rate, "protocol": dataclasses.asdict(protocol),
        "eer_threshold": eer_threshold, "threshold_source": threshold_source, "source": source,
    }, path)


def is_speaker_model(path: str) -> bool:
    """Whether ``path`` is a speaker model file (read memory-mapped: cheap even for a large checkpoint)."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format torch file, or unreadable: the checkpoint loader gives the error
        return False
    return isinstance(content, Mapping) and content.get("format") == FORMAT


def load_speaker_model(path: str) -> SpeakerModelFile:
    """Read a speaker model file; anything missing, of the wrong shape or not finite is an error naming it."""
    content: Any = load_file(path, "speaker model")
    if not (isinstance(content, Mapping) and content.get("format") == FORMAT):
        raise CheckpointError(f"{path!r} is not a speaker model file (scripts/export_model.py writes them)")
    if content.get("version") != VERSION:
        raise CheckpointError(f"speaker model {path!r} has version {content.get('version')!r}; this code reads "
                              f"version {VERSION}")
    try:
        encoder = encoder_from_config(WavLMConfig.from_dict(content["wavlm_cfg"]), **content["encoder"],
                                      state=content["state_dict"])
        model = SpeakerModelFile(encoder.eval(), EvalProtocol(**content["protocol"]), int(content["sample_rate"]),
                                 content["eer_threshold"], content["threshold_source"], content["source"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"speaker model {path!r} is damaged: {type(error).__name__}: {error}") from None
    check_finite(encoder.state_dict(), f"speaker model {path!r}")
    return model
