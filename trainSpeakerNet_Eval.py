#!/usr/bin/env python
"""Evaluate checkpoints on a trial list, or embed a training list for the next pseudo-labelling round.

Evaluation (docs/method.md §1 step 6, §7):
    python trainSpeakerNet_Eval.py --config configs/wavlm_mhfa_dlg_lc_lmft.yaml --eval \\
        --test_list veri_test2.txt --test_path voxceleb1 [--initial_model F]
Evaluates ``--initial_model`` (ours or the original's layout), else the newest ``--num_checkpoints``
of ``save_path/model``; ``--average_checkpoints N`` evaluates the weight average of the newest N
instead. Writes into ``save_path/result``: ``scores_<checkpoint>_<list>.txt`` (``SCORE LABEL ENROLL
TEST`` per trial), ``det_<checkpoint>_<list>.png`` and ``hist_<checkpoint>_<list>.png``, and appends
one line per checkpoint to ``eval_results.txt`` and its figures to ``eval_<checkpoint>_<list>.json``.

Embedding (docs/method.md §1 step 4):
    python trainSpeakerNet_Eval.py --config ... --generate_embeddings --embeddings_path emb.pt
Every file of ``--train_list`` under ``--train_path``, whole utterance, one (1, nOut) float32
embedding per file keyed by its last three path parts: the input of ``pseudo_labeling.py``.
Weights: ``--initial_model``, else the newest checkpoint of ``save_path/model``. The original embeds in
training mode (dropout and layer drop active), which ``--embedding_mode train`` (the default) reproduces
with its random draws seeded by ``--seed``; ``--embedding_mode eval`` embeds in evaluation mode
(docs/method.md §10).

``--initial_model`` may be a speaker model file (scripts/export_model.py): it needs no
``--pretrained_model_path``. ``--score_format kaldi`` writes the scores as Kaldi's ``ENROLL TEST SCORE``.

Everything a run reads (lists, audio files, cohort, checkpoints) is checked before the model is built.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import torch

from dataio.datasets import CropSpec
from dataio.embedding_store import embedding_key, load_embeddings, save_embeddings
from dataio.lists import read_train_list
from dataio.trials import check_trial_files, check_trial_labels, read_trial_list
from models.speaker_file import is_speaker_model, load_speaker_model
from scoring import plots
from scoring.embedding import embed_files
from scoring.scoring import SECOND_P_TARGET, measure, score_trials, write_scores
from training.speaker_net import SpeakerNet
from utils import checkpoints
from utils.atomic import atomic_append_line, atomic_torch_save, check_writable
from utils.checkpoints import average_state_dicts, newest_checkpoint_paths
from utils.cli import run_cli
from utils.device import resolve_device
from utils.errors import InputError
from utils.options import parse_options
from utils.records import write_json

logger = logging.getLogger("trainSpeakerNet_Eval")

RESULTS_FILE = "eval_results.txt"


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


class EncoderLoader:
    """The encoder of a checkpoint: a speaker model file carries its own (and needs no --pretrained_model_path);
    a training checkpoint is loaded into one SpeakerNet, built on first use (the AAM weight is not needed)."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.net: Optional[SpeakerNet] = None

    def __call__(self, weights: str) -> torch.nn.Module:
        if is_speaker_model(weights):
            content = load_speaker_model(weights)
            ours = (self.args.eval_frames, self.args.num_eval, self.args.max_eval_samples)
            stored = content.protocol
            if ours != (stored.eval_frames, stored.num_eval, stored.max_eval_samples) or not stored.whole_file:
                logger.warning("%s was exported with the protocol %s; this evaluation uses its options: "
                               "eval_frames=%d, num_eval=%d, max_eval_samples=%d and the whole file", weights, stored,
                               *ours)
            logger.info("Loaded speaker model %s", weights)
            return content.encoder.to(self.device)
        if self.net is None:
            self.net = SpeakerNet(**vars(self.args)).to(self.device)
        checkpoints.load_weights(self.net, weights, strict_loss=False)
        logger.info("Loaded %s", weights)
        return self.net.__S__


