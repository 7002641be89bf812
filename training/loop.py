"""A training run of the speaker network: where it starts, its epochs, its checkpoints (docs/method.md §5).

Where training starts: the newest checkpoint in ``save_path/model`` (with its state file when there is
one) wins; otherwise ``--initial_model`` (weights only, from epoch 1: how LMFT starts from a round's
model); otherwise the pre-trained WavLM. (The original let ``--initial_model`` win, so re-running an
interrupted LMFT command restarted it from scratch.)
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import re
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dataio.datasets import train_dataset_loader, worker_init_fn
from dataio.lists import check_listed_audio
from dataio.sampler import train_dataset_sampler
from training.speaker_net import SpeakerNet
from training.trainer import ModelTrainer
from utils import checkpoints
from utils.atomic import atomic_write_text, remove_stale_temporaries
from utils.distributed import all_gather_objects, barrier, broadcast_object, get_rank, get_world_size, is_main_process
from utils.errors import InputError, TrainingDiverged
from utils.options import save_resolved_config
from utils.records import EpochLog
from utils.textfile import read_text_lines

logger = logging.getLogger("trainSpeakerNet")

SCORE_LINE = "Epoch {:d}, TEER/TAcc {:2.2f}, TLOSS {:f}, LR {:f} \n"
_EPOCH_LINE = re.compile(r"^Epoch (\d+),")
METRICS_FILE = "train_metrics.jsonl"
"""One JSON record per epoch in ``save_path/result``: what run_rounds.py and other tools read."""


def write_score_line(score_file: str, epoch: int, line: str) -> None:
    """Add epoch ``epoch``'s line to ``scores.txt``, dropping lines of that and later epochs.

    An epoch redone after a kill between its score line and its checkpoint then has one line, not two.
    """
    kept = []
    if os.path.isfile(score_file):
        for old in read_text_lines(score_file, "scores file"):
            match = _EPOCH_LINE.match(old)
            if old.strip() and not (match and int(match.group(1)) >= epoch):
                kept.append(old + "\n")
    atomic_write_text(score_file, "".join(kept) + line)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_labels(dataset: train_dataset_loader, n_classes: int, train_list: str) -> None:
    """More distinct labels than AAM rows is an error; fewer leaves rows unused (logged)."""
    if dataset.num_labels > n_classes:
        raise InputError(f"{train_list}: {dataset.num_labels} distinct labels but nClasses is {n_classes}; "
                         f"set --nClasses {dataset.num_labels} (or more)")
    if dataset.num_labels < n_classes:
        logger.info("%s: %d labels, nClasses %d: AAM rows %d..%d unused", train_list, dataset.num_labels,
                    n_classes, dataset.num_labels, n_classes - 1)


def build_loader(args: argparse.Namespace, device: torch.device) -> Tuple[DataLoader, train_dataset_sampler]:
    """Dataset (validated), the original's sampler, and a DataLoader of ``batch_size`` groups per step.

    Workers are started afresh each epoch (not persistent): their seeds then come from the main
    process's torch generator, which a resume restores, so a resumed run draws the same augmentations.
    """
    dataset = train_dataset_loader(**vars(args))
    check_labels(dataset, args.nClasses, args.train_list)
    if args.check_audio:  # on rank 0 only; every process then stops with its message
        problem = None
        if is_main_process():
            try:
                check_listed_audio(args.train_list, dataset.data_list, dataset.line_numbers)
            except InputError as error:
                problem = str(error)
        problem = broadcast_object(problem)
        if problem is not None:
            raise InputError(problem)
    sampler = train_dataset_sampler(dataset, **vars(args))
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.nDataLoaderThread,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init_fn, drop_last=True)
    return loader, sampler


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
            "move the damaged files away to start again from --initial_model or the pre-trained WavLM")
    return 1, initial_model, None


class ResumeStateHolder(Protocol):
    """What :func:`save_checkpoint` needs from a trainer: the dict a resume restores (optimizer, schedules...)."""

    def state_dict(self) -> Dict[str, Any]: ...


def restore_rng(state: Mapping[str, Any], state_file: str) -> None:
    """This process's random states from a resume state, when it was saved by as many processes as run now."""
    rng_states = state.get("rng", [])
    if len(rng_states) == get_world_size():
        checkpoints.restore_rng_state(rng_states[get_rank()])
    else:
        logger.warning("%s holds random states of %d processes, this run has %d: random streams restart "
                       "from the seed", state_file, len(rng_states), get_world_size())


def restore(trainer: ModelTrainer, start_epoch: int, state_file: Optional[str]) -> None:
    """Optimizer, scheduler, gate threshold and random states from ``state_file``; else fast-forward StepLR."""
    if state_file is None:
        trainer.fast_forward_scheduler(start_epoch - 1)
        return
    state = checkpoints.read_resume_state(state_file)
    trainer.load_state_dict(state)
    restore_rng(state, state_file)
    logger.info("Restored optimizer, scheduler (LR %s) and gate threshold %g from %s",
                trainer.learning_rates(), trainer.gate_threshold, state_file)


