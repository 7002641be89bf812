"""One epoch of training, the optimiser, the learning-rate schedule and the loss gate (docs/method.md §4, §5)."""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List

import torch
import torch.nn as nn
from torch.nn.utils import get_total_norm

from dataio.datasets import prepare_batch
from loss import LGL_threshold_update_gmm
from training.speaker_net import SpeakerNet, parameter_groups, unwrap
from utils.atomic import atomic_open
from utils.distributed import (
    all_gather_objects,
    all_processes,
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    is_main_process,
)
from utils.errors import InputError, TrainingDiverged
from utils.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """One epoch over every process: mean loss and top-1 accuracy (%) per applied step, applied steps,
    utterances, seconds, and steps skipped because their loss or gradient was not finite."""

    loss: float
    accuracy: float
    steps: int
    utterances: int
    seconds: float
    skipped_steps: int = 0

    @property
    def utterances_per_s(self) -> float:
        return self.utterances / max(self.seconds, 1e-9)


def rank_part_path(loss_vals_path: str, rank: int) -> str:
    """``.../epoch_N.txt`` -> ``.../epoch_N_rank<rank>.txt``: one process's share of an epoch's losses."""
    stem, extension = os.path.splitext(loss_vals_path)
    return f"{stem}_rank{rank}{extension}"


def merge_loss_parts(loss_vals_path: str, world_size: int) -> None:
    """Concatenate every process's part, in rank order, into ``loss_vals_path``; remove the parts."""
    parts = [rank_part_path(loss_vals_path, rank) for rank in range(world_size)]
    with atomic_open(loss_vals_path, "w", encoding="utf-8") as merged:
        for part in parts:
            with open(part, encoding="utf-8") as handle:
                merged.write(handle.read())
    for part in parts:
        os.remove(part)


class ModelTrainer:
    """AdamW with LLRD groups, StepLR per epoch, the loss gate's threshold, and the epoch loop.

    ``speaker_model`` is a :class:`SpeakerNet`, possibly wrapped in DistributedDataParallel;
    ``kwargs`` is the option namespace (unused options are ignored).
    """

    def __init__(self, speaker_model: nn.Module, optimizer: str = "adamw", scheduler: str = "steplr",
                 LR_MHFA: float = 5e-3, LR_Transformer: float = 2e-5, LLRD_factor: float = 1.0,
                 weight_decay: float = 0.01, lr_decay: float = 0.9, test_interval: int = 1,
                 max_nonfinite_steps: int = 20, **kwargs: Any) -> None:
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

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def gate_threshold(self) -> float:
        return float(self.net.__L__.lgl_threshold)

    def update_lgl_threshold(self, threshold: float) -> None:
        self.net.__L__.lgl_threshold = float(threshold)

    def learning_rates(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def refit_gate(self, previous_loss_file: str) -> float:
        """Fit the gate threshold on rank 0 from the previous epoch's merged losses; give it to every process.

        A missing file (a run resumed from a checkpoint copied without its loss files) or a fit
        without a single crossing keeps the current threshold.
        """
        threshold = self.gate_threshold
        if is_main_process():
            if os.path.isfile(previous_loss_file):
                threshold = LGL_threshold_update_gmm(previous_loss_file, threshold)
                logger.info("Gate threshold (log CE) %.6g from %s", threshold, previous_loss_file)
            else:
                logger.warning("No per-sample loss file %s; keeping the gate threshold at %g",
                               previous_loss_file, threshold)
        threshold = broadcast_object(threshold)
        self.update_lgl_threshold(threshold)
        return threshold

    def fast_forward_scheduler(self, epochs_done: int) -> None:
        """Step StepLR once per finished epoch (resume from weights without a saved scheduler state)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for _ in range(epochs_done):
                self.scheduler.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "gate_threshold": self.gate_threshold}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.update_lgl_threshold(state["gate_threshold"])

    def finite_step(self, total: torch.Tensor, ce: torch.Tensor) -> bool:
        """Whether the objective, every sample's CE and the gradient are finite, on every process.

        A sample's AAM cross-entropy is bounded (logits lie in [-scale, scale]), so a non-finite one
        means its embedding is not finite, even when the loss gate hides it from the loss.
        """
        gradients = [p.grad for p in self.net.parameters() if p.grad is not None]
        return all_processes(torch.isfinite(total) & torch.isfinite(ce).all()
                             & torch.isfinite(get_total_norm(gradients)))

    def train_network(self, loader: Any, loss_vals_path: str, epoch: int, verbose: bool) -> EpochStats:
        """Train one epoch; return its figures over every process's steps.

        Each sample's CE and relative path go to this process's part of ``loss_vals_path``; rank 0
        then merges the parts into ``loss_vals_path``. StepLR is stepped once at the end. A step whose
        objective, CE or gradient is not finite is skipped (no optimiser step) and counted;
        ``max_nonfinite_steps`` of them in a row stop training with :class:`TrainingDiverged`.
        """
        self.model.train()
        rank, world_size = get_rank(), get_world_size()
        device = self.device
        loss_sum = accuracy_sum = 0.0
        steps = utterances = skipped = in_a_row = 0
        started = time.perf_counter()
        progress = progress_bar(total=len(loader), desc=f"Epoch {epoch}", unit="step", disable=not verbose)
        with atomic_open(rank_part_path(loss_vals_path, rank), "w", encoding="utf-8") as part:
            tick = time.perf_counter()
            for batch in loader:
                clean, augmented, labels, paths = prepare_batch(batch, device)
                self.optimizer.zero_grad(set_to_none=True)
                total, loss, prec1, ce = self.model(augmented, clean, labels, epoch)
                total.backward()
                part.write("".join(f"{value:.9g} {path}\n" for value, path in zip(ce.tolist(), paths)))
                if not self.finite_step(total, ce):
                    skipped += 1
                    in_a_row += 1
                    if in_a_row >= self.max_nonfinite_steps:
                        raise TrainingDiverged(
                            f"epoch {epoch}: {in_a_row} steps in a row gave a non-finite loss or gradient "
                            f"(--max_nonfinite_steps {self.max_nonfinite_steps}); training stops and writes no "
                            "checkpoint from this state. Check the audio and lower --LR_MHFA / --LR_Transformer")
                    progress.update()
                    continue
                in_a_row = 0
                self.optimizer.step()
                loss_sum += loss.item()
                accuracy_sum += prec1.item()
                steps += 1
                utterances += len(paths)
                now = time.perf_counter()
                progress.set_postfix(loss=f"{loss_sum / steps:.4f}", acc=f"{accuracy_sum / steps:.2f}%",
                                     utt_s=f"{len(paths) * world_size / (now - tick):.1f}")
                progress.update()
                tick = now
        progress.close()
        self.scheduler.step()
        barrier()
        if is_main_process():
            merge_loss_parts(loss_vals_path, world_size)
        seconds = time.perf_counter() - started
        totals = (loss_sum, accuracy_sum, steps, utterances, skipped)
        loss_sum, accuracy_sum, steps, utterances, skipped = (sum(v) for v in zip(*all_gather_objects(totals)))
        if skipped:
            logger.warning("epoch %d: skipped %d steps whose loss or gradient was not finite", epoch, skipped)
        if steps == 0:
            raise TrainingDiverged(f"epoch {epoch}: no step had a finite loss and gradient ({skipped} skipped); "
                                   "training stops and writes no checkpoint from this state")
        return EpochStats(loss=loss_sum / steps, accuracy=accuracy_sum / steps, steps=steps, utterances=utterances,
                          seconds=seconds, skipped_steps=skipped)
