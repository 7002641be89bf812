#!/usr/bin/env python
"""A prepared GPU check: what a lent GPU should measure about this project, in one command.

    python bench/gpu_check.py --device cuda --budget_s 420 --out gpu_report
    python bench/gpu_check.py --device cpu --tiny --budget_s 300 --out /tmp/check   # the same code paths, small

Writes ``OUT/report.md`` and ``OUT/report.json`` (rewritten atomically after every part, so a part that
fails or runs out of time never loses what the earlier ones measured) and one log per part in ``OUT/logs``.
Needs nothing but this repository: the WavLM is random (Base+-shaped, Microsoft's checkpoint format), the
corpus is the demo's (FSDD), the embeddings are synthetic.

Time limits: each part runs in its own child process (forked from a server that has imported torch, so a
start costs no import, and that has never touched CUDA, which a process must not have done before it
forks children that use it) and gets a share of the budget still left, in proportion to its estimated GPU time
(``--part_budget_s NAME=SECONDS`` fixes one part's limit instead). A child past its limit is sent SIGTERM,
then SIGKILL, with every process it started (its own process group; torchrun stops its workers on SIGTERM),
and the part is reported as "timed out" with the numbers it had recorded by then: parts record each
measurement as soon as it is made. Child processes also keep one part's CUDA state and memory peaks
apart from the next's. The exit status is 0 only when every part finished.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import logging
import math
import multiprocessing
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchaudio
from torch.utils.data import default_collate

import trainSpeakerNet
from bench.kmeans_speed import VOXCELEB2_FILES, VOXCELEB2_SPEAKERS, sphere_blobs
from bench.train_speed import build, make_flows, median, our_step, random_batch, time_flows
from clustering.ahc import ward_ahc
from clustering.kmeans import kmeans
from clustering.pseudo_labels import auto_init
from clustering.report import nmi, purity
from dataio.audio import SAMPLE_RATE, crop_samples
from dataio.datasets import CropSpec, prepare_batch, train_dataset_loader
from dataio.lists import read_train_list
from demo.corpus import write_train_list
from demo.noise import make_musan_like
from demo.prepare import DemoPaths, demo_paths, prepare_demo
from models.wavlm_checkpoint import BASE_PLUS_CFG, save_random_wavlm_checkpoint
from scoring.embedding import embed_files
from training.speaker_net import SpeakerNet
from training.speaker_trainer import ModelTrainer
from utils.atomic import atomic_write_text
from utils.checkpoints import model_path, read_resume_state, read_state_dict, state_path
from utils.device import bf16_autocast_supported, resolve_device
from utils.options import OPTIONS_BY_NAME, load_yaml_config
from utils.records import read_json, write_json
from utils.steps import StepMarkers

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY_CONFIG = CONFIGS / "tiny.yaml"
ROUND = load_yaml_config(str(CONFIGS / "wavlm_mhfa_dlg_lc.yaml"))
LMFT = load_yaml_config(str(CONFIGS / "wavlm_mhfa_dlg_lc_lmft.yaml"))
TINY_RUN = load_yaml_config(str(TINY_CONFIG))
PRECISIONS = ("fp32", "bf16")
STOP_GRACE_S = 5.0
"""Seconds a timed-out part gets between SIGTERM (torchrun stops its workers) and SIGKILL."""
GIB = 2.0 ** 30
PLANNING_GIB = (24, 40, 80)
"""GPU sizes the max-batch table extrapolates to (common cards)."""
ALLOCATOR_HEADROOM = 0.9
"""Share of a GPU's memory counted on for tensors in those extrapolations: the caching allocator's
fragmentation and the CUDA context take the rest."""
LOSS_TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2}
"""Largest relative loss difference after identical steps that counts as agreement."""
WEIGHT_TOLERANCE = 1e-3
"""Largest |weight difference| between the torchrun and the plain run that counts as agreement."""
AUGMENT_TOLERANCE = 1e-4
"""Largest per-crop relative difference between device and worker augmentation (tests/test_dataset_loader.py's)."""
PSEUDO_LABEL_GOAL_S = 300.0
BLOB_NOISE = 0.8  # bench/kmeans_speed.py's default: the spread of each synthetic speaker's embeddings
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.0,
              "dropout_input": 0.0}
"""A CPU and a GPU run draw different dropout masks; without dropout their weights can be compared."""
EVAL_SECONDS = 8.0


