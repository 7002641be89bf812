#!/usr/bin/env python
"""Self-supervised DINO training of an ECAPA-TDNN: the initial embeddings of the loop (docs/method.md §1 step 1).

Train (one process, or several under torchrun with --distributed):
    python trainDINO.py --config configs/dino_ecapa.yaml --train_list L --train_path P --musan_path M --rir_path R
    torchrun --nproc_per_node=N trainDINO.py --config configs/dino_ecapa.yaml ... --distributed
The list's labels are not read. Outputs under ``save_path``: ``model/model%09d.model`` (student,
teacher and centre) and ``model/state%09d.pt`` (optimizer, step, random states) every
``test_interval`` epochs; ``result/train_metrics.jsonl`` (one JSON record per epoch: loss, learning
rate, teacher momentum and temperature, teacher entropies, student-teacher KL, seconds,
utterances/s); ``config.yaml``. A run resumes from the newest checkpoint (training/run.py).

Embeddings for pseudo_labeling.py, from the teacher's backbone (DINO's convention), whole files:
    python trainDINO.py --config ... --generate_embeddings --embeddings_path emb.pt [--initial_model F]
Evaluation on a trial list, with the metrics, files and plots of trainSpeakerNet_Eval.py:
    python trainDINO.py --config ... --eval --test_list T --test_path P [--initial_model F]
Both use ``--initial_model``, else the newest checkpoint(s) of ``save_path/model``, and may run under
torchrun with --distributed (each process embeds a share of the files; scoring/evaluate.py).
"""
from __future__ import annotations

import argparse
import functools
import logging
from typing import Optional, Sequence

import torch
from torch import nn

from models.dino import DINOModel
from scoring.evaluate import check_counts, evaluate, generate_embeddings
from training.dino import DINO_OPTIONS, DINOTraining, check_options, load_teacher_backbone
from training.run import seed_everything, train
from utils.cli import run_cli
from utils.device import device_session, set_torch_threads
from utils.distributed import get_rank
from utils.errors import InputError
from utils.options import parse_options

logger = logging.getLogger("trainDINO")


def teacher_backbone_on(args: argparse.Namespace, device: torch.device, weights: str) -> nn.Module:
    return load_teacher_backbone(args, weights).to(device)


def main(argv: Optional[Sequence[str]] = None) -> Optional[DINOModel]:
    """Train (returns the model), or with --eval / --generate_embeddings use a checkpoint's teacher (returns None)."""
    args = parse_options("Train an ECAPA-TDNN speaker encoder with DINO, without labels; or embed / evaluate "
                         "with its teacher.", argv, DINO_OPTIONS)
    if args.eval and args.generate_embeddings:
        raise InputError("give at most one of --eval and --generate_embeddings")
    check_options(args)
    if args.eval or args.generate_embeddings:
        check_counts(args)
        set_torch_threads(args.threads, args.nDataLoaderThread)
    with device_session(args.device, args.distributed) as device:
        if args.eval or args.generate_embeddings:
            encoder_for = functools.partial(teacher_backbone_on, args, device)
            if args.eval:
                evaluate(args, device, encoder_for, model_kind="DINO teacher")
            else:
                generate_embeddings(args, device, encoder_for, model_kind="teacher")
            return None
        seed_everything(args.seed + get_rank())
        return train(DINOTraining(args, device))


if __name__ == "__main__":
    run_cli(main)
