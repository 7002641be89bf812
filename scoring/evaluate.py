"""Evaluating checkpoints on a trial list and embedding a training list: what ``--eval`` and
``--generate_embeddings`` do, for any encoder (the speaker network of trainSpeakerNet_Eval.py, the DINO
teacher of trainDINO.py).

``encoder_for(path)`` turns a checkpoint path into the encoder to embed with. Under torchrun with
``--distributed`` every process embeds its share of the files (:func:`scoring.embedding.embed_across_processes`)
and the main process scores, measures and writes; the outputs equal those of one process.

Evaluation writes into ``save_path/result``: ``scores_<checkpoint>_<list>.txt``, ``det_...png`` and
``hist_...png``, one line per checkpoint in ``eval_results.txt`` and its figures in
``eval_<checkpoint>_<list>.json``. Everything a run reads is checked before the first embedding.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from dataio.datasets import CropSpec
from dataio.embedding_store import load_embeddings, save_embeddings
from dataio.lists import listed_files
from dataio.trials import TrialList, check_trial_files, check_trial_labels, read_trial_list
from scoring import plots
from scoring.embedding import embed_across_processes
from scoring.scoring import SECOND_P_TARGET, EvalResult, TrialScores, measure, score_trials, write_scores
from utils import checkpoints
from utils.atomic import atomic_append_line, atomic_torch_save, check_distinct, check_writable
from utils.distributed import barrier, is_main_process
from utils.errors import InputError
from utils.options import check_at_least
from utils.records import write_json

logger = logging.getLogger(__name__)

RESULTS_FILE = "eval_results.txt"
COUNTS = {"num_checkpoints": 1, "eval_batch_size": 1, "num_eval": 1, "eval_frames": 0, "max_eval_samples": 0,
          "average_checkpoints": 0, "nDataLoaderThread": 0, "threads": 0}
"""Options that must be at least this, checked before anything is read."""

EncoderFor = Callable[[str], nn.Module]


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def check_counts(args: argparse.Namespace) -> None:
    check_at_least(args, COUNTS)


def select_checkpoints(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """``(name, path)`` of each checkpoint to use, newest first: ``--initial_model``, else the weight average of
    the newest ``--average_checkpoints`` (written to save_path/model by the main process), else the newest
    ``--num_checkpoints`` of save_path/model."""
    model_dir = os.path.join(args.save_path, "model")
    if args.average_checkpoints > 0:
        if args.initial_model:
            raise InputError("--average_checkpoints averages the newest checkpoints of save_path/model; "
                             "it cannot be combined with --initial_model")
        paths = checkpoints.newest_checkpoint_paths(model_dir, args.average_checkpoints)
        name = f"average_{stem(paths[0])}-{stem(paths[-1])}"
        path = os.path.join(model_dir, name + ".model")
        if is_main_process():
            atomic_torch_save(checkpoints.average_state_dicts(paths), path)
            logger.info("Averaged %d checkpoints into %s: %s", len(paths), path, ", ".join(paths))
        barrier()
        return [(name, path)]
    if args.initial_model:
        if not os.path.isfile(args.initial_model):
            raise InputError(f"--initial_model {args.initial_model!r} does not exist")
        return [(stem(args.initial_model), args.initial_model)]
    found = checkpoints.list_checkpoints(model_dir)
    if not found:
        raise InputError(f"no checkpoint to use: give --initial_model or train into {model_dir!r} first")
    return [(stem(path), path) for _, path in reversed(found[-args.num_checkpoints:])]


def read_inputs(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """``(option, path)`` of every file the checkpoint choice and the model building may read, for
    :func:`utils.atomic.check_distinct`: the config, the pre-trained model, and ``--initial_model`` or else
    every checkpoint of save_path/model."""
    files = [("--config", args.config), ("--pretrained_model_path", getattr(args, "pretrained_model_path", None))]
    if args.initial_model:
        return [*files, ("--initial_model", args.initial_model)]
    model_dir = os.path.join(args.save_path, "model")
    return [*files, *((f"checkpoint {epoch} of --save_path", path)
                      for epoch, path in checkpoints.list_checkpoints(model_dir))]


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


def plot_title(save_path: str, checkpoint: str, list_name: str, model_kind: str = "") -> str:
    """``RUN: CHECKPOINT (KIND) on LIST``, RUN being save_path's last folder (``round1``, ``lmft``, ...): the
    checkpoint's name alone is the same in every round of run_rounds.py."""
    run = os.path.basename(os.path.normpath(os.path.abspath(save_path)))
    return f"{run}: {checkpoint}{f' ({model_kind})' if model_kind else ''} on {list_name}"


