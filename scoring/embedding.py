"""Batched speaker embedding of audio files, each file's embedding equal to what it gets alone.

Why batching needs care: WavLM Base / Base+ (``extractor_mode='default'``) normalise the first
convolution's output with a group norm over *all time steps* of each channel, so appending zeros to
a waveform changes every one of its frames. Hence the rule used here:

- waveforms of exactly equal length are stacked and run in one forward (no padding, so the batch
  is the same computation row by row); the ``num_eval`` crops of every file all have the crop
  length, so all crops of a batch of files go through together;
- waveforms of different lengths are padded into one forward, with their ``lengths``, only when
  the encoder says it is exact under padding (``SpeakerEncoder.padding_is_exact``: for WavLM + MHFA,
  ``extractor_mode='layer_norm'``, whose per-frame norms and unpadded convolutions leave valid
  frames untouched, while the encoder zeroes padded frames before the positional convolution and
  masks them out of attention and pooling); otherwise each such waveform runs alone.

Files are visited in order of their length (read from the file headers), so equal lengths meet in
one batch and padded batches waste little.
"""
from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dataio.audio import header_length
from dataio.datasets import AudioFiles, CropSpec
from models.encoder import SpeakerEncoder
from utils.distributed import gather_objects, get_rank, get_world_size
from utils.errors import InputError
from utils.progress import progress_bar


def padding_is_exact(encoder: nn.Module) -> bool:
    """True when zero-padding a waveform (with its length given) cannot change its embedding."""
    return isinstance(encoder, SpeakerEncoder) and bool(encoder.padding_is_exact)