@dataclass(frozen=True)
class Scale:
    """How much work each part does: the published sizes, or small ones (``--tiny``)."""

    shape: str  # bench/train_speed.py's model shape: 'base_plus' (WavLM Base+) or 'tiny'
    step_batch: int
    step_frames: int
    agree_steps: int  # steps of each flow from the same state, to compare their losses
    timed_steps: int
    search_start: Optional[int]  # first batch of the max-batch search; None: the config's batch size
    search_cap: int
    files_per_speaker: int  # training list of the torchrun part
    augment_crops: int
    points: int
    dim: int
    speakers: int
    clusters: int
    clusters_ahc: int
    eval_files: int
    eval_batch: int


# The search stops below the AAM's 7,500 classes: random_batch labels a batch's crops 0..batch-1.
FULL = Scale(shape="base_plus", step_batch=ROUND["batch_size"], step_frames=ROUND["max_frames"], agree_steps=3,
             timed_steps=5, search_start=None, search_cap=4096, files_per_speaker=8,
             augment_crops=2 * ROUND["batch_size"], points=VOXCELEB2_FILES, dim=256, speakers=VOXCELEB2_SPEAKERS,
             clusters=50_000, clusters_ahc=7_500, eval_files=64, eval_batch=OPTIONS_BY_NAME["eval_batch_size"].default)
TINY = Scale(shape="tiny", step_batch=TINY_RUN["batch_size"], step_frames=TINY_RUN["max_frames"], agree_steps=2,
             timed_steps=2, search_start=2, search_cap=8, files_per_speaker=4, augment_crops=16, points=20_000, dim=32,
             speakers=50, clusters=500, clusters_ahc=50, eval_files=4, eval_batch=4)


@dataclass
class PartContext:
    """What a part's child process works with; :meth:`record` saves each measurement at once."""

    device: torch.device
    scale: Scale
    shared: Path  # scratch folder of the whole check (the corpus two parts use)
    folder: Path  # this part's own scratch folder
    results_file: Path
    results: Dict[str, Any] = field(default_factory=dict)

    def record(self, **values: Any) -> None:
        self.results.update(values)
        write_json(self.results_file, self.results)

    def add_row(self, table: str, row: Dict[str, Any]) -> None:
        self.results.setdefault(table, []).append(row)
        write_json(self.results_file, self.results)


# ----- measuring helpers -----

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> Optional[float]:
    """Peak GPU memory held by tensors since the last :func:`reset_peak` (None on a CPU)."""
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def fits_in_memory(step: Callable[[], object], device: torch.device) -> bool:
    """Whether ``step()`` runs without running out of device memory; its memory is given back either way.

    ``step`` should create its large tensors itself, so that they die with its frame.
    """
    try:
        step()
        fitted = True
    except torch.OutOfMemoryError:
        fitted = False
    gc.collect()  # the failed step's frames may sit in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return fitted


@dataclass
class BatchSearch:
    largest: int  # largest batch that fitted (0: none did)
    first_failure: Optional[int]  # smallest batch that did not fit (None: all fitted, up to the cap)
    probes: List[Tuple[int, bool]]


