"""A speaker model file in use: embeddings and verification scores with the evaluator's protocol.

:class:`SpeakerModel` loads a file written by ``scripts/export_model.py`` (models/speaker_file.py) and
embeds audio exactly as ``trainSpeakerNet_Eval.py --eval`` does (docs/method.md §7): in evaluation
mode, ``num_eval`` crops and the whole file, batched by :func:`scoring.embedding.embed_files`. A file's
embedding here is its *scoring vector* (:func:`scoring.scoring.scoring_vectors`), so the dot product of
two of them is the trial score the evaluator reports.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dataio.datasets import CropSpec, evaluation_views
from dataio.trials import TrialList
from models.speaker_file import EvalProtocol, SpeakerModelFile, load_speaker_model
from scoring.embedding import BatchedEncoder, embed_files
from scoring.scoring import pair_scores, scoring_vectors, trial_indices
from utils.errors import InputError

Audio = Union[str, os.PathLike, np.ndarray, Tensor]
"""A file path, or a 1-D waveform at 16 kHz."""


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
        """Read a speaker model file (weights-only unpickling); no pre-trained WavLM is needed."""
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
