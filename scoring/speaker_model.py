"""The speaker model: a trained encoder with what using it needs, as a file and in use.

**The file** (written by ``scripts/export_model.py``) is a ``torch.save`` dict of plain values and tensors,
read with weights-only unpickling:

- ``format`` (:data:`FORMAT`) and ``version`` (:data:`VERSION`);
- ``encoder``: the encoder's name (models/encoder.py's registry, or a module path) and
  ``encoder_config``: what rebuilds it (``SpeakerEncoder.config()``); for WavLM + MHFA the WavLM ``cfg``
  dict and the MHFA shapes;
- ``state_dict``: the encoder's weights (a training checkpoint's ``__S__.*`` without the prefix): no loss
  weight, no copy of the pre-trained weights, no optimiser state;
- ``sample_rate`` (16000) and ``protocol``: the evaluation settings (:class:`EvalProtocol`);
- ``eer_threshold``: the EER operating point of an evaluation, or None, and ``threshold_source``
  (which evaluation it came from); ``source``: the checkpoint the file was made from.

Version 1 files (WavLM + MHFA only: ``wavlm_cfg`` and the MHFA shapes under ``encoder``) still load. The
encoder is rebuilt from its config without any pre-trained file (``SpeakerEncoder.from_config``).

**In use**, :class:`SpeakerModel` embeds audio exactly as ``trainSpeakerNet_Eval.py --eval`` does
(docs/method.md §7): in evaluation mode, ``num_eval`` crops and the whole file, batched by
:func:`scoring.embedding.embed_files`. A file's embedding here is its *scoring vector*
(:func:`scoring.scoring.scoring_vectors`), so the dot product of two of them is the trial score the
evaluator reports.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dataio.datasets import CropSpec, evaluation_views
from dataio.trials import TrialList
from models.encoder import SpeakerEncoder, encoder_class, encoder_name
from scoring.embedding import BatchedEncoder, embed_files
from scoring.scoring import pair_scores, scoring_vectors, trial_indices
from utils.atomic import atomic_torch_save
from utils.checkpoints import CheckpointError, check_finite, load_file, load_weights
from utils.errors import InputError

FORMAT = "wavlm_ssl_sv speaker model"
VERSION = 2
ENCODER_PREFIX = "__S__"
"""The encoder's attribute in SpeakerNet: its training checkpoint keys start with ``__S__.``."""

Audio = Union[str, os.PathLike, np.ndarray, Tensor]
"""A file path, or a 1-D waveform at 16 kHz."""


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


def encoder_from_checkpoint(path: str, options: argparse.Namespace) -> SpeakerEncoder:
    """The encoder of a training checkpoint (ours or the original's layout, ``module.`` prefix or not), in
    evaluation mode, built from the options' ``model`` and shapes.

    Every ``__S__.*`` tensor must fit (the error names the tensor and both shapes); the loss weight is
    ignored. No pre-trained weights are read (of a pre-trained WavLM, only its configuration).
    """
    cls = encoder_class(options.model)
    encoder = cls.from_config(cls.config_from_options(**vars(options)))
    load_weights(nn.ModuleDict({ENCODER_PREFIX: encoder}), path, strict_loss=False, assign=True)
    return encoder.eval()