def search_max_batch(fits: Callable[[int], bool], start: int, cap: int, resolution: int = 16) -> BatchSearch:
    """The largest batch for which ``fits`` holds: double from ``start`` until it fails (or ``cap`` fits),
    then bisect until the gap between fitting and failing is at most ``largest / resolution`` (or 1)."""
    probes: List[Tuple[int, bool]] = []

    def probe(batch: int) -> bool:
        probes.append((batch, fits(batch)))
        return probes[-1][1]

    largest, failure = 0, None
    batch = min(start, cap)
    while failure is None:
        if not probe(batch):
            failure = batch
        else:
            largest = batch
            if batch >= cap:
                break
            batch = min(2 * batch, cap)
    while failure is not None and failure - largest > max(1, largest // resolution):
        middle = (largest + failure) // 2
        if probe(middle):
            largest = middle
        else:
            failure = middle
    return BatchSearch(largest, failure, probes)


def memory_line(peaks: Dict[int, float]) -> Optional[Tuple[float, float]]:
    """(GiB independent of the batch, GiB per utterance): a least-squares line through (batch, peak GiB)."""
    if len(peaks) < 2:
        return None
    slope, intercept = np.polyfit(list(peaks), list(peaks.values()), 1)
    return float(intercept), float(slope)


def identical_steps(net: SpeakerNet, trainer: ModelTrainer, flows: Dict[str, Callable[[int], torch.Tensor]],
                    epoch: int, steps: int) -> Dict[str, List[float]]:
    """Each flow's losses over ``steps`` steps from the same weights, optimiser state and random seeds."""
    weights = {name: value.clone() for name, value in net.state_dict().items()}
    optimizer_state = copy.deepcopy(trainer.optimizer.state_dict())
    losses: Dict[str, List[float]] = {}
    for name, step in flows.items():
        net.load_state_dict(weights)
        trainer.optimizer.load_state_dict(copy.deepcopy(optimizer_state))  # the optimiser adopts its tensors
        losses[name] = []
        for index in range(steps):
            torch.manual_seed(index)  # the same dropout and layer-drop draws in both flows
            losses[name].append(float(step(epoch)))
    return losses


def max_abs_difference(weights: Dict[str, torch.Tensor], others: Dict[str, torch.Tensor]) -> float:
    """Largest |difference| between two state dicts, over the tensors of ``weights``."""
    return max(float((value.double() - others[name].double()).abs().max()) for name, value in weights.items())


def crop_seconds(frames: int) -> float:
    return crop_samples(frames) / SAMPLE_RATE


def demo_corpus(ctx: PartContext) -> DemoPaths:
    """The demo's corpus, MUSAN-like and RIR folders in the shared scratch folder, made by the first part
    that needs them."""
    paths = demo_paths(ctx.shared / "demo")
    markers = StepMarkers(ctx.shared)
    if markers.finished("demo") is None:
        markers.run("demo", lambda: prepare_demo(paths))
    return paths


# ----- the parts -----

def part_environment(ctx: PartContext) -> None:
    device = ctx.device
    ctx.record(python=platform.python_version(), torch=torch.__version__, torchaudio=torchaudio.__version__,
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
               device=str(device), cpu_count=os.cpu_count(), usable_cpus=len(os.sched_getaffinity(0)),
               torch_threads=torch.get_num_threads(),
               host_memory_gib=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
               bf16_autocast=bf16_autocast_supported(device))
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        ctx.record(device_name=properties.name, device_memory_gib=properties.total_memory / GIB,
                   compute_capability=f"{properties.major}.{properties.minor}",
                   multiprocessors=properties.multi_processor_count,
                   nccl=".".join(map(str, torch.cuda.nccl.version())),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    else:
        ctx.record(device_name=platform.processor() or platform.machine())


def part_train_step(ctx: PartContext) -> None:
    device, scale = ctx.device, ctx.scale
    net, trainer = build(scale.shape, BASE_PLUS_CFG.encoder_layers, str(ctx.folder), device)
    lc_epoch = net.__L__.lc_start_epoch
    seconds = crop_seconds(scale.step_frames)
    batch = scale.step_batch
    # The heaviest step (original-like, with label correction, fp32) decides the batch all flows share.
    while batch > 1 and not fits_in_memory(
            lambda: make_flows(net, trainer, *random_batch(batch, seconds, device))["original"](lc_epoch), device):
        batch //= 2
    ctx.record(batch=batch, config_batch=scale.step_batch, crop_s=seconds, lc_start_epoch=lc_epoch)
    flows = make_flows(net, trainer, *random_batch(batch, seconds, device))
    for precision in PRECISIONS:
        net.mixedprec = precision == "bf16"
        for epoch in (1, lc_epoch):
            losses = identical_steps(net, trainer, flows, epoch, scale.agree_steps)  # also the warm-up
            delta = max(abs(a - b) for a, b in zip(losses["ours"], losses["original"]))
            relative = delta / max(1e-12, max(abs(v) for v in losses["ours"] + losses["original"]))
            peaks: Dict[str, float] = {}

            def measured(name: str, epoch: int = epoch) -> Callable[[], None]:
                def step() -> None:
                    reset_peak(device)
                    flows[name](epoch)
                    peak = peak_gib(device)
                    if peak is not None:
                        peaks[name] = max(peaks.get(name, 0.0), peak)
                return step

            times = time_flows({name: measured(name) for name in flows}, scale.timed_steps, 0, device)
            ours, original = (batch / median(times[name]) for name in ("ours", "original"))
            ctx.add_row("steps", {
                "precision": precision, "phase": "with LC" if epoch >= lc_epoch else "before LC", "epoch": epoch,
                "ours_utt_per_s": ours, "original_utt_per_s": original, "ratio": ours / original,
                "ours_peak_gib": peaks.get("ours"), "original_peak_gib": peaks.get("original"),
                "max_abs_dloss": delta, "max_rel_dloss": relative,
                "losses_agree": relative <= LOSS_TOLERANCE[precision]})


def part_max_batch(ctx: PartContext) -> None:
    device, scale = ctx.device, ctx.scale
    net, trainer = build(scale.shape, BASE_PLUS_CFG.encoder_layers, str(ctx.folder), device)
    lc_epoch = net.__L__.lc_start_epoch  # the clean view is embedded too: the most memory a step takes
    ctx.record(epoch=lc_epoch, cap=scale.search_cap, device_memory_gib=(
        torch.cuda.get_device_properties(device).total_memory / GIB if device.type == "cuda" else None))
    for config_name, values in (("round", ROUND), ("LMFT", LMFT)):
        seconds = crop_seconds(values["max_frames"])
        for precision in PRECISIONS:
            net.mixedprec = precision == "bf16"
            peaks: Dict[int, float] = {}
            step_s: Dict[int, float] = {}

            def fits(batch: int, seconds: float = seconds) -> bool:
                def step() -> None:
                    augmented, clean, labels = random_batch(batch, seconds, device)
                    reset_peak(device)
                    started = time.perf_counter()
                    our_step(net, trainer, augmented, clean, labels, lc_epoch)
                    synchronize(device)
                    step_s[batch] = time.perf_counter() - started
                    peak = peak_gib(device)
                    if peak is not None:
                        peaks[batch] = peak

                fitted = fits_in_memory(step, device)
                trainer.optimizer.zero_grad(set_to_none=True)
                ctx.add_row("probes", {"config": config_name, "precision": precision, "batch": batch,
                                       "fits": fitted, "peak_gib": peaks.get(batch), "step_s": step_s.get(batch)})
                return fitted

            search = search_max_batch(fits, scale.search_start or values["batch_size"], scale.search_cap)
            line = memory_line(peaks)
            row: Dict[str, Any] = {
                "config": config_name, "crop_s": seconds, "precision": precision, "config_batch": values["batch_size"],
                "max_batch": search.largest, "first_failure": search.first_failure,
                "config_batch_fits": search.largest >= values["batch_size"],
                "peak_gib_at_max": peaks.get(search.largest),
                "utt_per_s_at_max": search.largest / step_s[search.largest] if search.largest else None,
                "gib_per_utt": line[1] if line else None, "fixed_gib": line[0] if line else None}
            for size in PLANNING_GIB:
                row[f"est_max_batch_{size}gib"] = (
                    max(0, math.floor((ALLOCATOR_HEADROOM * size - line[0]) / line[1])) if line and line[1] > 0
                    else None)
            ctx.add_row("max_batch", row)


def part_torchrun(ctx: PartContext) -> None:
    device, scale = ctx.device, ctx.scale
    demo = demo_corpus(ctx)
    labels, relative_paths, _ = read_train_list(str(demo.train_list))
    taken: Dict[str, int] = {}
    subset = []
    for label, relative in zip(labels, relative_paths):
        if taken.get(label, 0) < scale.files_per_speaker:
            taken[label] = taken.get(label, 0) + 1
            subset.append(relative)
    train_list = ctx.folder / "train_list.txt"
    write_train_list(subset, train_list)
    wavlm = ctx.folder / "wavlm_tiny_no_dropout.pt"
    save_random_wavlm_checkpoint(str(wavlm), seed=0, **NO_DROPOUT)
    common = ["--config", str(TINY_CONFIG), "--pretrained_model_path", str(wavlm), "--train_list", str(train_list),
              "--train_path", str(demo.corpus), "--musan_path", str(demo.musan), "--rir_path", str(demo.rirs)]
    launched = ctx.folder / "torchrun"
    ctx.record(backend="nccl" if device.type == "cuda" else "gloo", files=len(subset), speakers=len(taken))
    outputs = []
    for epochs in (1, 2):  # one epoch, then a second one resumed from its checkpoint
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                   trainSpeakerNet.__file__, *common, "--save_path", str(launched), "--device", device.type,
                   "--max_epoch", str(epochs), "--distributed"]
        print("$", shlex.join(command), flush=True)
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ctx.folder)
        print(result.stdout + result.stderr, flush=True)
        if result.returncode != 0:
            raise RuntimeError(f"torchrun (max_epoch {epochs}) exited with status {result.returncode}: "
                               f"{(result.stdout + result.stderr)[-2000:]}")
        outputs.append(result.stdout + result.stderr)
        ctx.record(**{f"torchrun_epochs_1_to_{epochs}_s": time.perf_counter() - started})
    ctx.record(resumed="epochs 2..2 on" in outputs[1] and "Restored optimizer" in outputs[1])
    started = time.perf_counter()
    plain = trainSpeakerNet.main([*common, "--save_path", str(ctx.folder / "plain"), "--device", "cpu",
                                  "--max_epoch", "2"])
    ctx.record(plain_cpu_run_s=time.perf_counter() - started)
    reference = {name: value.detach().cpu() for name, value in plain.state_dict().items()}
    distributed_models, plain_models = str(launched / "model"), str(ctx.folder / "plain" / "model")
    delta = max_abs_difference(reference, read_state_dict(model_path(distributed_models, 2)))
    gates = [read_resume_state(state_path(folder, 2))["gate_threshold"] for folder in (distributed_models,
                                                                                       plain_models)]
    ctx.record(max_abs_dweight=delta, weights_agree=delta <= WEIGHT_TOLERANCE,
               max_abs_epoch2_change=max_abs_difference(reference, read_state_dict(model_path(plain_models, 1))),
               gate_threshold_torchrun=gates[0], gate_threshold_plain=gates[1])