def evaluate(args: argparse.Namespace, device: torch.device, encoder_for: EncoderFor, model_kind: str = "") -> None:
    """Score ``--test_list`` with each selected checkpoint; ``model_kind`` (e.g. "DINO teacher") titles the plots."""
    trials = read_trial_list(args.test_list)
    check_trial_labels(trials)
    check_trial_files(trials, args.test_path)
    result_dir = os.path.join(args.save_path, "result")
    check_writable(os.path.join(result_dir, RESULTS_FILE), "evaluation results")
    cohort, mean = load_cohort(args)
    selected = select_checkpoints(args)
    files = trials.files()
    paths = [os.path.join(args.test_path, name) for name in files]
    norm = score_norm_description(args)
    if is_main_process():
        print(f"Trial list {args.test_list}: {len(trials)} trials over {len(files)} files"
              f"{'' if trials.has_labels else ' (no labels: scores only)'}; minDCF p_target "
              f"{args.dcf_p_target:g} and {SECOND_P_TARGET:g}; score norm {norm}", flush=True)
    for name, weights in selected:
        embeddings = embed_across_processes(encoder_for(weights), paths, device, args.eval_batch_size,
                                            crops=CropSpec(args.eval_frames, args.num_eval),
                                            max_samples=args.max_eval_samples, num_workers=args.nDataLoaderThread,
                                            desc=f"Embedding with {name}")
        if embeddings is None:  # another process scores and writes
            continue
        logger.info("%s: %d files in %.1f s (%.1f files/s, %d forwards)", name, len(files), embeddings.seconds,
                    len(files) / max(embeddings.seconds, 1e-9), embeddings.forwards)
        scores = score_trials(trials, files, embeddings.crops, embeddings.whole, mean=mean, cohort=cohort,
                              top_k=args.asnorm_top_k)
        report_scores(args, result_dir, name, weights, trials, scores, norm, model_kind)


def report_scores(args: argparse.Namespace, result_dir: str, name: str, source: str, trials: TrialList,
                  scores: TrialScores, norm: str = "none", model_kind: str = "") -> EvalResult:
    """Measure and write one model's scores of a trial list: the scores file, the DET and histogram plots (with
    ``args.plots``), a line in ``eval_results.txt`` and the record ``eval_<name>_<list>.json``.

    ``args`` gives the minDCF costs, the score format and ``plots``; ``source`` is the checkpoint (or file)
    the scores come from; ``model_kind`` and the run's folder name title the plots.
    """
    tag = f"{name}_{stem(trials.path)}"
    result = measure(scores, trials, name, args.dcf_p_target, args.dcf_c_miss, args.dcf_c_fa, norm)
    write_scores(os.path.join(result_dir, f"scores_{tag}.txt"), scores.fused, trials, args.score_format)
    det_plot = None
    if trials.labels is not None and args.plots:
        title = plot_title(os.path.dirname(os.path.abspath(result_dir)), name, stem(trials.path), model_kind)
        det_plot = plots.plot_det(scores.fused, trials.labels, os.path.join(result_dir, f"det_{tag}.png"), title,
                                  p_targets=tuple(result.min_dcf))
        plots.plot_score_histograms(scores.fused, trials.labels, os.path.join(result_dir, f"hist_{tag}.png"), title)
    line = result.line()
    print(line, flush=True)
    atomic_append_line(os.path.join(result_dir, RESULTS_FILE), line)
    write_json(os.path.join(result_dir, f"eval_{tag}.json"),
               dict(dataclasses.asdict(result), checkpoint_path=source, scores_file=f"scores_{tag}.txt",
                    det_plot=det_plot, finished=time.strftime("%Y-%m-%d %H:%M:%S")))
    return result


def generate_embeddings(args: argparse.Namespace, device: torch.device, encoder_for: EncoderFor,
                        train_mode: bool = False, model_kind: str = "") -> None:
    """Embed every file of ``--train_list`` whole into ``--embeddings_path`` with the first selected checkpoint.

    ``train_mode`` embeds with dropout and layer drop on, each file with its own draws seeded from
    ``--seed`` and its place in the list (the original's ``--generate_embeddings``, docs/method.md §10).
    """
    if not args.embeddings_path:
        raise InputError("--generate_embeddings needs --embeddings_path (the output file)")
    check_distinct([("--embeddings_path", args.embeddings_path)], [("--train_list", args.train_list),
                                                                   *read_inputs(args)])
    check_writable(args.embeddings_path, "--embeddings_path")
    paths, keys = listed_files(args.train_list, args.train_path)
    _, weights = select_checkpoints(args)[0]
    mode = "train" if train_mode else "eval"
    encoder = encoder_for(weights)
    if train_mode and any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in encoder.modules()):
        raise InputError("--embedding_mode train embeds with the network in training mode, where batch norms "
                         "use each file's own statistics and change the model: this encoder has batch norms; "
                         "use --embedding_mode eval")
    embeddings = embed_across_processes(encoder, paths, device, args.eval_batch_size,
                                        num_workers=args.nDataLoaderThread,
                                        desc=f"Embedding the train list ({mode} mode)",
                                        train_seed=args.seed if train_mode else None)
    if embeddings is None:
        return
    save_embeddings({key: embeddings.whole[i:i + 1] for i, key in enumerate(keys)}, args.embeddings_path)
    source = f"the {model_kind} of {weights}" if model_kind else weights
    print(f"Wrote {len(keys)} embeddings of size {embeddings.whole.shape[1]} from {source} to "
          f"{args.embeddings_path} ({len(keys) / max(embeddings.seconds, 1e-9):.1f} files/s)", flush=True)
