"""The speaker trainer of trainSpeakerNet.py: AdamW with the encoder's groups, StepLR, the loss's hooks, one step.

:class:`SpeakerTraining` is the method the run loop (training/run.py) drives: the original's dataset and
sampler, :class:`training.speaker_net.SpeakerNet`, and :class:`ModelTrainer`, the original's name for what
takes a step (docs/method.md §4, §5). Each step writes every sample's loss and relative path to this
process's share of ``save_path/loss_vals/epoch_N.txt``, which the main process merges at the end of the
epoch: the next epoch's loss gate is fitted on it (the loss's ``before_epoch`` hook). Each epoch also adds
the original's line to ``save_path/result/scores.txt``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import get_total_norm
from torch.utils.data import DataLoader

from dataio.datasets import prepare_batch, train_dataset_loader
from dataio.sampler import train_dataset_sampler
from training.run import EpochTrainer, Method, StepResult
from training.speaker_net import SpeakerNet, parameter_groups
from utils.atomic import atomic_write_text
from utils.distributed import (
    all_processes,
    average_buffers_,
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    is_main_process,
    unwrap,
)
from utils.errors import InputError
from utils.options import OPTIONS, check_at_least
from utils.textfile import read_text_lines

logger = logging.getLogger("trainSpeakerNet")

SCORE_LINE = "Epoch {:d}, TEER/TAcc {:2.2f}, TLOSS {:f}, LR {:f} \n"
"""The original's line in ``result/scores.txt`` (its 'TEER/TAcc' is the training accuracy)."""
_EPOCH_LINE = re.compile(r"^Epoch (\d+),")


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


def rank_part_path(loss_vals_path: str, rank: int) -> str:
    """``.../epoch_N.txt`` -> ``.../epoch_N_rank<rank>.txt``: one process's share of an epoch's losses."""
    stem, extension = os.path.splitext(loss_vals_path)
    return f"{stem}_rank{rank}{extension}"


def merge_loss_parts(loss_vals_path: str, world_size: int) -> None:
    """Concatenate every process's part, in rank order, into ``loss_vals_path``; remove the parts."""
    parts = [rank_part_path(loss_vals_path, rank) for rank in range(world_size)]
    text = []
    for part in parts:
        with open(part, encoding="utf-8") as handle:
            text.append(handle.read())
    atomic_write_text(loss_vals_path, "".join(text))
    for part in parts:
        os.remove(part)