def part_augment_on_device(ctx: PartContext) -> None:
    device, scale = ctx.device, ctx.scale
    demo = demo_corpus(ctx)
    kwargs = dict(train_list=str(demo.train_list), augment=True, musan_path=str(demo.musan),
                  rir_path=str(demo.rirs), max_frames=scale.step_frames, train_path=str(demo.corpus))
    datasets = {"worker": train_dataset_loader(**kwargs),
                "device": train_dataset_loader(augment_on_device=True, **kwargs)}
    groups = [[index % len(datasets["worker"])] for index in range(scale.augment_crops)]
    batch = scale.step_batch

    def produce(dataset: train_dataset_loader, count: int) -> Tuple[torch.Tensor, torch.Tensor, float, float]:
        """(clean, augmented, seconds in all, seconds in prepare_batch) for the first ``count`` crops."""
        random.seed(12)  # the same crops and augmentation draws in both paths
        clean, augmented = [], []
        total = preparing = 0.0
        for start in range(0, count, batch):
            begun = time.perf_counter()
            collated = default_collate([dataset[group] for group in groups[start:min(count, start + batch)]])
            handed = time.perf_counter()
            rows = prepare_batch(collated, device)
            synchronize(device)
            done = time.perf_counter()
            total += done - begun
            preparing += done - handed
            clean.append(rows[0])
            augmented.append(rows[1])
        return torch.cat(clean), torch.cat(augmented), total, preparing

    for dataset in datasets.values():  # warm-up: file cache, FFT plans
        produce(dataset, batch)
    worker_clean, worker_aug, worker_s, _ = produce(datasets["worker"], len(groups))
    device_clean, device_aug, device_s, device_prepare_s = produce(datasets["device"], len(groups))
    scale_rows = worker_aug.abs().amax(dim=1)
    relative = float(((device_aug - worker_aug).abs().amax(dim=1) / scale_rows).max())
    changed = (worker_aug - worker_clean).abs().amax(dim=1) > 1e-3
    batches = math.ceil(len(groups) / batch)
    ctx.record(crops=len(groups), crop_s=crop_seconds(scale.step_frames), batch=batch,
               same_clean_crops=bool(torch.equal(worker_clean, device_clean)), max_rel_difference=relative,
               same_augmentation=relative < AUGMENT_TOLERANCE, augmented_fraction=float(changed.float().mean()),
               worker_path_crops_per_s=len(groups) / worker_s, device_path_crops_per_s=len(groups) / device_s,
               speedup=worker_s / device_s, device_path_prepare_ms_per_batch=1000 * device_prepare_s / batches)


