#!/usr/bin/env python
"""Self-supervised DINO training of an ECAPA-TDNN: the initial embeddings of the loop (docs/method.md §1 step 1).

Train (one process, or several under torchrun with --distributed):
    python trainDINO.py --config configs/dino_ecapa.yaml --train_list L --train_path P --musan_path M --rir_path R
    torchrun --nproc_per_node=N trainDINO.py --config configs/dino_ecapa.yaml ... --distributed
The list's labels are not read. Outputs under ``save_path``: ``model/model%09d.model`` (student,
teacher and centre) and ``model/state%09d.pt`` (optimizer, step, random states) every
``test_interval`` epochs; ``result/train_metrics.jsonl`` (one JSON record per epoch: loss, learning
rate, teacher momentum and temperature, teacher entropies, student-teacher KL, seconds,
utterances/s); ``config.yaml``. A run resumes from the newest checkpoint (training/dino.py).

Embeddings for pseudo_labeling.py, from the teacher's backbone (DINO's convention), whole files:
    python trainDINO.py --config ... --generate_embeddings --embeddings_path emb.pt [--initial_model F]
Evaluation on a trial list, with the metrics, files and plots of trainSpeakerNet_Eval.py:
    python trainDINO.py --config ... --eval --test_list T --test_path P [--initial_model F]
Both use ``--initial_model``, else the newest checkpoint(s) of ``save_path/model``.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Optional, Sequence

import torch

from dataio.datasets import CropSpec
from dataio.embedding_store import save_embeddings
from dataio.trials import check_trial_files, read_trial_list
from scoring import plots
from scoring.embedding import embed_files
from scoring.scoring import measure, score_trials, write_scores
from training.dino import DINO_OPTIONS, DINOModel, load_teacher_backbone, train
from training.loop import seed_everything
from trainSpeakerNet_Eval import RESULTS_FILE, check_counts, checkpoints_to_evaluate, stem, training_files
from utils.atomic import atomic_append_line
from utils.cli import run_cli
from utils.device import resolve_device
from utils.distributed import cleanup, get_rank, init_distributed, is_main_process
from utils.errors import InputError
from utils.options import parse_options
from utils.records import write_json

logger = logging.getLogger("trainDINO")


def run_eval(args: argparse.Namespace, device: torch.device) -> None:
    """Score the trial list with each selected checkpoint's teacher backbone; results into save_path/result."""
    trials = read_trial_list(args.test_list)
    check_trial_files(trials, args.test_path)
    selected = checkpoints_to_evaluate(args)
    result_dir = os.path.join(args.save_path, "result")
    os.makedirs(result_dir, exist_ok=True)
    files = trials.files()
    paths = [os.path.join(args.test_path, name) for name in files]
    list_name = stem(args.test_list)
    for name, weights in selected:
        encoder = load_teacher_backbone(args, weights).to(device)
        embeddings = embed_files(encoder, paths, device, args.eval_batch_size,
                                 crops=CropSpec(args.eval_frames, args.num_eval), max_samples=args.max_eval_samples,
                                 num_workers=args.nDataLoaderThread, desc=f"Embedding with {name}")
        scores = score_trials(trials, files, embeddings.crops, embeddings.whole)
        tag = f"{name}_{list_name}"
        write_scores(os.path.join(result_dir, f"scores_{tag}.txt"), scores.fused, trials)
        result = measure(scores, trials, name, args.dcf_p_target, args.dcf_c_miss, args.dcf_c_fa)
        det_plot = None
        if trials.labels is not None and args.plots:
            title = f"{name} (DINO teacher) on {list_name}"
            det_plot = plots.plot_det(scores.fused, trials.labels, os.path.join(result_dir, f"det_{tag}.png"), title,
                                      p_targets=tuple(result.min_dcf))
            plots.plot_score_histograms(scores.fused, trials.labels, os.path.join(result_dir, f"hist_{tag}.png"),
                                        title)
        line = result.line()
        print(line, flush=True)
        atomic_append_line(os.path.join(result_dir, RESULTS_FILE), line)
        write_json(os.path.join(result_dir, f"eval_{tag}.json"),
                   dict(dataclasses.asdict(result), checkpoint_path=weights, scores_file=f"scores_{tag}.txt",
                        det_plot=det_plot, finished=time.strftime("%Y-%m-%d %H:%M:%S")))


def run_generate_embeddings(args: argparse.Namespace, device: torch.device) -> None:
    """Embed every file of the train list, whole, with the newest (or given) checkpoint's teacher backbone."""
    if not args.embeddings_path:
        raise InputError("--generate_embeddings needs --embeddings_path (the output file)")
    paths, keys = training_files(args)
    name, weights = checkpoints_to_evaluate(args)[0]
    encoder = load_teacher_backbone(args, weights).to(device)
    embeddings = embed_files(encoder, paths, device, args.eval_batch_size, num_workers=args.nDataLoaderThread,
                             desc="Embedding the train list")
    save_embeddings({key: embeddings.whole[i:i + 1] for i, key in enumerate(keys)}, args.embeddings_path)
    print(f"Wrote {len(keys)} embeddings of size {embeddings.whole.shape[1]} from the teacher of {weights} to "
          f"{args.embeddings_path} ({len(keys) / max(embeddings.seconds, 1e-9):.1f} files/s)", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> Optional[DINOModel]:
    """Train (returns the model), or with --eval / --generate_embeddings use a checkpoint's teacher (returns None)."""
    args = parse_options("Train an ECAPA-TDNN speaker encoder with DINO, without labels; or embed / evaluate "
                         "with its teacher.", argv, DINO_OPTIONS)
    if args.eval and args.generate_embeddings:
        raise InputError("give at most one of --eval and --generate_embeddings")
    if args.eval or args.generate_embeddings:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
        check_counts(args)
        if args.distributed:
            logger.warning("--distributed is ignored: evaluation and embedding run in one process")
        device = resolve_device(args.device, distributed=False)
        (run_eval if args.eval else run_generate_embeddings)(args, device)
        return None
    device = resolve_device(args.device, args.distributed)
    if args.distributed:
        init_distributed(device.type)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format=f"%(asctime)s [rank {get_rank()}] %(message)s", stream=sys.stdout)
    seed_everything(args.seed + get_rank())
    try:
        return train(args, device)
    finally:
        cleanup()


if __name__ == "__main__":
    run_cli(main)
