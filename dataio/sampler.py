"""The training sampler of the original: which files each process trains on in an epoch (docs/method.md §6)."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from utils import distributed as dist_utils
from utils.errors import InputError


def round_down(num: int, divisor: int) -> int:
    return num - (num % divisor)


class train_dataset_sampler(Sampler):
    """The original's epoch order: groups of ``nPerSpeaker`` indices of one label, no label twice in a batch.

    Per epoch, with a ``torch.Generator`` seeded ``seed + epoch``: permute the files, group them by
    label (at most ``max_seg_per_spk`` per label, rounded down to ``nPerSpeaker``), permute the groups,
    drop a group whose label is already in the batch being filled, cut to a multiple of
    ``batch_size * world_size`` and give process ``rank`` its contiguous block. World size and rank
    come from ``num_replicas`` / ``rank`` kwargs when given, else from the process group when
    ``distributed``.
    """

    def __init__(
        self,
        data_source: Any,
        nPerSpeaker: int,
        max_seg_per_spk: int,
        batch_size: int,
        distributed: bool,
        seed: int,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if nPerSpeaker < 1 or max_seg_per_spk < 1 or batch_size < 1:
            raise InputError(
                f"nPerSpeaker, max_seg_per_spk and batch_size must be positive, "
                f"got {nPerSpeaker}, {max_seg_per_spk}, {batch_size}"
            )
        self.data_label = np.asarray(data_source.data_label, dtype=np.int64)
        self.nPerSpeaker = nPerSpeaker
        self.max_seg_per_spk = max_seg_per_spk
        self.batch_size = batch_size
        self.seed = seed
        self.distributed = distributed
        if num_replicas is None:
            num_replicas = dist_utils.get_world_size() if distributed else 1
        self.num_replicas = num_replicas
        self.rank = rank if rank is not None else (dist_utils.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside world size {self.num_replicas}")
        self.epoch = 0
        self._cache: Optional[Tuple[int, List[List[int]]]] = None

    def _epoch_groups(self) -> np.ndarray:
        """All processes' groups for this epoch, ``(total, nPerSpeaker)``, before the cut."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.data_label), generator=generator).numpy()
        labels = self.data_label[order]
        by_label = np.argsort(labels, kind="stable")
        files, labels = order[by_label], labels[by_label]
        _, starts, counts = np.unique(labels, return_index=True, return_counts=True)
        kept = np.minimum(counts, self.max_seg_per_spk) // self.nPerSpeaker * self.nPerSpeaker
        rank_in_label = np.arange(len(files)) - np.repeat(starts, counts)
        keep = rank_in_label < np.repeat(kept, counts)
        groups = files[keep].reshape(-1, self.nPerSpeaker)
        group_labels = labels[keep][:: self.nPerSpeaker].tolist()
        mixed = torch.randperm(len(group_labels), generator=generator).tolist()
        chosen: List[int] = []
        in_batch: set = set()
        for group in mixed:
            if len(chosen) % self.batch_size == 0:
                in_batch.clear()
            if group_labels[group] not in in_batch:
                in_batch.add(group_labels[group])
                chosen.append(group)
        return groups[chosen]

    def _indices(self) -> List[List[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            groups = self._epoch_groups()
            world = self.num_replicas
            total = round_down(len(groups), self.batch_size * world)
            start = int(self.rank / world * total)
            end = int((self.rank + 1) / world * total)
            self._cache = (self.epoch, groups[start:end].tolist())
        return self._cache[1]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
