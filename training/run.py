"""The one run loop of both trainers: folders, data, resume, DDP, epochs, checkpoints, records (docs/method.md §5).

A :class:`Method` says what is trained (the speaker network of trainSpeakerNet.py, training/speaker_trainer.py;
the DINO model of trainDINO.py, training/dino.py): its data, its network and the :class:`EpochTrainer` that
takes a step. :func:`train` does the rest, the same for both:

1. the data loader (its inputs checked by the method);
2. where training starts (:func:`find_start`): the newest readable checkpoint in ``save_path/model``
   with its resume state, else ``--initial_model`` (weights only, from epoch 1: how LMFT starts from a
   round's model), else the method's initial network. (The original let ``--initial_model`` win, so
   re-running an interrupted LMFT command restarted it from scratch.);
3. the network, with those weights; only then, inputs checked, folders under ``save_path`` (``model/``,
   ``result/`` and the method's own), temporaries left by a killed write removed, the resolved options
   written to ``config.yaml``;
4. the network on the device, its replicated part wrapped in DistributedDataParallel under ``--distributed``;
5. the trainer's state restored (optimiser, schedules, hook states, every process's random states);
6. the epochs: each step through the trainer; a step whose loss or gradient is not finite is skipped and
   counted, ``--max_nonfinite_steps`` of them in a row stop training (:class:`TrainingDiverged`); the
   figures of every process are averaged into one JSON record per epoch (``result/train_metrics.jsonl``,
   and TensorBoard with ``--tensorboard``); a progress bar on a terminal, plain lines in a log;
7. a checkpoint every ``test_interval`` epochs (:func:`save_checkpoint`): never from non-finite weights.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from dataio.datasets import worker_init_fn
from dataio.lists import check_listed_audio
from utils import checkpoints
from utils.atomic import remove_stale_temporaries
from utils.distributed import (
    all_gather_objects,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
    replicate,
)
from utils.errors import InputError, TrainingDiverged
from utils.options import Option, save_resolved_config
from utils.progress import progress_bar
from utils.records import EpochLog

logger = logging.getLogger(__name__)

METRICS_FILE = "train_metrics.jsonl"
"""One JSON record per epoch in ``save_path/result``: what run_rounds.py and other tools read."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class StepResult:
    """One applied step: its figures (averaged over the epoch's steps) and the utterances it saw."""

    figures: Dict[str, float]
    utterances: int


