"""The datasets the scripts read audio through (docs/method.md §6).

:class:`train_dataset_loader` gives training crops (a clean and an augmented view) of a
``LABEL RELPATH`` list; :class:`AudioFiles` gives evaluation crops and whole files of a list of
paths; :class:`test_dataset_loader` is the original's name for the same reading over a trial
list's files. Names and signatures of the original's ``DatasetLoader.py`` are kept (docs/method.md §9).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dataio.audio import AudioReadError, crop_audio, loadWAV, pad_short_file, read_audio, warn_if_silent
from dataio.augment import AugmentWAV, augment_batch
from dataio.lists import checked_train_list


class train_dataset_loader(Dataset):
    """Training crops from a ``LABEL RELPATH`` list; an item is a list of indices of one label.

    Item: ``(clean (n, S) float32, augmented (n, S) float32, label, relative paths (n,))``. With
    ``augment_on_device`` the second element is instead the dict of :meth:`AugmentWAV.plan_tensors`,
    which :func:`prepare_batch` turns into the augmented crops on the training device.
    Labels are indices into the sorted label strings (so '10' comes before '2'), as in the original.
    """

    def __init__(
        self,
        train_list: str,
        augment: bool,
        musan_path: str,
        rir_path: str,
        max_frames: int,
        train_path: str,
        augment_on_device: bool = False,
        sixth_augmentation: str = "faithful",
        **kwargs: Any,
    ) -> None:
        labels, self.relative_paths, self.line_numbers, self.data_list = checked_train_list(train_list, train_path)
        self.train_list = train_list
        self.max_frames = max_frames
        self.augment = augment
        self.augment_on_device = augment_on_device
        self.label_names = sorted(set(labels))
        self.num_labels = len(self.label_names)
        label_index = {name: index for index, name in enumerate(self.label_names)}
        self.data_label = [label_index[name] for name in labels]
        self.augment_wav = AugmentWAV(musan_path, rir_path, max_frames, sixth_augmentation) if augment else None

    def _clean_crop(self, index: int) -> np.ndarray:
        try:
            return loadWAV(self.data_list[index], self.max_frames, evalmode=False)
        except AudioReadError as err:
            raise AudioReadError(f"{self.train_list} line {self.line_numbers[index]}: {err}") from err

    def __getitem__(self, indices: Union[int, Sequence[int]]) -> Tuple[Tensor, Any, int, Tuple[str, ...]]:
        indices = [int(indices)] if isinstance(indices, (int, np.integer)) else [int(i) for i in indices]
        labels = {self.data_label[i] for i in indices}
        if len(labels) != 1:
            raise ValueError(f"an item's indices must share one label, got labels {sorted(labels)} for {indices}")
        clean = [self._clean_crop(index) for index in indices]
        clean_tensor = torch.from_numpy(np.concatenate(clean)).float()
        if self.augment_wav is None:
            second: Any = clean_tensor.clone()
        else:
            plans = [self.augment_wav.draw() for _ in indices]
            if self.augment_on_device:
                second = self.augment_wav.plan_tensors(plans)
            else:
                augmented = [AugmentWAV.apply(crop, plan) for crop, plan in zip(clean, plans)]
                second = torch.from_numpy(np.concatenate(augmented)).float()
        return clean_tensor, second, labels.pop(), tuple(self.relative_paths[i] for i in indices)

    def __len__(self) -> int:
        return len(self.data_list)


def crop_major(tensor: Tensor, device: torch.device) -> Tensor:
    """(B, n, ...) -> (n*B, ...), row k*B + b holding crop k of item b, the original's order."""
    return tensor.transpose(0, 1).reshape(-1, *tensor.shape[2:]).to(device, non_blocking=True)