class ModelTrainer(EpochTrainer):
    """AdamW with the encoder's learning-rate groups, StepLR per epoch, the loss's hooks, and one step.

    ``speaker_model`` is a :class:`SpeakerNet`, possibly wrapped in DistributedDataParallel; ``kwargs`` is
    the option namespace (unused options are ignored). With ``loss_vals_dir`` each epoch's per-sample losses
    are written there (``epoch_N.txt``), with ``score_file`` each epoch's line of the original's ``scores.txt``.
    """

    progress_figures = {"loss": "loss", "accuracy": "acc"}

    def __init__(self, speaker_model: nn.Module, optimizer: str = "adamw", scheduler: str = "steplr",
                 LR_MHFA: float = 5e-3, LR_Transformer: float = 2e-5, LLRD_factor: float = 1.0,
                 weight_decay: float = 0.01, lr_decay: float = 0.9, test_interval: int = 1,
                 max_nonfinite_steps: int = 20, loss_vals_dir: Optional[str] = None,
                 score_file: Optional[str] = None, **kwargs: Any) -> None:
        if optimizer != "adamw":
            raise InputError(f"optimizer {optimizer!r} is not supported; use 'adamw'")
        if scheduler != "steplr":
            raise InputError(f"scheduler {scheduler!r} is not supported; use 'steplr'")
        self.model = speaker_model
        self.net: SpeakerNet = unwrap(speaker_model)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.net, LR_MHFA, LR_Transformer, LLRD_factor),
                                           weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=test_interval, gamma=lr_decay)
        self.max_nonfinite_steps = max_nonfinite_steps
        self.loss_vals_dir = loss_vals_dir
        self.score_file = score_file
        self._lines: List[str] = []
        self._epoch_figures: Dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def loss(self) -> nn.Module:
        return self.net.__L__

    def learning_rates(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def loss_file(self, epoch: int) -> Optional[str]:
        return None if self.loss_vals_dir is None else os.path.join(self.loss_vals_dir, f"epoch_{epoch}.txt")

    def skip_epochs(self, epochs_done: int) -> None:
        """Step StepLR once per finished epoch (resume from weights without a saved scheduler state)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for _ in range(epochs_done):
                self.scheduler.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                **self.loss.hook_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss.load_hook_state(state)

    def restored(self) -> str:
        hooks = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in self.loss.hook_state().items())
        return f"optimizer, scheduler (LR {self.learning_rates()})" + (f", {hooks}" if hooks else "")

    def epoch_start(self, epoch: int) -> None:
        """The loss's between-epoch hook on the main process (e.g. the gate's refit), its state to every process."""
        self.model.train()
        if is_main_process():
            self.loss.before_epoch(epoch, self.loss_file(epoch - 1) or "")
        self.loss.load_hook_state(broadcast_object(self.loss.hook_state()))
        self._epoch_figures = {"lr": max(self.learning_rates()), **self.loss.hook_state()}
        self._lines = []

    def finite_step(self, total: torch.Tensor, ce: torch.Tensor) -> bool:
        """Whether the objective, every sample's loss and the gradient are finite, on every process.

        A sample's AAM cross-entropy is bounded (logits lie in [-scale, scale]), so a non-finite one
        means its embedding is not finite, even when the loss gate hides it from the loss.
        """
        gradients = [p.grad for p in self.net.parameters() if p.grad is not None]
        return all_processes(torch.isfinite(total) & torch.isfinite(ce).all()
                             & torch.isfinite(get_total_norm(gradients)))

    def step(self, batch: Any, epoch: int) -> Optional[StepResult]:
        clean, augmented, labels, paths = prepare_batch(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        total, loss, prec1, ce = self.model(augmented, clean, labels, epoch)
        total.backward()
        self._lines.append("".join(f"{value:.9g} {path}\n" for value, path in zip(ce.tolist(), paths)))
        if not self.finite_step(total, ce):
            return None
        self.optimizer.step()
        average_buffers_(self.net)
        return StepResult({"loss": loss.item(), "accuracy": prec1.item(), **self.loss.step_figures()}, len(paths))

    def epoch_end(self, epoch: int, means: Dict[str, float]) -> Dict[str, Any]:
        """Steps StepLR; merges the processes' per-sample losses; writes the original's score line."""
        self.scheduler.step()
        loss_file = self.loss_file(epoch)
        if loss_file is not None:
            atomic_write_text(rank_part_path(loss_file, get_rank()), "".join(self._lines))
            barrier()
            if is_main_process():
                merge_loss_parts(loss_file, get_world_size())
        self._lines = []
        if is_main_process() and self.score_file is not None:
            write_score_line(self.score_file, epoch, SCORE_LINE.format(epoch, means["accuracy"], means["loss"],
                                                                       self._epoch_figures["lr"]))
        return {**means, **self._epoch_figures}

    def summary(self, record: Mapping[str, Any]) -> str:
        return (f"Epoch {record['epoch']}: train accuracy {record['accuracy']:.2f} %, loss {record['loss']:.6f}, "
                f"LR {record['lr']:g}")


TRAIN_COUNTS = {"max_epoch": 1, "test_interval": 1, "batch_size": 1, "max_frames": 1, "max_seg_per_spk": 1,
                "nPerSpeaker": 1, "nClasses": 2, "nDataLoaderThread": 0, "max_nonfinite_steps": 1}
"""Options of trainSpeakerNet.py that must be at least this, checked before anything is read."""


def check_options(args: argparse.Namespace) -> None:
    """Option values the speaker network cannot train with: an InputError naming the option."""
    check_at_least(args, TRAIN_COUNTS)


def check_labels(dataset: train_dataset_loader, n_classes: int, train_list: str) -> None:
    """Fewer than 2 distinct labels or more than AAM rows is an error; fewer labels than rows leaves rows unused
    (logged)."""
    if dataset.num_labels < 2:
        raise InputError(f"{train_list}: every line has the label {dataset.label_names[0]!r}; training needs at "
                         "least 2 classes (with one, every prediction is right: accuracy 100 %, loss 0, and "
                         "nothing is learnt)")
    if dataset.num_labels > n_classes:
        raise InputError(f"{train_list}: {dataset.num_labels} distinct labels but nClasses is {n_classes}; "
                         f"set --nClasses {dataset.num_labels} (or more)")
    if dataset.num_labels < n_classes:
        logger.info("%s: %d labels, nClasses %d: AAM rows %d..%d unused", train_list, dataset.num_labels,
                    n_classes, dataset.num_labels, n_classes - 1)


class SpeakerTraining(Method):
    """Fine-tuning the speaker encoder on a (pseudo-)labelled train list: the method of trainSpeakerNet.py."""

    name = "speaker network"
    options = OPTIONS
    folders = ("loss_vals",)

    def data(self) -> Tuple[DataLoader, train_dataset_sampler]:
        """Dataset (validated), the original's sampler, and a DataLoader of ``batch_size`` groups per step."""
        args = self.args
        dataset = train_dataset_loader(**vars(args))
        check_labels(dataset, args.nClasses, args.train_list)
        self.check_audio(dataset)
        sampler = train_dataset_sampler(dataset, **vars(args))
        return self.loader(dataset, sampler), sampler

    def network(self) -> SpeakerNet:
        return SpeakerNet(**vars(self.args))

    def epoch_trainer(self, network: nn.Module, replicated: nn.Module, steps_per_epoch: int,
                loaded: bool) -> ModelTrainer:
        save_path = self.args.save_path
        return ModelTrainer(replicated, **dict(vars(self.args), loss_vals_dir=os.path.join(save_path, "loss_vals"),
                                               score_file=os.path.join(save_path, "result", "scores.txt")))