def save_checkpoint(net: nn.Module, trainer: ResumeStateHolder, model_dir: str, epoch: int) -> None:
    """Collective: every process contributes its random states; rank 0 writes ``net``'s weights and the state file.

    Weights holding NaN or inf stop training with :class:`TrainingDiverged` instead: no checkpoint
    is ever written from a diverged state (so a later run cannot resume from one).
    """
    for name, value in net.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise TrainingDiverged(f"epoch {epoch}: weight {name!r} holds NaN or inf values; training stops and "
                                   f"writes no checkpoint (the newest in {model_dir} is from before). Lower the "
                                   "learning rates or check the audio")
    rng_states = all_gather_objects(checkpoints.capture_rng_state())
    if is_main_process():
        resume_state: Dict[str, Any] = dict(trainer.state_dict(), rng=rng_states, world_size=get_world_size())
        path = checkpoints.save_checkpoint(model_dir, epoch, net, resume_state)
        logger.info("Saved %s", path)
    barrier()


def train(args: argparse.Namespace, device: torch.device) -> SpeakerNet:
    """Run the epochs the options ask for; return the trained network (on ``device``)."""
    model_dir = os.path.join(args.save_path, "model")
    loss_dir = os.path.join(args.save_path, "loss_vals")
    score_file = os.path.join(args.save_path, "result", "scores.txt")
    metrics = EpochLog(os.path.join(args.save_path, "result", METRICS_FILE),
                       os.path.join(args.save_path, "tensorboard") if args.tensorboard and is_main_process() else None)
    if is_main_process():
        for folder in (args.save_path, model_dir, loss_dir, os.path.dirname(score_file)):
            os.makedirs(folder, exist_ok=True)
            for path in remove_stale_temporaries(folder):
                logger.info("Removed %s, left by an interrupted write", path)
        save_resolved_config(args, os.path.join(args.save_path, "config.yaml"))
    barrier()

    loader, sampler = build_loader(args, device)
    start_epoch, weights, state_file = find_start(model_dir, args.initial_model)
    sampler.set_epoch(start_epoch)
    if len(loader) == 0:
        raise InputError(f"{args.train_list}: the sampler gives {len(sampler)} groups to this process, fewer "
                         f"than one batch of {args.batch_size}; lower --batch_size")

    net = SpeakerNet(**vars(args))
    if weights is not None:
        checkpoints.load_weights(net, weights)
        logger.info("Loaded weights from %s", weights)
    net.to(device)
    model: torch.nn.Module = net
    if args.distributed:
        # Every trainable parameter gets a gradient each step (SpeakerNet._reference_tensors), so the
        # reducer needs no search for unused parameters. The model has no buffers to broadcast.
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    trainer = ModelTrainer(model, **vars(args))
    restore(trainer, start_epoch, state_file)
    logger.info("%d parameters (%d trainable); training epochs %d..%d on %s x %d",
                sum(p.numel() for p in net.parameters()), sum(p.numel() for p in net.parameters() if p.requires_grad),
                start_epoch, args.max_epoch, device, get_world_size())
    if start_epoch > args.max_epoch:
        logger.warning("Nothing to train: the run starts at epoch %d (after the newest checkpoint in %s) and "
                       "max_epoch is %d. To fine-tune a copied checkpoint further (e.g. LMFT), raise --max_epoch "
                       "to %d, or start from it with --initial_model in an empty save_path",
                       start_epoch, model_dir, args.max_epoch, start_epoch - 1 + args.max_epoch)

    for epoch in range(start_epoch, args.max_epoch + 1):
        sampler.set_epoch(epoch)
        learning_rate = max(trainer.learning_rates())
        if net.__L__.gate_update_due(epoch):
            trainer.refit_gate(os.path.join(loss_dir, "epoch_%d.txt" % (epoch - 1)))
        gate_threshold = trainer.gate_threshold
        stats = trainer.train_network(loader, os.path.join(loss_dir, "epoch_%d.txt" % epoch), epoch,
                                      verbose=is_main_process())
        if is_main_process():
            line = SCORE_LINE.format(epoch, stats.accuracy, stats.loss, learning_rate)
            logger.info(line.strip())
            write_score_line(score_file, epoch, line)
            metrics.log({"epoch": epoch, "loss": stats.loss, "accuracy": stats.accuracy, "lr": learning_rate,
                         "gate_threshold": gate_threshold, "steps": stats.steps,
                         "skipped_steps": stats.skipped_steps, "seconds": round(stats.seconds, 3),
                         "utterances_per_s": round(stats.utterances_per_s, 2)})
        if epoch % args.test_interval == 0:
            save_checkpoint(net, trainer, model_dir, epoch)
    metrics.close()
    return net
