"""DINO self-supervised training of an ECAPA-TDNN: the initial embeddings of the loop (docs/method.md §1 step 1).

A student (ECAPA-TDNN + DINO head) learns to give each view of an utterance the prototype
distribution that a teacher gives the utterance's two global views; the teacher is an exponential
moving average (EMA) of the student and is never trained directly (Caron et al., ICCV 2021; for
speakers, Lepage and Dehak's sslsv). One step, for a batch of B utterances cut into 2 global and
``local_crops`` local views each (dataio/multicrop.py):

1. the learning rate of the step (linear warm-up, then cosine decay to ``min_lr``), the teacher
   momentum (cosine from ``teacher_momentum`` to 1) and the epoch's teacher temperature are set;
2. student logits for every view, teacher logits (no gradient) for the global views; the loss of
   loss/dino.py;
3. backward; the global gradient norm is clipped to ``clip_grad``; in the first ``freeze_last_layer``
   epochs the prototypes then get no step (their gradient is dropped, as sslsv and DINO do after
   clipping), which keeps the randomly placed prototypes from chasing a still-random teacher; SGD step;
4. teacher <- m·teacher + (1-m)·student, parameter by parameter; the batch-norm running statistics
   of both are averaged over the processes; the loss centre moves towards the batch mean of the
   teacher's logits over all processes. Everything stays identical on every process.

Checkpoints (``save_path/model``, as the speaker network's): ``model%09d.model`` holds the flat
state dict of :class:`DINOModel` (``student.*``, ``teacher.*``, ``loss.center``) and
``state%09d.pt`` the SGD state, the step count and every process's random states; a run resumes
from the newest one (training/run.py's rules). Embeddings come from the teacher's backbone, DINO's
convention (the teacher is the better model: it is an ensemble of the student's recent weights).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from dataio.datasets import crop_major
from dataio.multicrop import GLOBAL_CROPS, MultiCropDataset
from loss.dino import DINOLoss, TeacherStatistics
from models.dino import DINOHead, DINOModel
from models.ecapa_tdnn import ECAPATDNN, RES2NET_SCALE
from training.run import EpochTrainer, Method, StepResult
from utils.device import bf16_autocast
from utils.distributed import all_processes, average_buffers_, get_rank, get_world_size
from utils.errors import InputError, TrainingDiverged
from utils.options import DATA, MODEL, OPTIM, OPTIONS_BY_NAME, Option, check_at_least, str2bool

logger = logging.getLogger("trainDINO")

LR_REFERENCE_BATCH = 128
"""Utterances per step, all processes together, that ``--lr`` is given for: sslsv's batch_size of 128,
which sslsv divides among its processes. Here ``batch_size`` is per process (as in trainSpeakerNet.py)
and the rate used is ``lr * batch_size * processes / 128``: sslsv's rate for sslsv's batch, and the
linear scaling rule (Goyal et al.; Caron et al.'s DINO scales from 256) for other batches."""
SGD_MOMENTUM = 0.9

ONE_PROTOTYPE_ENTROPY = 0.1
"""Collapse to one prototype, in nats: the batch-mean of the teacher's distributions has less entropy
than this, i.e. the whole batch uses fewer than e^0.1 ≈ 1.1 prototypes. A healthy teacher is sharp
(near one-hot rows, low per-sample entropy) but spread over many prototypes; only the batch-mean
entropy tells this collapse apart. Centring is what prevents it."""
UNIFORM_FRACTION = 0.99
"""Collapse to the uniform distribution: the teacher's mean per-sample entropy is above this fraction
of log K, so it prefers no prototype for any input. A freshly initialised head is clearly below it
(its cosine logits divided by the 0.04 temperature already single out a few prototypes per input);
sharpening is what prevents it, and a too high ``teacher_temp`` is its usual cause."""

DINO_GROUP = "DINO"


def _shared(name: str, **changes: Any) -> Option:
    """An option of trainSpeakerNet.py with the same name and meaning, its default or help adapted to DINO."""
    return dataclasses.replace(OPTIONS_BY_NAME[name], **changes)


DINO_OPTIONS: List[Option] = [
    # data loader
    _shared("batch_size", default=128, help="utterances per step per process (each gives 2 global and local_crops "
            "local views)"),
    _shared("nDataLoaderThread"),
    _shared("augment", help="MUSAN / RIR augmentation of every crop, drawn for each crop on its own"),
    _shared("check_audio"),
    _shared("sixth_augmentation"),
    _shared("seed"),
    Option("global_frames", int, 400, "global crops in 10 ms frames (400: 4 s)", DATA),
    Option("local_frames", int, 200, "local crops in 10 ms frames (200: 2 s)", DATA),
    Option("local_crops", int, 4, "local crops per utterance (the teacher sees only the 2 global ones)", DATA),
    # training
    _shared("max_epoch", default=80),
    _shared("test_interval", help="save a checkpoint every this many epochs"),
    _shared("mixedprec", help="bf16 autocast of the networks where the device supports it (the loss stays fp32)"),
    _shared("max_nonfinite_steps"),
    _shared("distributed"),
    _shared("device"),
    _shared("tensorboard"),
    # optimiser
    Option("lr", float, 0.2, f"peak learning rate of SGD (momentum {SGD_MOMENTUM}) for {LR_REFERENCE_BATCH} "
            f"utterances per step; scaled by batch_size x processes / {LR_REFERENCE_BATCH}", OPTIM),
    Option("min_lr", float, 1e-5, "learning rate at the end of the cosine decay (not scaled with the batch)", OPTIM),
    Option("warmup_epochs", int, 10, "epochs of linear learning-rate warm-up before the cosine decay", OPTIM),
    _shared("weight_decay", default=5e-5, help="SGD weight decay of weight matrices and kernels (none on biases "
            "and norms)"),
    Option("clip_grad", float, 3.0, "clip the global gradient norm to this; 0 = no clipping", OPTIM),
    # DINO
    Option("n_prototypes", int, 65536, "prototypes K: the size of the DINO head's output", DINO_GROUP),
    Option("head_hidden_dim", int, 2048, "width of the DINO head's two hidden layers", DINO_GROUP),
    Option("head_bottleneck_dim", int, 256, "L2-normalised bottleneck of the DINO head", DINO_GROUP),
    Option("head_batch_norm", str2bool, True, "batch norm after the head's hidden layers (sslsv: yes)", DINO_GROUP),
    Option("student_temp", float, 0.1, "temperature of the student's softmax", DINO_GROUP),
    Option("teacher_temp", float, 0.04, "temperature of the teacher's softmax (sharpening)", DINO_GROUP),
    Option("teacher_temp_warmup", float, 0.04, "teacher temperature of epoch 1, moved linearly to teacher_temp",
           DINO_GROUP),
    Option("teacher_temp_warmup_epochs", int, 0, "epochs from teacher_temp_warmup to teacher_temp; 0 = none",
           DINO_GROUP),
    Option("teacher_momentum", float, 0.996, "EMA momentum of the teacher at step 0, raised to 1 by a cosine",
           DINO_GROUP),
    Option("center_momentum", float, 0.9, "momentum of the centre subtracted from the teacher's logits", DINO_GROUP),
    Option("freeze_last_layer", int, 1, "epochs in which the prototypes (the head's last layer) get no step",
           DINO_GROUP),
    # model
    Option("channels", int, 1024, "ECAPA-TDNN channels C (blocks of C, aggregation of 3C); a multiple of 8", MODEL),
    _shared("nOut", default=512, help="embedding size of the ECAPA-TDNN (the DINO head's input)"),
    _shared("n_mels", help="log mel bands of the ECAPA-TDNN's filterbank"),
    Option("mean_norm", str2bool, True, "subtract each log mel band's mean over the utterance (off keeps the "
           "long-term spectrum: a speaker cue where each speaker has one channel, a channel cue elsewhere)", MODEL),
    # evaluation
    _shared("eval", help="evaluate the teacher's backbone on --test_list and exit"),
    _shared("generate_embeddings", help="embed every file of --train_list with the teacher's backbone into "
            "--embeddings_path and exit"),
    _shared("embeddings_path"),
    _shared("eval_frames"),
    _shared("num_eval"),
    _shared("max_eval_samples"),
    _shared("eval_batch_size"),
    _shared("threads"),
    _shared("num_checkpoints"),
    _shared("average_checkpoints"),
    _shared("plots"),
    _shared("dcf_p_target"),
    _shared("dcf_c_miss"),
    _shared("dcf_c_fa"),
    _shared("score_norm"),
    _shared("asnorm_top_k"),
    _shared("cohort_embeddings"),
    _shared("subtract_mean"),
    _shared("score_format"),
    # load and save
    _shared("initial_model", help="start from this DINO checkpoint (student, teacher, centre) at epoch 1, when "
            "save_path/model holds none"),
    _shared("save_path", default="exps/dino"),
    _shared("train_list", help="training list: LABEL RELATIVE_PATH per line (the labels are not read)"),
    _shared("test_list"),
    _shared("train_path"),
    _shared("test_path"),
    _shared("musan_path"),
    _shared("rir_path"),
]


def check_options(args: argparse.Namespace) -> None:
    """Option values DINO cannot train or embed with: an InputError naming the option and what it must be."""
    check_at_least(args, {"batch_size": 1, "max_epoch": 1, "test_interval": 1, "global_frames": 1,
                          "local_frames": 1, "local_crops": 0, "warmup_epochs": 0, "teacher_temp_warmup_epochs": 0,
                          "freeze_last_layer": 0, "n_prototypes": 2, "head_hidden_dim": 1, "head_bottleneck_dim": 1,
                          "nOut": 1, "n_mels": 1, "channels": RES2NET_SCALE, "lr": 0.0, "min_lr": 0.0,
                          "weight_decay": 0.0, "clip_grad": 0.0, "nDataLoaderThread": 0})
    for name in ("student_temp", "teacher_temp", "teacher_temp_warmup"):
        if getattr(args, name) <= 0:
            raise InputError(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("teacher_momentum", "center_momentum"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name} must lie in [0, 1], got {getattr(args, name)}")
    if args.channels % RES2NET_SCALE:
        raise InputError(f"--channels must be a multiple of {RES2NET_SCALE} (the Res2Net scale), got {args.channels}")


def build_dino_model(channels: int = 1024, nOut: int = 512, n_mels: int = 80, mean_norm: bool = True,
                     n_prototypes: int = 65536, head_hidden_dim: int = 2048, head_bottleneck_dim: int = 256,
                     head_batch_norm: bool = True, student_temp: float = 0.1, center_momentum: float = 0.9,
                     **options: Any) -> DINOModel:
    """The DINO model of the options: an ECAPA-TDNN and a DINO head as student (and teacher), and the loss."""
    return DINOModel(ECAPATDNN(channels, nOut, n_mels, mean_norm),
                     DINOHead(nOut, head_hidden_dim, head_bottleneck_dim, n_prototypes, head_batch_norm),
                     DINOLoss(n_prototypes, student_temp, center_momentum))


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum·teacher + (1-momentum)·student`` for every parameter (buffers are the teacher's own)."""
    teacher_parameters = list(teacher.parameters())
    torch._foreach_mul_(teacher_parameters, momentum)
    torch._foreach_add_(teacher_parameters, [p.detach() for p in student.parameters()], alpha=1.0 - momentum)


def cosine(progress: float, start: float, end: float) -> float:
    """``start`` at progress 0 to ``end`` at progress 1 along half a cosine."""
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


@dataclasses.dataclass(frozen=True)
class Schedules:
    """Learning rate and teacher momentum per step, teacher temperature per epoch (1-based)."""

    steps_per_epoch: int
    max_epoch: int
    lr: float
    min_lr: float
    warmup_epochs: int
    teacher_momentum: float
    teacher_temp: float
    teacher_temp_warmup: float
    teacher_temp_warmup_epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.max_epoch

    def learning_rate(self, step: int) -> float:
        """Linear from lr/warmup to lr over the warm-up steps, then cosine from lr to min_lr at the last step."""
        warmup = min(self.warmup_epochs * self.steps_per_epoch, self.total_steps)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        decay = self.total_steps - warmup
        return cosine((step - warmup) / decay if decay > 0 else 1.0, self.lr, self.min_lr)

    def momentum(self, step: int) -> float:
        return cosine(step / self.total_steps, self.teacher_momentum, 1.0)

    def teacher_temperature(self, epoch: int) -> float:
        warmup = self.teacher_temp_warmup_epochs
        if epoch > warmup:
            return self.teacher_temp
        return self.teacher_temp_warmup + (self.teacher_temp - self.teacher_temp_warmup) * (epoch - 1) / max(
            warmup - 1, 1)


def collapse_kind(statistics: TeacherStatistics, n_prototypes: int) -> Optional[str]:
    """'one prototype', 'uniform' or None for one step's teacher (see the two thresholds above)."""
    if statistics.batch_entropy < ONE_PROTOTYPE_ENTROPY:
        return "one prototype"
    if statistics.entropy > UNIFORM_FRACTION * math.log(n_prototypes):
        return "uniform"
    return None


def parameter_groups(network: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Weight decay on weight matrices and kernels only, not on biases and norms (as sslsv and DINO)."""
    decayed = [p for p in network.parameters() if p.requires_grad and p.dim() > 1]
    plain = [p for p in network.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


COLLAPSE_FIGURES = {"one prototype": "one_prototype_steps", "uniform": "uniform_steps"}
"""Collapse kind -> the epoch figure holding the fraction of steps collapsed that way."""


class DINOTrainer(EpochTrainer):
    """SGD over the student, the schedules, and one step; ``student`` may be the DDP-wrapped ``model.student``."""

    progress_figures = {"loss": "loss", "teacher_entropy": "H"}

    def __init__(self, model: DINOModel, student: nn.Module, schedules: Schedules, weight_decay: float = 5e-5,
                 clip_grad: float = 3.0, freeze_last_layer: int = 1, mixedprec: bool = False,
                 n_prototypes: int = 65536, max_nonfinite_steps: int = 20, **kwargs: Any) -> None:
        self.model = model
        self.student = student
        self.schedules = schedules
        self.clip_grad = clip_grad
        self.freeze_last_layer = freeze_last_layer
        self.mixedprec = mixedprec
        self.n_prototypes = n_prototypes
        self.max_nonfinite_steps = max_nonfinite_steps
        self.optimizer = torch.optim.SGD(parameter_groups(model.student, weight_decay), lr=schedules.lr,
                                         momentum=SGD_MOMENTUM)
        self.step_count = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "step": self.step_count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])

    def restored(self) -> str:
        return f"the optimizer and step {self.step_count}"

    def skip_epochs(self, epochs_done: int) -> None:
        self.step_count = epochs_done * self.schedules.steps_per_epoch

    def epoch_start(self, epoch: int) -> None:
        self.model.train()  # the teacher too: batch statistics in its batch norms, as in sslsv

    def step(self, batch: Tuple[Tensor, Tensor], epoch: int) -> Optional[StepResult]:
        """One step on ``global_views`` (B, 2, Sg) and ``local_views`` (B, L, Sl); None when the loss is not
        finite on some process (no update; the schedules still advance)."""
        global_views, local_views = batch
        device = self.device
        views = GLOBAL_CROPS + local_views.shape[1]
        # Crop-major rows (view v of utterance b at v*B + b), so that chunk() splits the logits by view.
        global_rows, local_rows = crop_major(global_views, device), crop_major(local_views, device)
        step = self.step_count
        self.step_count += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedules.learning_rate(step)
        with bf16_autocast(device, self.mixedprec):
            student_logits = self.student(global_rows, local_rows).float()
            with torch.no_grad():
                teacher_logits = self.model.teacher(global_rows).float()
        loss, statistics = self.model.loss(student_logits.chunk(views), teacher_logits.chunk(GLOBAL_CROPS),
                                           self.schedules.teacher_temperature(epoch))
        if not all_processes(torch.isfinite(loss.detach())):  # every process skips together
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.model.student.parameters(), self.clip_grad)
        if epoch <= self.freeze_last_layer:
            for parameter in self.model.student.head.last_layer.parameters():
                parameter.grad = None  # SGD skips a parameter without gradient: no momentum, no decay
        self.optimizer.step()
        ema_update_(self.model.teacher, self.model.student, self.schedules.momentum(step))
        average_buffers_(self.model.student, self.model.teacher)
        self.model.loss.update_center(teacher_logits)
        kind = collapse_kind(statistics, self.n_prototypes)
        figures = {"loss": loss.item(), "teacher_entropy": statistics.entropy,
                   "teacher_batch_entropy": statistics.batch_entropy, "kl": statistics.kl,
                   **{figure: float(kind == name) for name, figure in COLLAPSE_FIGURES.items()}}
        return StepResult(figures, global_views.shape[0])

    def epoch_end(self, epoch: int, means: Dict[str, float]) -> Dict[str, Any]:
        """Stops training when the teacher was collapsed at every step of the epoch (:func:`check_collapse`)."""
        check_collapse(means, epoch, self.n_prototypes, self.schedules.teacher_temperature(epoch))
        last_step = self.step_count - 1  # the same on every process
        return {"loss": means["loss"], "lr": self.schedules.learning_rate(last_step),
                "teacher_momentum": self.schedules.momentum(last_step),
                "teacher_temp": self.schedules.teacher_temperature(epoch),
                "teacher_entropy": means["teacher_entropy"], "teacher_batch_entropy": means["teacher_batch_entropy"],
                "kl": means["kl"]}

    def summary(self, record: Mapping[str, Any]) -> str:
        return (f"Epoch {record['epoch']}: loss {record['loss']:.4f}, teacher entropy "
                f"{record['teacher_entropy']:.3f} (batch mean {record['teacher_batch_entropy']:.3f}) nats, "
                f"KL {record['kl']:.4f}, LR {record['lr']:.5f}, momentum {record['teacher_momentum']:.5f}, "
                f"{record['utterances_per_s']:.1f} utterances/s")


def check_collapse(means: Mapping[str, float], epoch: int, n_prototypes: int, teacher_temp: float) -> None:
    """Raise TrainingDiverged when the teacher was collapsed at every step of the epoch, on every process."""
    if means[COLLAPSE_FIGURES["one prototype"]] == 1.0:
        raise TrainingDiverged(
            f"epoch {epoch}: the teacher collapsed to one prototype at every step: entropy of its "
            f"batch-mean distribution {means['teacher_batch_entropy']:.4f} nats (collapse below "
            f"{ONE_PROTOTYPE_ENTROPY}), per-sample entropy {means['teacher_entropy']:.4f}, student-teacher KL "
            f"{means['kl']:.4f}; centring did not hold it (lower --center_momentum so that the centre follows faster, "
            "or lower --lr)")
    if means[COLLAPSE_FIGURES["uniform"]] == 1.0:
        raise TrainingDiverged(
            f"epoch {epoch}: the teacher collapsed to the uniform distribution at every step: "
            f"per-sample entropy {means['teacher_entropy']:.4f} nats of at most log K = {math.log(n_prototypes):.4f} "
            f"(collapse above {UNIFORM_FRACTION:g} log K), student-teacher KL {means['kl']:.4f}; the teacher is not "
            f"sharp enough (lower --teacher_temp, now {teacher_temp:g})")


def schedules_of(args: argparse.Namespace, steps_per_epoch: int) -> Schedules:
    scale = args.batch_size * get_world_size() / LR_REFERENCE_BATCH
    return Schedules(steps_per_epoch=steps_per_epoch, max_epoch=args.max_epoch, lr=args.lr * scale,
                     min_lr=args.min_lr, warmup_epochs=args.warmup_epochs,
                     teacher_momentum=args.teacher_momentum, teacher_temp=args.teacher_temp,
                     teacher_temp_warmup=args.teacher_temp_warmup,
                     teacher_temp_warmup_epochs=args.teacher_temp_warmup_epochs)


class DINOTraining(Method):
    """DINO without labels: the method of trainDINO.py."""

    name = "DINO"
    options = DINO_OPTIONS

    def data(self) -> Tuple[DataLoader, DistributedSampler]:
        """The multi-crop dataset (validated), each process's shuffled share, a DataLoader of batch_size items.

        The sampler shuffles with ``seed + epoch`` (``set_epoch``) and drops the files that do not fill
        a batch on every process.
        """
        dataset = MultiCropDataset(**vars(self.args))
        self.check_audio(dataset)
        sampler = DistributedSampler(dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True,
                                     seed=self.args.seed, drop_last=True)
        return self.loader(dataset, sampler), sampler

    def network(self) -> DINOModel:
        return build_dino_model(**vars(self.args))

    def replicated(self, network: nn.Module) -> nn.Module:
        """Only the student is trained by gradient; each process updates its teacher by the same EMA."""
        return network.student

    def epoch_trainer(self, network: nn.Module, replicated: nn.Module, steps_per_epoch: int,
                loaded: bool) -> DINOTrainer:
        if not loaded:
            network.reset_teacher()  # after DDP broadcast rank 0's student: the same teacher everywhere
        return DINOTrainer(network, replicated, schedules_of(self.args, steps_per_epoch), **vars(self.args))

    def describe(self, network: nn.Module) -> str:
        return (f"{sum(p.numel() for p in network.student.parameters())} parameters in the student "
                f"({sum(p.numel() for p in network.student.backbone.parameters())} in its ECAPA-TDNN)")


def load_teacher_backbone(args: argparse.Namespace, weights: str) -> ECAPATDNN:
    """The teacher's ECAPA-TDNN from a DINO checkpoint (model built from ``args``; every tensor must fit)."""
    backbone = ECAPATDNN(args.channels, args.nOut, args.n_mels, args.mean_norm)
    backbone.load_dino_teacher(weights)
    return backbone
