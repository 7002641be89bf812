#!/usr/bin/env python
"""Training-step throughput: this project's step against a step that works as the original's does.

The original's step (SpeakerNet.py of wavlm_ssl_sv) embeds the clean view with autograd in every epoch
although it carries no gradient, computes gradients for WavLM parameters that no optimiser group
holds, and copies the pre-trained reference weights to the device at every step. Ours embeds the
clean view without autograd, only under label correction and only for the rows the loss gate drops
(``--kept`` sets the fraction it keeps), freezes those parameters and keeps the references on the
device. Both steps run here on the same network, optimiser and random batch, in one process, for an
epoch before label correction (epoch 1) and one with it (``lc_start_epoch``).

    python bench/train_speed.py                       # tiny and Base+-shaped (12 layers, 768 dims)
    python bench/train_speed.py --models base_plus --layers 4 --steps 2
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torch

from models.wavlm_checkpoint import BASE_PLUS_CFG, TINY_WAVLM_CFG, save_random_wavlm_checkpoint
from training.speaker_net import REG_EPSILON, SpeakerNet
from training.speaker_trainer import ModelTrainer
from utils import options
from utils.device import bf16_autocast

HEADS = {"tiny": ("32", "4", "16"), "base_plus": ("256", "64", "128")}  # nOut, head_nb, compression_dim


def original_like_step(net: SpeakerNet, trainer: ModelTrainer, reference_cpu: Dict[str, torch.Tensor],
                       augmented: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
    """The original's step: autograd clean view every epoch, references copied to the device each step.

    Under ``net.mixedprec`` the forwards run under the same bf16 autocast as ours, so that both flows
    compute in the same precision. Returns the step's (detached) loss.
    """
    trainer.optimizer.zero_grad(set_to_none=True)
    device = augmented.device
    with bf16_autocast(device, net.mixedprec):
        embeddings = net.__S__(augmented)
        clean_embeddings = net.__S__(clean)
    loss, _, _ = net.__L__(embeddings.float(), clean_embeddings.float(), labels, epoch)
    parameters = dict(net.__S__.named_parameters())
    distance = sum(torch.linalg.vector_norm(parameters[name] - value.to(device, copy=True))
                   for name, value in reference_cpu.items())
    total = loss / loss.detach() + net.weight_finetuning_reg * distance / (distance.detach() + REG_EPSILON)
    total.backward()
    trainer.optimizer.step()
    return loss.detach()


def our_step(net: SpeakerNet, trainer: ModelTrainer, augmented: torch.Tensor, clean: torch.Tensor,
             labels: torch.Tensor, epoch: int) -> torch.Tensor:
    """This project's step (``SpeakerNet.forward``); returns the step's (detached) loss."""
    trainer.optimizer.zero_grad(set_to_none=True)
    total, loss, _, _ = net(augmented, clean, labels, epoch)
    total.backward()
    trainer.optimizer.step()
    return loss


def make_flows(net: SpeakerNet, trainer: ModelTrainer, augmented: torch.Tensor, clean: torch.Tensor,
               labels: torch.Tensor) -> Dict[str, Callable[[int], torch.Tensor]]:
    """Both steps on one batch, as functions of the epoch that return the loss: ``{'ours', 'original'}``."""
    reference_cpu = {k: v.cpu() for k, v in net.__S__.reference_weights().items()}
    frozen = [p for p in net.__S__.model.parameters() if not p.requires_grad]

    def original_step(epoch: int) -> torch.Tensor:
        for parameter in frozen:  # the original computes (and discards) their gradients
            parameter.requires_grad_(True)
        try:
            return original_like_step(net, trainer, reference_cpu, augmented, clean, labels, epoch)
        finally:  # also after running out of memory: a caller may retry with a smaller batch
            for parameter in frozen:
                parameter.requires_grad_(False)

    return {"ours": lambda epoch: our_step(net, trainer, augmented, clean, labels, epoch),
            "original": original_step}


def random_batch(batch: int, seconds: float, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(augmented, clean, labels 0..batch-1): noise crops of ``seconds``, drawn on ``device`` from seed 1."""
    generator = torch.Generator(device=device).manual_seed(1)
    samples = int(seconds * 16000)
    clean = torch.randn(batch, samples, generator=generator, device=device) * 0.1
    augmented = clean + torch.randn(batch, samples, generator=generator, device=device) * 0.01
    return augmented, clean, torch.arange(batch, device=device)