def prepare_batch(batch: Sequence[Any], device: torch.device) -> Tuple[Tensor, Tensor, Tensor, List[str]]:
    """A collated training batch -> (clean (N, S), augmented (N, S), labels (N,), relative paths (N,)) on ``device``.

    N = batch size × crops per item; crops are ordered crop-major like the original trainer's
    ``transpose(1, 0)``. On-device augmentation plans are applied here.
    """
    if len(batch) != 4:
        raise ValueError(f"prepare_batch expects (clean, augmented or plan, labels, paths), got {len(batch)} elements")
    clean, second, labels, paths = batch
    crops = clean.shape[1]
    clean_flat = crop_major(clean, device).float()
    if isinstance(second, dict):
        augmented = augment_batch(
            clean_flat, crop_major(second["reverb"], device), crop_major(second["rir"], device),
            crop_major(second["noise"], device),
        )
    else:
        augmented = crop_major(second, device).float()
    flat_labels = torch.as_tensor(labels, dtype=torch.long).repeat(crops).to(device, non_blocking=True)
    flat_paths = [path for crop_paths in paths for path in crop_paths]
    return clean_flat, augmented, flat_labels, flat_paths


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy per DataLoader worker, as the original does."""
    np.random.seed((int(np.random.get_state()[1][0]) + worker_id) % 2**32)


@dataclass(frozen=True)
class CropSpec:
    """``num_eval`` crops of ``eval_frames`` 10 ms frames per file (docs/method.md §6: linspace starts, wrap padding).

    ``eval_frames=0`` means one crop: the whole file, uncapped (the original's behaviour).
    """

    eval_frames: int
    num_eval: int

    @property
    def per_file(self) -> int:
        return 1 if self.eval_frames == 0 else self.num_eval


class AudioFiles(Dataset):
    """Item i: ``(i, crops (num_eval, S) or None, whole file (S_i,))`` as float32 tensors.

    The whole file is the file as read, wrap-padded when shorter than the model's 400-sample minimum
    (:func:`dataio.audio.pad_short_file`); with a :class:`CropSpec` (evaluation) it is cut to
    ``max_samples`` when that is positive, as the original's evaluation cuts it.
    """

    def __init__(self, paths: Sequence[str], crops: Optional[CropSpec] = None, max_samples: int = 0) -> None:
        self.paths = list(paths)
        self.crops = crops
        self.max_samples = max_samples

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[int, Optional[Tensor], Tensor]:
        return (index, *evaluation_views(read_audio(self.paths[index]), self.paths[index], self.crops,
                                         self.max_samples))


def evaluation_views(audio: np.ndarray, name: str, crops: Optional[CropSpec] = None,
                     max_samples: int = 0) -> Tuple[Optional[Tensor], Tensor]:
    """A 16 kHz signal's evaluation views, as :class:`AudioFiles` gives a file's: ``(crops or None, whole)``, float32.

    ``name`` (the file, or a description of the signal) is named in the warnings for a too short signal and for
    digital silence.
    """
    # The whole signal is in memory here anyway: one max(|x|) over it costs nothing beside the forward pass.
    warn_if_silent(audio, name)
    whole = torch.from_numpy(pad_short_file(audio, name))
    if crops is None:
        return None, whole
    cropped = crop_audio(audio, crops.eval_frames, evalmode=True, num_eval=crops.num_eval)
    if max_samples > 0:
        whole = whole[:max_samples]
    return torch.from_numpy(cropped).float(), whole


class test_dataset_loader(AudioFiles):
    """The original's evaluation dataset over a trial list's files: :class:`AudioFiles` with a :class:`CropSpec`.

    Item i: ``(num_eval crops (num_eval, S), whole file (1, S_i), name)``, float32, the original's layout.
    """

    def __init__(self, test_list: Sequence[str], test_path: str, eval_frames: int, num_eval: int,
                 **kwargs: Any) -> None:
        super().__init__([os.path.join(test_path, name) for name in test_list], CropSpec(eval_frames, num_eval))
        self.test_list = test_list

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor, str]:  # type: ignore[override]
        _, crops, whole = super().__getitem__(index)
        return crops, whole.unsqueeze(0), self.test_list[index]