class EpochSampler(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


class EpochTrainer(ABC):
    """How a method takes its steps; ``ModelTrainer`` (speaker) and ``DINOTrainer`` implement it."""

    max_nonfinite_steps: int = 20
    progress_figures: Mapping[str, str] = {"loss": "loss"}
    """Figure -> label of the progress bar's running means."""

    @abstractmethod
    def step(self, batch: Any, epoch: int) -> Optional[StepResult]:
        """Train on one batch; None when its loss or gradient was not finite on some process (nothing changed)."""

    def epoch_start(self, epoch: int) -> None:
        """Before the first step of ``epoch`` (every process)."""

    @abstractmethod
    def epoch_end(self, epoch: int, means: Dict[str, float]) -> Dict[str, Any]:
        """After the last step (every process), with the mean figures over every process's applied steps;
        returns the figures of the epoch's record."""

    def epoch_abandoned(self) -> None:
        """An exception left the epoch: drop what the epoch was writing."""

    @abstractmethod
    def summary(self, record: Mapping[str, Any]) -> str:
        """The epoch's log line."""

    @abstractmethod
    def state_dict(self) -> Dict[str, Any]:
        """What a resume restores besides the weights (optimiser, schedules, ...)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def skip_epochs(self, epochs_done: int) -> None:
        """Start after ``epochs_done`` epochs without a resume state (schedules fast-forwarded)."""

    def restored(self) -> str:
        """What :meth:`load_state_dict` restored, for the log."""
        return "the optimiser"


class Method(ABC):
    """What a run trains; see the module docstring."""

    name: str = "training"
    options: Sequence[Option] = ()
    folders: Sequence[str] = ()
    """Folders under ``save_path`` besides ``model`` and ``result``."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device

    @abstractmethod
    def data(self) -> Tuple[Any, EpochSampler]:
        """The data loader of one process (its inputs checked) and its sampler."""

    def check_audio(self, dataset: Any) -> None:
        """``--check_audio``: every file of ``dataset`` (its ``data_list``, from the lines ``line_numbers`` of
        ``--train_list``) read before epoch 1; the files training cannot use are named at once. Collective."""
        if self.args.check_audio:
            check_listed_audio(self.args.train_list, dataset.data_list, dataset.line_numbers)

    def loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        """The DataLoader of ``batch_size`` items per step over ``sampler``'s share of ``dataset``.

        Workers are started afresh each epoch (not persistent): their seeds then come from the main
        process's torch generator, which a resume restores, so a resumed run draws the same augmentations.
        """
        return DataLoader(dataset, batch_size=self.args.batch_size, sampler=sampler,
                          num_workers=self.args.nDataLoaderThread, pin_memory=self.device.type == "cuda",
                          worker_init_fn=worker_init_fn, drop_last=True)

    @abstractmethod
    def network(self) -> nn.Module:
        """The network a checkpoint holds, built with the weights training starts from when no checkpoint is loaded."""

    def replicated(self, network: nn.Module) -> nn.Module:
        """The part of ``network`` that DistributedDataParallel wraps (all of it by default)."""
        return network

    @abstractmethod
    def epoch_trainer(self, network: nn.Module, replicated: nn.Module, steps_per_epoch: int,
                loaded: bool) -> EpochTrainer:
        """The trainer of ``network`` (on the device; ``replicated`` maybe wrapped); ``loaded``: weights were
        loaded from a checkpoint or ``--initial_model``."""

    def describe(self, network: nn.Module) -> str:
        """What is trained, for the log."""
        return (f"{sum(p.numel() for p in network.parameters())} parameters "
                f"({sum(p.numel() for p in network.parameters() if p.requires_grad)} trainable)")


def find_start(model_dir: str, initial_model: Optional[str]) -> Tuple[int, Optional[str], Optional[str]]:
    """(first epoch to train, weights file or None, resume-state file or None); see the module doc.

    The newest checkpoint whose weights (and state file, when there is one) can be read wins: a newer
    one that cannot be read (damaged after it was written: every write here is atomic) is skipped with
    a warning, and training redoes its epochs. When none can be read, the error names the newest.
    """
    found = checkpoints.list_checkpoints(model_dir)
    for epoch, path in reversed(found):
        state: Optional[str] = checkpoints.state_path(model_dir, epoch)
        state = state if os.path.isfile(state) else None
        try:
            checkpoints.read_state_dict(path)
            if state is not None:
                checkpoints.read_resume_state(state)
        except checkpoints.CheckpointError as error:
            logger.warning("Skipping checkpoint %d: %s", epoch, error)
            continue
        if epoch != found[-1][0]:
            logger.warning("Resuming from %s, the newest readable checkpoint: epochs %d..%d are trained again",
                           path, epoch + 1, found[-1][0])
        if initial_model:
            logger.info("Resuming from %s; --initial_model %s is ignored", path, initial_model)
        return epoch + 1, path, state
    if found:
        raise checkpoints.CheckpointError(
            f"no checkpoint in {model_dir} can be read (the newest is {found[-1][1]}, see the warnings above); "
            "move the damaged files away to start again from --initial_model or the initial network")
    return 1, initial_model, None


def restore_rng(state: Mapping[str, Any], state_file: str) -> None:
    """This process's random states from a resume state, when it was saved by as many processes as run now."""
    rng_states = state.get("rng", [])
    if len(rng_states) == get_world_size():
        checkpoints.restore_rng_state(rng_states[get_rank()])
    else:
        logger.warning("%s holds random states of %d processes, this run has %d: random streams restart "
                       "from the seed", state_file, len(rng_states), get_world_size())


def restore(trainer: EpochTrainer, start_epoch: int, state_file: Optional[str]) -> None:
    """The trainer's state and this process's random states from ``state_file``; else skip the schedules forward."""
    if state_file is None:
        trainer.skip_epochs(start_epoch - 1)
        return
    state = checkpoints.read_resume_state(state_file)
    trainer.load_state_dict(state)
    restore_rng(state, state_file)
    logger.info("Restored %s from %s", trainer.restored(), state_file)


def save_checkpoint(network: nn.Module, trainer: EpochTrainer, model_dir: str, epoch: int) -> None:
    """Collective: every process contributes its random states; rank 0 writes ``network``'s weights and the state file.

    Weights holding NaN or inf stop training with :class:`TrainingDiverged` instead: no checkpoint
    is ever written from a diverged state (so a later run cannot resume from one).
    """
    for name, value in network.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise TrainingDiverged(f"epoch {epoch}: weight {name!r} holds NaN or inf values; training stops and "
                                   f"writes no checkpoint (the newest in {model_dir} is from before). Lower the "
                                   "learning rates or check the audio")
    rng_states = all_gather_objects(checkpoints.capture_rng_state())
    if is_main_process():
        resume_state: Dict[str, Any] = dict(trainer.state_dict(), rng=rng_states, world_size=get_world_size())
        path = checkpoints.save_checkpoint(model_dir, epoch, network, resume_state)
        logger.info("Saved %s", path)
    barrier()


def run_epoch(trainer: EpochTrainer, loader: Iterable, epoch: int, verbose: bool) -> Dict[str, Any]:
    """Train one epoch; return its record (figures averaged over every process's applied steps)."""
    world_size = get_world_size()
    trainer.epoch_start(epoch)
    sums: Dict[str, float] = defaultdict(float)
    steps = utterances = skipped = in_a_row = 0
    started = tick = time.perf_counter()
    progress = progress_bar(total=len(loader) if hasattr(loader, "__len__") else None, desc=f"Epoch {epoch}",
                            unit="step", disable=not verbose)
    try:
        for batch in loader:
            result = trainer.step(batch, epoch)
            progress.update()
            if result is None:
                skipped += 1
                in_a_row += 1
                if in_a_row >= trainer.max_nonfinite_steps:
                    raise TrainingDiverged(
                        f"epoch {epoch}: {in_a_row} steps in a row gave a non-finite loss or gradient "
                        f"(--max_nonfinite_steps {trainer.max_nonfinite_steps}); training stops and writes no "
                        "checkpoint from this state. Check the audio and lower the learning rates")
                continue
            in_a_row = 0
            steps += 1
            utterances += result.utterances
            for key, value in result.figures.items():
                sums[key] += value
            now = time.perf_counter()
            progress.set_postfix(**{label: f"{sums[key] / steps:.4g}" for key, label in
                                    trainer.progress_figures.items()},
                                 utt_s=f"{result.utterances * world_size / (now - tick):.1f}")
            tick = now
    except BaseException:
        trainer.epoch_abandoned()
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    gathered = all_gather_objects((dict(sums), steps, utterances, skipped))
    steps, utterances, skipped = (sum(part[i] for part in gathered) for i in (1, 2, 3))
    if skipped:
        logger.warning("epoch %d: skipped %d steps whose loss or gradient was not finite", epoch, skipped)
    if steps == 0:
        raise TrainingDiverged(f"epoch {epoch}: no step had a finite loss and gradient ({skipped} skipped); "
                               "training stops and writes no checkpoint from this state")
    means = {key: sum(part[0].get(key, 0.0) for part in gathered) / steps for key in gathered[0][0]}
    record = {"epoch": epoch, **trainer.epoch_end(epoch, means)}
    record.update(steps=steps, skipped_steps=skipped, seconds=round(seconds, 3),
                  utterances_per_s=round(utterances / max(seconds, 1e-9), 2))
    return record


def prepare_folders(method: Method, model_dir: str, result_dir: str) -> None:
    """Collective: the main process makes the run's folders, removes the temporaries a killed write left in
    them and writes ``config.yaml``; the others wait."""
    args = method.args
    if is_main_process():
        extra = [os.path.join(args.save_path, folder) for folder in method.folders]
        for folder in (args.save_path, model_dir, result_dir, *extra):
            os.makedirs(folder, exist_ok=True)
            for path in remove_stale_temporaries(folder):
                logger.info("Removed %s, left by an interrupted write", path)
        save_resolved_config(args, os.path.join(args.save_path, "config.yaml"), method.options)
    barrier()


def train(method: Method) -> nn.Module:
    """Run the epochs the options ask for; return the trained network (on the method's device)."""
    args, device = method.args, method.device
    model_dir = os.path.join(args.save_path, "model")
    result_dir = os.path.join(args.save_path, "result")
    # The inputs are checked (the data, where training starts, the network) before anything is written, so
    # that a run refused for its inputs leaves no folder behind.
    loader, sampler = method.data()
    start_epoch, weights, state_file = find_start(model_dir, args.initial_model)
    sampler.set_epoch(start_epoch)
    if len(loader) == 0:
        raise InputError(f"{args.train_list}: this process gets fewer than one batch of {args.batch_size} per "
                         "epoch; lower --batch_size")
    network = method.network()
    if weights is not None:
        checkpoints.load_weights(network, weights)
        logger.info("Loaded weights from %s", weights)
    prepare_folders(method, model_dir, result_dir)
    metrics = EpochLog(os.path.join(result_dir, METRICS_FILE),
                       os.path.join(args.save_path, "tensorboard") if args.tensorboard and is_main_process() else None)
    network.to(device)
    replicated = method.replicated(network)
    wrapped = replicate(replicated, device) if args.distributed else replicated
    trainer = method.epoch_trainer(network, wrapped, len(loader), loaded=weights is not None)
    restore(trainer, start_epoch, state_file)
    logger.info("%s: %s; epochs %d..%d on %s x %d, %d steps per epoch", method.name, method.describe(network),
                start_epoch, args.max_epoch, device, get_world_size(), len(loader))
    if start_epoch > args.max_epoch:
        logger.warning("Nothing to train: the run starts at epoch %d (after the newest checkpoint in %s) and "
                       "max_epoch is %d. To train a copied checkpoint further (e.g. LMFT), raise --max_epoch "
                       "to %d, or start from it with --initial_model in an empty save_path",
                       start_epoch, model_dir, args.max_epoch, start_epoch - 1 + args.max_epoch)

    for epoch in range(start_epoch, args.max_epoch + 1):
        sampler.set_epoch(epoch)
        record = run_epoch(trainer, loader, epoch, verbose=is_main_process())
        if is_main_process():
            logger.info(trainer.summary(record))
            metrics.log(record)
        if epoch % args.test_interval == 0:
            save_checkpoint(network, trainer, model_dir, epoch)
    metrics.close()
    return network
