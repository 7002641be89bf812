"""Multi-crop views of one utterance for DINO: 2 global crops and ``local_crops`` shorter ones.

Each crop is cut at its own random start (``crop_audio``: wrap padding for short files, as the
training crops of the speaker network) and augmented on its own with MUSAN noise or a simulated
RIR (one :class:`AugmentWAV` per crop length), so two views of an utterance share the speaker and
little else. Labels in the train list are not read: DINO needs none.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dataio.audio import AudioReadError, crop_audio, crop_samples, read_audio
from dataio.augment import AugmentWAV
from dataio.lists import checked_train_list
from utils.errors import InputError

GLOBAL_CROPS = 2
"""Crops the teacher sees (DINO's two global views); the student sees them and the local ones."""


class MultiCropDataset(Dataset):
    """Item i: ``(global crops (2, Sg), local crops (local_crops, Sl))`` float32 of the list's file i.

    ``Sg`` and ``Sl`` are ``crop_samples(global_frames)`` and ``crop_samples(local_frames)``.
    """

    def __init__(self, train_list: str, train_path: str, augment: bool, musan_path: str, rir_path: str,
                 global_frames: int = 400, local_frames: int = 200, local_crops: int = 4,
                 sixth_augmentation: str = "faithful", **kwargs: Any) -> None:
        if global_frames < 1 or local_frames < 1 or local_crops < 0:
            raise InputError(f"global_frames and local_frames must be positive and local_crops non-negative, "
                             f"got {global_frames}, {local_frames}, {local_crops}")
        _, self.relative_paths, self.line_numbers, self.data_list = checked_train_list(train_list, train_path)
        self.train_list = train_list
        self.global_frames = global_frames
        self.local_frames = local_frames
        self.local_crops = local_crops
        self.global_augment: Optional[AugmentWAV] = None
        self.local_augment: Optional[AugmentWAV] = None
        if augment:
            self.global_augment = AugmentWAV(musan_path, rir_path, global_frames, sixth_augmentation)
            self.local_augment = self.global_augment.with_frames(local_frames)

    def __len__(self) -> int:
        return len(self.data_list)

    @staticmethod
    def _crops(audio: np.ndarray, frames: int, count: int, augment: Optional[AugmentWAV]) -> Tensor:
        """``count`` random crops of ``frames``, each with its own drawn augmentation: (count, samples) float32."""
        crops = []
        for _ in range(count):
            crop = crop_audio(audio, frames, evalmode=False)
            crops.append(crop if augment is None else AugmentWAV.apply(crop, augment.draw()))
        if not crops:
            return torch.zeros(0, crop_samples(frames))
        return torch.from_numpy(np.concatenate(crops)).float()

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        try:
            audio = read_audio(self.data_list[index])
        except AudioReadError as err:
            raise AudioReadError(f"{self.train_list} line {self.line_numbers[index]}: {err}") from err
        return (self._crops(audio, self.global_frames, GLOBAL_CROPS, self.global_augment),
                self._crops(audio, self.local_frames, self.local_crops, self.local_augment))