def save_speaker_model(path: str, encoder: SpeakerEncoder, protocol: EvalProtocol, sample_rate: int,
                       eer_threshold: Optional[float], threshold_source: Optional[str], source: str) -> None:
    """Write ``encoder`` and its settings as a speaker model file, atomically."""
    atomic_torch_save({
        "format": FORMAT, "version": VERSION, "encoder": encoder_name(encoder), "encoder_config": encoder.config(),
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


def _encoder_of(content: Mapping[str, Any]) -> SpeakerEncoder:
    if content["version"] == 1:  # WavLM + MHFA: cfg and head shapes in two entries
        return encoder_class("wavlm_mhfa").from_config({"wavlm_cfg": content["wavlm_cfg"], **content["encoder"]},
                                                       content["state_dict"])
    return encoder_class(content["encoder"]).from_config(content["encoder_config"], content["state_dict"])


def load_speaker_model(path: str) -> SpeakerModelFile:
    """Read a speaker model file; anything missing, of the wrong shape or not finite is an error naming it."""
    content: Any = load_file(path, "speaker model")
    if not (isinstance(content, Mapping) and content.get("format") == FORMAT):
        raise CheckpointError(f"{path!r} is not a speaker model file (scripts/export_model.py writes them)")
    if content.get("version") not in (1, VERSION):
        raise CheckpointError(f"speaker model {path!r} has version {content.get('version')!r}; this code reads "
                              f"versions 1 and {VERSION}")
    try:
        encoder = _encoder_of(content)
        model = SpeakerModelFile(encoder.eval(), EvalProtocol(**content["protocol"]), int(content["sample_rate"]),
                                 content["eer_threshold"], content["threshold_source"], content["source"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"speaker model {path!r} is damaged: {type(error).__name__}: {error}") from None
    check_finite(encoder.state_dict(), f"speaker model {path!r}")
    return model


class SpeakerModel:
    """A speaker model file's encoder (evaluation mode, on ``device``), protocol and optional EER threshold."""

    def __init__(self, content: SpeakerModelFile, device: Union[str, torch.device] = "cpu") -> None:
        self.device = torch.device(device)
        self.encoder = content.encoder.to(self.device)
        self.protocol: EvalProtocol = content.protocol
        self.sample_rate = content.sample_rate
        self.threshold: Optional[float] = content.eer_threshold
        self.threshold_source = content.threshold_source

    @classmethod
    def load(cls, path: str, device: Union[str, torch.device] = "cpu") -> "SpeakerModel":
        """Read a speaker model file (weights-only unpickling); no pre-trained model is needed."""
        return cls(load_speaker_model(path), device)

    @property
    def crops(self) -> CropSpec:
        return CropSpec(self.protocol.eval_frames, self.protocol.num_eval)

    def vectors(self, crops: Tensor, whole: Tensor) -> Tensor:
        """Scoring vectors (F, 2D) from crop (F, n, D) and whole-file (F, D) embeddings; (F, D) of the crops
        alone when the protocol leaves the whole file out. Float64."""
        if self.protocol.whole_file:
            return scoring_vectors(crops, whole)
        return F.normalize(crops.double(), dim=2).mean(dim=1)

    def embed_files(self, paths: Sequence[str], batch_size: int = 16, num_workers: int = 0,
                    desc: str = "Embedding") -> Tensor:
        """Scoring vectors of the files at ``paths``, row i for ``paths[i]``, batched as the evaluator batches."""
        embeddings = embed_files(self.encoder, paths, self.device, batch_size, crops=self.crops,
                                 max_samples=self.protocol.max_eval_samples, num_workers=num_workers, desc=desc)
        return self.vectors(embeddings.crops, embeddings.whole)

    def embed(self, audio: Audio) -> Tensor:
        """The scoring vector of one file or one 16 kHz waveform."""
        if isinstance(audio, (str, os.PathLike)):
            return self.embed_files([os.fspath(audio)], batch_size=1)[0]
        signal = np.asarray(audio.detach().cpu() if isinstance(audio, Tensor) else audio, dtype=np.float32)
        if signal.ndim != 1 or signal.size == 0:
            raise InputError(f"a waveform to embed must be a non-empty 1-D array of 16 kHz samples, "
                             f"got shape {signal.shape}")
        crops, whole = evaluation_views(signal, "the waveform", self.crops, self.protocol.max_eval_samples)
        runner = BatchedEncoder(self.encoder, self.device)
        return self.vectors(runner.embed(list(crops))[None], runner.embed([whole]))[0]

    def score(self, a: Audio, b: Audio) -> float:
        """The verification score of two files or waveforms (the evaluator's fused score)."""
        return float(self.embed(a) @ self.embed(b))

    def score_trials(self, trials: TrialList, root: str, batch_size: int = 16, num_workers: int = 0) -> np.ndarray:
        """Scores of a trial list whose paths are relative to ``root``, in trial order."""
        files = trials.files()
        vectors = self.embed_files([os.path.join(root, name) for name in files], batch_size, num_workers,
                                   desc="Embedding the trial list's files")
        return pair_scores(vectors, *trial_indices(trials, files))

    def accepts(self, score: float) -> Optional[bool]:
        """Same speaker (score at least the EER threshold), different, or None without a threshold."""
        return None if self.threshold is None else score >= self.threshold
