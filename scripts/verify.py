"""Score speaker-verification trials with a speaker model file: one pair, or a whole trial list.

    python scripts/verify.py speaker.pt enroll.wav test.wav
    python scripts/verify.py speaker.pt --trials veri_test2.txt --test_path data/voxceleb1 --scores scores.txt

The score is the evaluator's (docs/method.md §7: crops and whole file, evaluation mode), so for the same
trial it equals the line ``trainSpeakerNet_Eval.py --eval`` writes. When the model carries an EER
threshold (or ``--threshold`` is given) each score gets a decision: same speaker when the score is at
least the threshold. ``--trials`` reads every format dataio/trials.py reads (``LABEL ENROLL TEST``,
Kaldi's ``ENROLL TEST target|nontarget``, ``ENROLL TEST``) and writes the scores in ``--score_format``;
a labelled list also gets its EER and minDCF.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

from dataio.trials import TrialList, check_trial_files, read_trial_list
from scoring.metrics import compute_eer_mindcf
from scoring.scoring import write_scores
from scoring.speaker_model import SpeakerModel
from scripts.embed import RUN_OPTIONS, start_run
from utils.atomic import check_distinct, check_writable
from utils.cli import run_cli
from utils.device import resolve_device
from utils.errors import InputError
from utils.options import EVAL, IO, OPTIONS_BY_NAME, Option, optional_str, parse_options

VERIFY_OPTIONS = [
    Option("model", str, None, "speaker model file (scripts/export_model.py)", IO, positional=True),
    Option("files", str, None, "two audio files to compare (or none, with --trials)", IO, positional=True,
           nargs="*"),
    Option("trials", optional_str, None, "score this trial list instead (paths relative to --test_path)", IO),
    Option("test_path", str, ".", "folder the trial list's paths are relative to", IO),
    Option("scores", optional_str, None, "--trials: file to write the scores to", IO),
    dataclasses.replace(OPTIONS_BY_NAME["score_format"],
                        help="'original' = SCORE [LABEL] ENROLL TEST lines, 'kaldi' = ENROLL TEST SCORE lines"),
    Option("threshold", float, None, "decide with this threshold instead of the model's", EVAL),
    *RUN_OPTIONS,
]


def decision(threshold: Optional[float], score: float) -> str:
    if threshold is None:
        return "no threshold in the model (give --threshold): no decision"
    if score >= threshold:
        return f"same speaker (score >= threshold {threshold:.6f})"
    return f"different speakers (score < threshold {threshold:.6f})"


def verify_pair(model: SpeakerModel, args: argparse.Namespace, threshold: Optional[float]) -> float:
    enroll, test = args.files
    vectors = model.embed_files([enroll, test], args.eval_batch_size, args.nDataLoaderThread)
    score = float(vectors[0] @ vectors[1])
    print(f"{enroll} {test} {score:.8f}" if args.score_format == "kaldi" else f"{score:.8f} {enroll} {test}",
          flush=True)
    print(decision(threshold, score), flush=True)
    return score


def verify_trials(model: SpeakerModel, args: argparse.Namespace, threshold: Optional[float]) -> np.ndarray:
    trials: TrialList = read_trial_list(args.trials)
    check_trial_files(trials, args.test_path)
    scores = model.score_trials(trials, args.test_path, args.eval_batch_size, args.nDataLoaderThread)
    write_scores(args.scores, scores, trials, args.score_format)
    print(f"Wrote {len(trials)} scores of {args.trials} to {args.scores} ({args.score_format} format)", flush=True)
    if trials.labels is not None and trials.labels.min() != trials.labels.max():
        figures = compute_eer_mindcf(scores, trials.labels)
        print(f"EER {figures['eer']:.4f}% at threshold {figures['eer_threshold']:.6f}; "
              + ", ".join(f"minDCF(p_target={p:g}) {v:.5f}" for p, v in figures["min_dcf"].items()), flush=True)
    if threshold is not None:
        print(f"{int((scores >= threshold).sum())} of {len(trials)} trials accepted as the same speaker at "
              f"threshold {threshold:.6f}", flush=True)
    return scores


def main(argv: Optional[Sequence[str]] = None) -> np.ndarray:
    args = parse_options("Score verification trials with a speaker model file.", argv, VERIFY_OPTIONS, accepted=())
    start_run(args)
    files = args.files or []
    if bool(args.trials) == bool(files) or (files and len(files) != 2):
        raise InputError("give two audio files, or --trials LIST (not both)")
    if args.trials and not args.scores:
        raise InputError("--trials needs --scores (the file to write the scores to)")
    for path in files:
        if not os.path.isfile(path):
            raise InputError(f"audio file {path} does not exist")
    if args.scores:
        check_distinct([("--scores", args.scores)],
                       [("model", args.model), ("--trials", args.trials), ("--config", args.config)])
        check_writable(args.scores, "--scores")
    model = SpeakerModel.load(args.model, resolve_device(args.device))
    threshold = model.threshold if args.threshold is None else args.threshold
    if args.trials:
        return verify_trials(model, args, threshold)
    return np.array([verify_pair(model, args, threshold)])


if __name__ == "__main__":
    run_cli(main)
