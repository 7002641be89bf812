"""Score a trial list with an embeddings file: cosine similarity, optionally after an LDA fitted on labelled embeddings.

    python scripts/score_embeddings.py held_out.pt --trials trials.txt --save_path exp/dino_cosine
    python scripts/score_embeddings.py held_out.pt --trials trials.txt --save_path exp/dino_lda \\
        --lda_embeddings train.pt --lda_labels round1/pseudo_labels.txt

The embeddings file is the project's (``--generate_embeddings``, ``bootstrap_embeddings.py``, ``embed.py``):
one vector per file, keyed by the last three parts of its path, which is how each trial's files are
found. With ``--lda_embeddings`` and ``--lda_labels`` (a ``LABEL PATH`` list, e.g. pseudo-labels, whose
paths' keys are in the embeddings file), a linear discriminant analysis is fitted on those embeddings and
both sides of every trial are projected by it before the cosine: how far a linear map learned from the
labels takes the embeddings, without training a network. The results are written as the evaluator
writes them (``save_path/result``: the scores file, ``eval_<name>_<list>.json``, a line in
``eval_results.txt`` and, with ``--plots``, the DET plot).
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from dataio.embedding_store import embedding_key, load_embeddings
from dataio.lists import read_train_list
from dataio.trials import check_trial_labels, read_trial_list
from scoring.evaluate import report_scores
from scoring.scoring import EvalResult, score_trials
from utils.atomic import check_writable
from utils.cli import run_cli
from utils.errors import InputError
from utils.options import EVAL, IO, OPTIONS_BY_NAME, Option, integer, optional_str, parse_options

SCORE_OPTIONS = [
    Option("embeddings", str, None, "embeddings file holding every file of the trial list", IO, positional=True),
    Option("trials", str, None, "trial list: LABEL ENROLL TEST per line", IO),
    Option("save_path", str, None, "folder of the results (written into save_path/result)", IO),
    Option("name", str, "embeddings", "name of the scored model in the result files", IO),
    Option("lda_embeddings", optional_str, None, "fit an LDA on these embeddings first", EVAL),
    Option("lda_labels", optional_str, None, "LABEL PATH list giving the labels of --lda_embeddings", EVAL),
    Option("lda_dim", integer, 0, "LDA output dimension; 0 = labels - 1, at most the embedding size", EVAL),
    *(OPTIONS_BY_NAME[name] for name in ("dcf_p_target", "dcf_c_miss", "dcf_c_fa", "score_format", "plots")),
]


def rows_for(keys: Sequence[str], matrix: torch.Tensor, wanted: Sequence[str], source: str) -> np.ndarray:
    """The embedding of each key of ``wanted``, in order; a missing one is an error naming it."""
    index = {key: i for i, key in enumerate(keys)}
    missing = [key for key in wanted if key not in index]
    if missing:
        raise InputError(f"{source}: no embedding for {len(missing)} file(s), e.g. {missing[0]!r} (keys are the "
                         "last three parts of each path)")
    return matrix[[index[key] for key in wanted]].double().numpy()


def fit_lda(embeddings: str, labels: str, dim: int) -> LinearDiscriminantAnalysis:
    """An LDA fitted on the embeddings of the files of a ``LABEL PATH`` list, with the list's labels."""
    names, paths, _ = read_train_list(labels)
    if len(set(names)) < 2:
        raise InputError(f"{labels}: an LDA needs at least 2 labels, found {len(set(names))}")
    keys, matrix = load_embeddings(embeddings)
    features = rows_for(keys, matrix, [embedding_key(path) for path in paths], embeddings)
    components = min(len(set(names)) - 1, features.shape[1])
    if dim > components:
        raise InputError(f"--lda_dim {dim} exceeds what {len(set(names))} labels and {features.shape[1]} "
                         f"dimensions allow ({components})")
    return LinearDiscriminantAnalysis(n_components=dim or components).fit(features, names)


def score(args: argparse.Namespace) -> EvalResult:
    if bool(args.lda_embeddings) != bool(args.lda_labels):
        raise InputError("give both --lda_embeddings and --lda_labels, or neither")
    if not args.trials or not args.save_path:
        raise InputError("--trials and --save_path are required")
    result_dir = os.path.join(args.save_path, "result")
    check_writable(os.path.join(result_dir, "eval_results.txt"), "--save_path")
    trials = read_trial_list(args.trials)
    check_trial_labels(trials)
    files = trials.files()
    keys, matrix = load_embeddings(args.embeddings)
    vectors = rows_for(keys, matrix, [embedding_key(name) for name in files], args.embeddings)
    if args.lda_embeddings:
        vectors = fit_lda(args.lda_embeddings, args.lda_labels, args.lda_dim).transform(vectors)
    whole = torch.from_numpy(np.ascontiguousarray(vectors))
    scores = score_trials(trials, files, whole[:, None], whole)  # one view: the fused score is the cosine
    os.makedirs(result_dir, exist_ok=True)
    return report_scores(args, result_dir, args.name, args.embeddings, trials, scores,
                         norm="LDA on " + args.lda_labels if args.lda_embeddings else "none")


def main(argv: Optional[Sequence[str]] = None) -> EvalResult:
    return score(parse_options(__doc__.split("\n")[0], argv, SCORE_OPTIONS))


if __name__ == "__main__":
    run_cli(main)