def part_pseudo_labels(ctx: PartContext) -> None:
    device, scale = ctx.device, ctx.scale
    x, truth = sphere_blobs(scale.points, scale.dim, scale.speakers, BLOB_NOISE, seed=0)
    ctx.record(points=scale.points, dim=scale.dim, speakers=scale.speakers, clusters=scale.clusters,
               clusters_ahc=scale.clusters_ahc, iterations=10, goal_s=PSEUDO_LABEL_GOAL_S)
    reset_peak(device)
    started = time.perf_counter()
    init = auto_init(device)
    km = kmeans(x, scale.clusters, max_iter=10, tol=0.0, seed=0, device=device, init=init)
    synchronize(device)
    kmeans_s = time.perf_counter() - started
    ctx.record(init=init, kmeans_s=kmeans_s, kmeans_init_s=km.init_seconds, kmeans_peak_gib=peak_gib(device),
               nmi_kmeans=nmi(truth.numpy(), km.labels.numpy()))
    started = time.perf_counter()
    groups = ward_ahc(km.centroids, scale.clusters_ahc, device=device)
    synchronize(device)
    ahc_s = time.perf_counter() - started
    labels = groups.labels[km.labels].numpy()
    ctx.record(ahc_s=ahc_s, total_s=kmeans_s + ahc_s, within_goal=kmeans_s + ahc_s < PSEUDO_LABEL_GOAL_S,
               peak_gib=peak_gib(device), nmi=nmi(truth.numpy(), labels), purity=purity(truth.numpy(), labels))