def timed(step: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``step`` takes (the device synchronised on both sides)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median(values: List[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def time_flows(flows: Dict[str, Callable[[], object]], steps: int, warmup: int,
               device: torch.device) -> Dict[str, List[float]]:
    """Seconds of each timed call per flow: ``warmup`` untimed calls of every flow, then ``steps`` timed
    rounds in alternating order, so that load bursts hit both flows alike."""
    for _ in range(warmup):
        for step in flows.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in flows}
    for round_index in range(steps):
        for name in sorted(flows, reverse=bool(round_index % 2)):
            times[name].append(timed(flows[name], device))
    return times


def build(shape: str, layers: int, folder: str, device: torch.device) -> Tuple[SpeakerNet, ModelTrainer]:
    cfg = TINY_WAVLM_CFG if shape == "tiny" else dataclasses.replace(BASE_PLUS_CFG, encoder_layers=layers)
    path = os.path.join(folder, f"{shape}.pt")
    save_random_wavlm_checkpoint(path, seed=0, **cfg.to_dict())
    n_out, heads, compression = HEADS[shape]
    args = options.parse_options("bench", [
        "--pretrained_model_path", path, "--model", "spk_encoder", "--nOut", n_out, "--head_nb", heads,
        "--compression_dim", compression, "--nClasses", "7500", "--weight_finetuning_reg", "0.01"])
    torch.manual_seed(0)
    net = SpeakerNet(**vars(args)).to(device).train()
    return net, ModelTrainer(net, **vars(args))


def gate_keeping(net: SpeakerNet, augmented: torch.Tensor, labels: torch.Tensor, kept: float) -> float:
    """The gate threshold (log CE) that keeps the fraction ``kept`` of this batch at the network's weights."""
    with torch.no_grad():
        logits = net.__L__.margin_logits(net.__S__(augmented).float(), labels)
        log_ce = torch.log(torch.nn.functional.cross_entropy(logits, labels, reduction="none")).sort().values
    count = round(kept * len(log_ce))
    if count == 0:
        return float(log_ce[0]) - 1.0
    return float(log_ce[count - 1]) if count == len(log_ce) else float(log_ce[count - 1] + log_ce[count]) / 2


def lc_step_profile(net: SpeakerNet, trainer: ModelTrainer, augmented: torch.Tensor, clean: torch.Tensor,
                    labels: torch.Tensor, epoch: int, steps: int) -> Dict[str, float]:
    """Median seconds of each part of our label-correction step, and of the whole-batch clean view it replaced."""
    parts: Dict[str, List[float]] = {name: [] for name in ("augmented forward", "clean view, dropped rows",
                                                           "clean view, whole batch (before)", "loss and backward",
                                                           "AdamW")}
    for _ in range(steps):
        trainer.optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        embeddings = net.__S__(augmented).float()
        parts["augmented forward"].append(time.perf_counter() - started)
        rows = net.__L__.clean_view_rows(embeddings.detach(), labels, epoch)
        started = time.perf_counter()
        clean_embeddings = net.clean_view(clean, rows, embeddings.shape[1])
        parts["clean view, dropped rows"].append(time.perf_counter() - started)
        started = time.perf_counter()
        net.clean_view(clean, None, embeddings.shape[1])
        parts["clean view, whole batch (before)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        loss, _, _ = net.__L__(embeddings, clean_embeddings, labels, epoch)
        distance = net.weight_distance()
        (loss / loss.detach() + net.weight_finetuning_reg * distance / (distance.detach() + REG_EPSILON)).backward()
        parts["loss and backward"].append(time.perf_counter() - started)
        started = time.perf_counter()
        trainer.optimizer.step()
        parts["AdamW"].append(time.perf_counter() - started)
    return {name: median(values) for name, values in parts.items()}


def bench(shape: str, args: argparse.Namespace, device: torch.device, folder: str) -> None:
    """Print utterances per second of both steps, and their ratio, before and with label correction."""
    net, trainer = build(shape, args.layers, folder, device)
    augmented, clean, labels = random_batch(args.batch, args.seconds, device)
    net.__L__.lgl_threshold = gate_keeping(net, augmented, labels, args.kept)
    flows = make_flows(net, trainer, augmented, clean, labels)
    for epoch in (1, net.__L__.lc_start_epoch):
        times = time_flows({name: functools.partial(step, epoch) for name, step in flows.items()}, args.steps,
                           args.warmup, device)
        ours, original_rate = (args.batch / median(times[name]) for name in ("ours", "original"))
        phase = "before LC" if epoch < net.__L__.lc_start_epoch else "with LC"
        print(f"{shape:9s} epoch {epoch:2d} ({phase:9s})  ours {ours:8.2f} utt/s  original-like "
              f"{original_rate:8.2f} utt/s  ratio {ours / original_rate:5.2f}x", flush=True)
    if args.profile and device.type == "cpu":
        profile = lc_step_profile(net, trainer, augmented, clean, labels, net.__L__.lc_start_epoch, args.steps)
        print(f"{shape:9s} label-correction step, median s: "
              + ", ".join(f"{name} {seconds:.2f}" for name, seconds in profile.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "base_plus"], choices=sorted(HEADS))
    parser.add_argument("--layers", type=int, default=12, help="transformer layers of the Base+-shaped model")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="crop length")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each flow (the median counts)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each flow first")
    parser.add_argument("--kept", type=float, default=0.75,
                        help="fraction of the batch the loss gate keeps (its threshold is set to keep it at the "
                             "start): ours embeds the clean view of the other rows only, the original of every row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", action="store_true",
                        help="also time each part of our label-correction step (CPU), and the whole-batch clean "
                             "view it no longer runs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch} x {args.seconds} s, "
          f"gate keeps {args.kept:.0%}, median of {args.steps} alternating timed steps per flow after "
          f"{args.warmup} warm-up", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.models:
            bench(shape, args, device, folder)


if __name__ == "__main__":
    main()