def plan_batches(lengths: Sequence[int], batch_size: int) -> List[List[int]]:
    """Indices in ascending length order (ties in input order), cut into batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable").tolist()
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def equal_length_groups(lengths: Sequence[int]) -> List[List[int]]:
    """Positions grouped by exact length, groups in order of first appearance."""
    groups: Dict[int, List[int]] = defaultdict(list)
    for position, length in enumerate(lengths):
        groups[int(length)].append(position)
    return list(groups.values())


class BatchedEncoder:
    """Runs a speaker encoder ``encoder(waveforms (B, S), lengths=None) -> (B, D)`` on lists of waveforms."""

    def __init__(self, encoder: nn.Module, device: torch.device) -> None:
        self.encoder = encoder
        self.device = device
        self.padded = padding_is_exact(encoder)
        self.forwards = 0

    @torch.no_grad()
    def _forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        self.forwards += 1
        out = self.encoder(waveforms.to(self.device, non_blocking=True),
                           None if lengths is None else lengths.to(self.device))
        return out.float().cpu()

    def embed(self, waveforms: Sequence[Tensor]) -> Tensor:
        """Embeddings (N, D) of 1-D waveforms of any lengths, row i for waveform i."""
        if not waveforms:
            raise ValueError("embed needs at least one waveform")
        lengths = [int(w.shape[0]) for w in waveforms]
        if self.padded and len(set(lengths)) > 1:
            padded = nn.utils.rnn.pad_sequence(list(waveforms), batch_first=True)
            return self._forward(padded, torch.tensor(lengths, dtype=torch.long))
        rows: List[Optional[Tensor]] = [None] * len(waveforms)
        for group in equal_length_groups(lengths):
            out = self._forward(torch.stack([waveforms[i] for i in group]))
            for row, position in zip(out, group):
                rows[position] = row
        return torch.stack(rows)


@dataclass
class FileEmbeddings:
    """Per-file embeddings in the order of the paths given: whole (F, D), crops (F, num_eval, D) or None."""

    whole: Tensor
    crops: Optional[Tensor]
    seconds: float
    forwards: int


def embed_files(
    encoder: nn.Module,
    paths: Sequence[str],
    device: torch.device,
    batch_size: int,
    crops: Optional[CropSpec] = None,
    max_samples: int = 0,
    num_workers: int = 0,
    desc: str = "Embedding",
    train_seeds: Optional[Sequence[int]] = None,
) -> FileEmbeddings:
    """Embed every file of ``paths`` (whole file, plus crops when ``crops`` is given) in length-sorted batches.

    ``batch_size`` files are read per step; their crops (all of the crop length) go through in one
    forward, their whole files as :meth:`BatchedEncoder.embed` allows. Memory: WavLM Base+'s first
    convolution holds 512 channels at 1/5 of the sample rate, about 0.8 GB (float32) per file of
    15 crops of 4 s, so 16 files per step peak near 13 GB of GPU memory in that layer. A file that
    cannot be read or embedded raises an error naming it. The encoder runs in evaluation mode unless
    ``train_seeds`` (one per file) are given: then dropout and layer drop are active, as in the original's
    ``--generate_embeddings`` (docs/method.md §10), and each whole file is embedded alone with torch's
    generators seeded with its seed, so its embedding depends on nothing else (batch, order, process).
    """
    if not paths:
        raise ValueError("embed_files needs at least one file")
    if train_seeds is not None and (crops is not None or len(train_seeds) != len(paths)):
        raise ValueError("train_seeds: one seed per file, and whole files only")
    was_training = encoder.training
    encoder.train(train_seeds is not None)
    runner = BatchedEncoder(encoder, device)
    cap = max_samples if crops is not None else 0
    lengths = [header_length(path, cap) for path in progress_bar(paths, desc="Reading audio headers", unit="file",
                                                                 leave=False)]
    loader = DataLoader(AudioFiles(paths, crops, max_samples), batch_sampler=plan_batches(lengths, batch_size),
                        num_workers=num_workers, collate_fn=list, pin_memory=device.type == "cuda")
    whole: List[Optional[Tensor]] = [None] * len(paths)
    crop_out: List[Optional[Tensor]] = [None] * len(paths)
    start = time.perf_counter()
    try:
        with progress_bar(total=len(paths), desc=desc, unit="file") as bar:
            for items in loader:
                indices = [index for index, _, _ in items]
                try:
                    if crops is not None:
                        rows_of_all = runner.embed([row for _, c, _ in items for row in c])
                        for index, rows in zip(indices, rows_of_all.split(crops.per_file)):
                            crop_out[index] = rows
                    if train_seeds is None:
                        for index, row in zip(indices, runner.embed([w for _, _, w in items])):
                            whole[index] = row
                    else:
                        for index, _, waveform in items:
                            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                                torch.manual_seed(train_seeds[index])
                                whole[index] = runner.embed([waveform])[0]
                except torch.OutOfMemoryError as err:
                    raise InputError(f"out of memory embedding {len(items)} files at once: lower the files "
                                     f"per step (--eval_batch_size, now {batch_size})") from err
                for index in indices:
                    rows = whole[index] if crops is None else torch.cat([whole[index][None], crop_out[index]])
                    if not torch.isfinite(rows).all():
                        raise InputError(f"{os.fspath(paths[index])}: its embedding holds NaN or inf values "
                                         "(are the model's weights finite?)")
                bar.update(len(items))
    finally:
        encoder.train(was_training)
    return FileEmbeddings(
        whole=torch.stack(whole),
        crops=torch.stack(crop_out) if crops is not None else None,
        seconds=time.perf_counter() - start,
        forwards=runner.forwards,
    )


def embed_across_processes(encoder: nn.Module, paths: Sequence[str], device: torch.device, batch_size: int,
                           train_seed: Optional[int] = None, **options: Any) -> Optional[FileEmbeddings]:
    """:func:`embed_files` of ``paths``, shared among the processes of a torchrun group.

    Process r embeds files r, r + W, r + 2W, ... (W processes) and the main process gathers them back
    into the order of ``paths``; it returns the embeddings, the others None. Each file is embedded as
    it would be alone, so the result equals one process's. ``train_seed`` embeds in training mode, file
    i with the seed ``train_seed + i``. ``seconds`` is the main process's wall time.
    """
    rank, world = get_rank(), get_world_size()
    share = list(range(rank, len(paths), world))
    seeds = None if train_seed is None else [train_seed + index for index in share]
    started = time.perf_counter()
    mine = embed_files(encoder, [paths[i] for i in share], device, batch_size, train_seeds=seeds, **options) \
        if share else None
    if world == 1:
        return mine
    parts = gather_objects(None if mine is None else (share, mine.whole, mine.crops, mine.forwards))
    if parts is None:
        return None
    parts = [part for part in parts if part is not None]
    dim = parts[0][1].shape[1]
    whole = torch.empty(len(paths), dim)
    crops = None if parts[0][2] is None else torch.empty(len(paths), parts[0][2].shape[1], dim)
    for indices, part_whole, part_crops, _ in parts:
        whole[indices] = part_whole
        if crops is not None:
            crops[indices] = part_crops
    return FileEmbeddings(whole=whole, crops=crops, seconds=time.perf_counter() - started,
                          forwards=sum(part[3] for part in parts))