def part_embedding(ctx: PartContext) -> None:
    device, scale = ctx.device, ctx.scale
    root = Path(make_musan_like(ctx.folder / "audio", files_per_kind={"noise": scale.eval_files, "music": 0,
                                                                     "speech": 0}, seconds=EVAL_SECONDS))
    paths = sorted(str(path) for path in root.glob("*/*/*.wav"))
    net, _ = build(scale.shape, BASE_PLUS_CFG.encoder_layers, str(ctx.folder), device)
    encoder = net.__S__
    crops = CropSpec(ROUND["eval_frames"], OPTIONS_BY_NAME["num_eval"].default)
    max_samples = OPTIONS_BY_NAME["max_eval_samples"].default
    ctx.record(files=len(paths), file_s=EVAL_SECONDS, crops_per_file=crops.num_eval,
               crop_s=crop_seconds(crops.eval_frames), batch=scale.eval_batch)
    embed_files(encoder, paths[:2], device, 2, crops, max_samples, desc="Warm-up")
    batched = embed_files(encoder, paths, device, scale.eval_batch, crops, max_samples, desc="Batched")
    ctx.record(batched_files_per_s=len(paths) / batched.seconds, batched_forwards=batched.forwards)
    single = embed_files(encoder, paths, device, 1, crops, max_samples, desc="One at a time")

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())

    ctx.record(single_files_per_s=len(paths) / single.seconds, single_forwards=single.forwards,
               speedup=single.seconds / batched.seconds,
               max_rel_difference=max(relative(batched.whole, single.whole), relative(batched.crops, single.crops)))


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    measures: str
    gpu_estimate_s: int  # also the part's weight in the budget
    run: Callable[[PartContext], None]


PARTS = [
    Part("environment", "1. Environment", "torch, CUDA, cuDNN and NCCL versions; device name, memory and "
         "compute capability; bf16 support; CPU count.", 10, part_environment),
    Part("train_step", "2. Training step, ours vs the original's", "Utterances/s of our training step and of an "
         "original-style one (bench/train_speed.py) on a random WavLM Base+ + MHFA + AAM (7,500 classes), batch "
         "120 x 3 s as in configs/wavlm_mhfa_dlg_lc.yaml (halved until it fits), fp32 and bf16 (--mixedprec), "
         "before and with label correction; their ratio, peak GPU memory, and the largest loss difference "
         "over identical steps from the same state and seeds.", 90, part_train_step),
    Part("max_batch", "3. Largest batch per GPU", "Largest training batch of the round (3 s crops) and LMFT (6 s) "
         "configs, fp32 and bf16, in label-correction epochs (the clean view is embedded too): one training step "
         "per probe, doubling from the config's batch until out of memory, then bisecting to 1/16; peak memory "
         "per probe, a line through it and the batch it allows on 24 / 40 / 80 GiB cards.", 120, part_max_batch),
    Part("torchrun", "4. torchrun (nccl on GPU, gloo on CPU)", "One process under torchrun trains 1 epoch of "
         "configs/tiny.yaml (no dropout) on part of the demo corpus, then resumes for a 2nd epoch; the weights "
         "are compared with a plain single-process CPU run of 2 epochs from the same seed.", 60, part_torchrun),
    Part("augment_on_device", "5. --augment_on_device", "The same crops augmented in the loader (worker path) and "
         "on the device from the same draws: largest per-crop relative difference, crops/s of each path in one "
         "loader process (round config: 3 s crops, batches of 120), and the device path's prepare_batch time "
         "(transfer and augmentation on the device) per batch.", 30, part_augment_on_device),
    Part("pseudo_labels", "6. Pseudo-labelling at full scale", "k-means (10 iterations, k-means|| on a GPU) of "
         "1,092,009 x 256 synthetic speaker embeddings (5,994 speakers) into 50,000 clusters, then Ward AHC into "
         "7,500: time and peak GPU memory against the 5-minute goal, NMI and purity against the synthetic "
         "speakers.", 90, part_pseudo_labels),
    Part("embedding", "7. Evaluation embedding", "Files/s of evaluation embedding (15 crops of 4 s and the whole "
         "file) of 8 s files with a random WavLM Base+ + MHFA: scoring.embedding.embed_files with 16 files per "
         "step against one file at a time; largest relative difference between the two. The files all last 8 s, "
         "so whole files batch too; files of different lengths run whole one at a time (Base+'s group norm).", 40,
         part_embedding),
]
PARTS_BY_NAME = {part.name: part for part in PARTS}