def checkpoints_to_evaluate(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """``(name, path)`` of each checkpoint to evaluate, newest first; averages are written to save_path/model."""
    model_dir = os.path.join(args.save_path, "model")
    if args.average_checkpoints > 0:
        if args.initial_model:
            raise InputError("--average_checkpoints averages the newest checkpoints of save_path/model; "
                             "it cannot be combined with --initial_model")
        paths = newest_checkpoint_paths(model_dir, args.average_checkpoints)
        name = f"average_{stem(paths[0])}-{stem(paths[-1])}"
        path = os.path.join(model_dir, name + ".model")
        atomic_torch_save(average_state_dicts(paths), path)
        logger.info("Averaged %d checkpoints into %s: %s", len(paths), path, ", ".join(paths))
        return [(name, path)]
    if args.initial_model:
        if not os.path.isfile(args.initial_model):
            raise InputError(f"--initial_model {args.initial_model!r} does not exist")
        return [(stem(args.initial_model), args.initial_model)]
    found = checkpoints.list_checkpoints(model_dir)
    if not found:
        raise InputError(f"nothing to evaluate: no model%09d.model in {model_dir!r} and no --initial_model")
    return [(stem(path), path) for _, path in reversed(found[-args.num_checkpoints:])]


def load_cohort(args: argparse.Namespace) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(cohort for AS-norm or None, mean embedding to subtract or None), both from --cohort_embeddings."""
    if args.score_norm == "none" and not args.subtract_mean:
        return None, None
    if not args.cohort_embeddings:
        raise InputError("--score_norm asnorm and --subtract_mean need --cohort_embeddings (an embeddings file "
                         "of the training set, as --generate_embeddings writes)")
    _, cohort = load_embeddings(args.cohort_embeddings)
    if args.score_norm == "asnorm" and not 2 <= args.asnorm_top_k <= cohort.shape[0]:
        raise InputError(f"--asnorm_top_k {args.asnorm_top_k} must lie between 2 and the cohort size "
                         f"{cohort.shape[0]} of {args.cohort_embeddings!r}")
    mean = cohort.double().mean(dim=0) if args.subtract_mean else None
    return (cohort if args.score_norm == "asnorm" else None), mean


def score_norm_description(args: argparse.Namespace) -> str:
    parts = []
    if args.subtract_mean:
        parts.append(f"mean of {args.cohort_embeddings} subtracted")
    if args.score_norm == "asnorm":
        parts.append(f"AS-norm top {args.asnorm_top_k} of {args.cohort_embeddings}")
    return ", ".join(parts) or "none"


def run_eval(args: argparse.Namespace, device: torch.device) -> None:
    trials = read_trial_list(args.test_list)
    check_trial_labels(trials)
    check_trial_files(trials, args.test_path)
    result_dir = os.path.join(args.save_path, "result")
    check_writable(os.path.join(result_dir, RESULTS_FILE), "evaluation results")
    cohort, mean = load_cohort(args)
    selected = checkpoints_to_evaluate(args)
    files = trials.files()
    paths = [os.path.join(args.test_path, name) for name in files]
    list_name = stem(args.test_list)
    norm = score_norm_description(args)
    print(f"Trial list {args.test_list}: {len(trials)} trials over {len(files)} files"
          f"{'' if trials.has_labels else ' (no labels: scores only)'}; minDCF p_target "
          f"{args.dcf_p_target:g} and {SECOND_P_TARGET:g}; score norm {norm}", flush=True)
    load_encoder = EncoderLoader(args, device)
    for name, weights in selected:
        encoder = load_encoder(weights)
        embeddings = embed_files(encoder, paths, device, args.eval_batch_size,
                                 crops=CropSpec(args.eval_frames, args.num_eval),
                                 max_samples=args.max_eval_samples, num_workers=args.nDataLoaderThread,
                                 desc=f"Embedding with {name}")
        logger.info("%s: %d files in %.1f s (%.1f files/s, %d forwards)", name, len(files), embeddings.seconds,
                    len(files) / max(embeddings.seconds, 1e-9), embeddings.forwards)
        scores = score_trials(trials, files, embeddings.crops, embeddings.whole, mean=mean, cohort=cohort,
                              top_k=args.asnorm_top_k)
        tag = f"{name}_{list_name}"
        result = measure(scores, trials, name, args.dcf_p_target, args.dcf_c_miss, args.dcf_c_fa, norm)
        write_scores(os.path.join(result_dir, f"scores_{tag}.txt"), scores.fused, trials, args.score_format)
        det_plot = None
        if trials.labels is not None and args.plots:
            title = f"{name} on {list_name}"
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


def training_files(args: argparse.Namespace) -> Tuple[List[str], List[str]]:
    """(absolute paths, embedding keys) of the train list's files, each key once; missing files are an error."""
    _, relative, line_numbers = read_train_list(args.train_list)
    paths, keys, seen = [], [], set()
    for rel, number in zip(relative, line_numbers):
        path = os.path.join(args.train_path, rel)
        if not os.path.isfile(path):
            raise InputError(f"{args.train_list}:{number}: {path} does not exist (train_path {args.train_path!r})")
        key = embedding_key(path)
        if key in seen:
            logger.warning("%s:%d: %s is listed again; it is embedded once", args.train_list, number, key)
            continue
        seen.add(key)
        paths.append(path)
        keys.append(key)
    return paths, keys


def run_generate_embeddings(args: argparse.Namespace, device: torch.device) -> None:
    if not args.embeddings_path:
        raise InputError("--generate_embeddings needs --embeddings_path (the output file)")
    check_writable(args.embeddings_path, "--embeddings_path")
    paths, keys = training_files(args)
    weights = args.initial_model
    if not weights:
        newest = checkpoints.newest_checkpoint(os.path.join(args.save_path, "model"))
        if newest is None:
            raise InputError(f"no weights to embed with: give --initial_model or train into "
                             f"{os.path.join(args.save_path, 'model')!r} first")
        weights = newest[1]
    elif not os.path.isfile(weights):
        raise InputError(f"--initial_model {weights!r} does not exist")
    encoder = EncoderLoader(args, device)(weights)
    train_mode = args.embedding_mode == "train"
    if train_mode:
        torch.manual_seed(args.seed)  # dropout and layer drop draw from it: the same embeddings on every run
    embeddings = embed_files(encoder, paths, device, args.eval_batch_size, num_workers=args.nDataLoaderThread,
                             desc=f"Embedding the train list ({args.embedding_mode} mode)", train_mode=train_mode)
    save_embeddings({key: embeddings.whole[i:i + 1] for i, key in enumerate(keys)}, args.embeddings_path)
    print(f"Wrote {len(keys)} embeddings of size {embeddings.whole.shape[1]} from {weights} to "
          f"{args.embeddings_path} ({len(keys) / max(embeddings.seconds, 1e-9):.1f} files/s)", flush=True)


def check_counts(args: argparse.Namespace) -> None:
    """Counts that must be positive (or non-negative), checked before anything is read."""
    for name, lowest in (("num_checkpoints", 1), ("eval_batch_size", 1), ("num_eval", 1), ("eval_frames", 0),
                         ("max_eval_samples", 0), ("average_checkpoints", 0)):
        if getattr(args, name) < lowest:
            raise InputError(f"--{name} must be at least {lowest}, got {getattr(args, name)}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_options("Evaluate speaker-verification checkpoints or embed a training list.", argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.eval == args.generate_embeddings:
        raise InputError("give exactly one of --eval and --generate_embeddings")
    check_counts(args)
    if args.distributed:
        logger.warning("--distributed is ignored: evaluation and embedding run in one process")
    device = resolve_device(args.device, distributed=False)
    if args.eval:
        run_eval(args, device)
    else:
        run_generate_embeddings(args, device)


if __name__ == "__main__":
    run_cli(main)