# ----- running the parts and writing the report -----

def part_process(name: str, settings: Dict[str, Any]) -> None:
    """A part's child process: its own process group (a timeout stops what it started too), output to its log."""
    os.setsid()
    log = os.open(settings["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout,
                        force=True)
    folder = Path(settings["shared"]) / name
    folder.mkdir(parents=True, exist_ok=True)
    ctx = PartContext(device=resolve_device(settings["device"]), scale=TINY if settings["tiny"] else FULL,
                      shared=Path(settings["shared"]), folder=folder, results_file=Path(settings["results"]))
    try:
        PARTS_BY_NAME[name].run(ctx)
    except BaseException as error:
        ctx.record(error=f"{type(error).__name__}: {error}")
        raise


def signal_group(pid: int, signum: int) -> None:
    """Signal the process group led by ``pid``, or the process alone if it has not made its group yet."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def run_part(part: Part, limit_s: float, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Run one part in a child process under ``limit_s``; its report entry."""
    context = multiprocessing.get_context("forkserver")
    process = context.Process(target=part_process, args=(part.name, settings), name=f"gpu_check-{part.name}")
    process.start()
    started = time.perf_counter()
    process.join(max(0.0, limit_s))
    timed_out = process.is_alive()
    if timed_out:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            signal_group(process.pid, signum)
            process.join(STOP_GRACE_S)
            if not process.is_alive():
                break
    seconds = time.perf_counter() - started
    results = read_json(settings["results"]) if os.path.isfile(settings["results"]) else {}
    error = results.pop("error", None)
    if timed_out:
        status = "timed out"
    elif process.exitcode == 0:
        status = "ok"
    else:
        status = "failed"
        error = error or f"the part's process ended with status {process.exitcode}"
    return {"title": part.title, "measures": part.measures, "status": status, "limit_s": round(limit_s, 1),
            "seconds": round(seconds, 1), "results": results, "error": error,
            "log": os.path.relpath(settings["log"], settings["out"])}


def format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(format_value(v) for v in row) + " |" for row in rows)]


def render_markdown(report: Dict[str, Any]) -> str:
    """report.md: a summary table of the parts, then each part's numbers."""
    environment = report["parts"].get("environment", {}).get("results", {})
    lines = [f"# GPU check: {environment.get('device_name', report['device'])}", "",
             f"`{report['command']}` (started {report['started']}; budget {report['budget_s']:g} s)", "",
             "Each part ran in its own process under its own time limit (a share of the budget left); a part "
             "past its limit was stopped and is marked timed out, with what it had measured by then."
             + (" --tiny: every size is reduced (a tiny WavLM, small batches and data); each part's numbers say "
                "which." if report["tiny"] else ""), "",
             *markdown_table(["part", "status", "seconds", "limit (s)"],
                             [[entry["title"], entry["status"], entry["seconds"], entry["limit_s"]]
                              for entry in report["parts"].values()])]
    for entry in report["parts"].values():
        lines += ["", f"## {entry['title']}", "", entry["measures"], ""]
        if entry["status"] != "ok":
            lines += [f"**{entry['status']}**" + (f": {entry['error']}" if entry["error"] else "")
                      + (f" (log: `{entry['log']}`)" if entry.get("log") else ""), ""]
        results = entry["results"]
        scalars = [[key.replace("_", " "), value] for key, value in results.items() if not isinstance(value, list)]
        if scalars:
            lines += markdown_table(["quantity", "value"], scalars) + [""]
        for key, rows in results.items():
            if isinstance(rows, list) and rows:
                columns = list(dict.fromkeys(column for row in rows for column in row))
                lines += [f"{key.replace('_', ' ')}:", "",
                          *markdown_table([c.replace("_", " ") for c in columns],
                                          [[row.get(c) for c in columns] for row in rows]), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(out: Path, report: Dict[str, Any]) -> None:
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))


def part_limit(overrides: Dict[str, float], parts: Sequence[Part], remaining_s: float) -> float:
    """The limit of ``parts[0]``: its fixed limit, or its weight's share of the time the other limits leave."""
    first = parts[0]
    if first.name in overrides:
        return overrides[first.name]
    shared = [p for p in parts if p.name not in overrides]
    left = remaining_s - sum(overrides[p.name] for p in parts if p.name in overrides)
    return max(0.0, left) * first.gpu_estimate_s / sum(p.gpu_estimate_s for p in shared)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    listing = "\n".join(f"  {p.name} (~{p.gpu_estimate_s} s):\n"
                        + textwrap.fill(p.measures, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
                        for p in PARTS)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip().splitlines()[0], formatter_class=argparse.RawTextHelpFormatter,
        epilog=f"parts (in the order they run), each with its estimated time on one H200-class GPU (an estimate: "
               f"no GPU was at hand where this was written; --tiny takes about a minute on 2 CPU cores):\n{listing}"
               f"\n\nThe budget is shared in proportion to these estimates; a part that ends early leaves its time "
               f"to the later ones.")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--budget_s", type=float, default=420.0, help="total seconds for all parts (default: 420)")
    parser.add_argument("--out", required=True, help="folder for report.md, report.json and logs/")
    parser.add_argument("--tiny", action="store_true", help="small sizes: a tiny WavLM, short runs, 20,000 x 32 "
                        "embeddings into 500 then 50 clusters, max-batch search capped at 8")
    parser.add_argument("--parts", nargs="+", choices=[p.name for p in PARTS], help="run only these parts")
    parser.add_argument("--part_budget_s", action="append", default=[], metavar="NAME=SECONDS",
                        help="fixed time limit of one part instead of its share (repeatable)")
    args = parser.parse_args(argv)
    overrides: Dict[str, float] = {}
    for item in args.part_budget_s:
        name, _, seconds = item.partition("=")
        if name not in PARTS_BY_NAME:
            parser.error(f"--part_budget_s {item!r}: unknown part {name!r}; parts: {', '.join(PARTS_BY_NAME)}")
        try:
            overrides[name] = float(seconds)
        except ValueError:
            parser.error(f"--part_budget_s {item!r}: expected NAME=SECONDS")
    args.part_budget_s = overrides
    if args.budget_s <= 0:
        parser.error("--budget_s must be positive")
    if args.device != "auto":
        try:
            device = torch.device(args.device)
        except RuntimeError as error:
            parser.error(f"--device {args.device!r}: {error}")
        # Only this check here: the parts resolve the device themselves, in their own processes.
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available on this machine")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    parts = [p for p in PARTS if args.parts is None or p.name in args.parts]
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    # The fork server imports this module (torch, the project) once; each part is a fork of it.
    multiprocessing.get_context("forkserver").set_forkserver_preload(["bench.gpu_check"])
    report: Dict[str, Any] = {
        "command": shlex.join(["python", "bench/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "device": args.device, "tiny": args.tiny, "budget_s": args.budget_s,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "parts": {p.name: {"title": p.title, "measures": p.measures, "status": "pending", "limit_s": None,
                           "seconds": None, "results": {}, "error": None} for p in parts}}
    write_report(out, report)
    started = time.perf_counter()
    shared = tempfile.mkdtemp(prefix="gpu_check_")
    try:
        for index, part in enumerate(parts):
            limit = part_limit(args.part_budget_s, parts[index:], args.budget_s - (time.perf_counter() - started))
            settings = {"device": args.device, "tiny": args.tiny, "shared": shared, "out": str(out),
                        "results": os.path.join(shared, f"{part.name}.json"),
                        "log": str(out / "logs" / f"{part.name}.log")}
            print(f"[{index + 1}/{len(parts)}] {part.name}: limit {limit:.0f} s ...", flush=True)
            report["parts"][part.name] = entry = run_part(part, limit, settings)
            write_report(out, report)
            print(f"[{index + 1}/{len(parts)}] {part.name}: {entry['status']} in {entry['seconds']:.1f} s"
                  + (f" ({entry['error']})" if entry["error"] else ""), flush=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)  # a stopped part may have left files being written
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}", flush=True)
    return 0 if all(entry["status"] == "ok" for entry in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
