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
training mode (dropout and layer drop active), which ``--embedding_mode train`` (the default) reproduces,
each file's random draws seeded by ``--seed`` and its place in the list; ``--embedding_mode eval``
embeds in evaluation mode (docs/method.md §10).

``--initial_model`` may be a speaker model file (scripts/export_model.py): it needs no
``--pretrained_model_path``. For a training checkpoint the encoder is built from the options (``model``
and its shapes; of a pre-trained WavLM only its configuration is read) and takes the checkpoint's
``__S__.*`` weights. ``--score_format kaldi`` writes the scores as Kaldi's ``ENROLL TEST SCORE``.

Under torchrun with ``--distributed`` every process embeds its share of the files and the main
process scores and writes, with the same outputs as one process:
    torchrun --nproc_per_node=N trainSpeakerNet_Eval.py --config ... --generate_embeddings ... --distributed

Everything a run reads (lists, audio files, cohort, checkpoints) is checked before the model is built;
the work is done by scoring/evaluate.py.
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

import torch

from scoring.evaluate import check_counts, evaluate, generate_embeddings
from scoring.speaker_model import encoder_from_checkpoint, is_speaker_model, load_speaker_model
from utils.cli import run_cli
from utils.device import device_session, set_torch_threads
from utils.errors import InputError
from utils.options import EVAL_OPTIONS, config_options, parse_options

logger = logging.getLogger("trainSpeakerNet_Eval")


class EncoderLoader:
    """The encoder of a checkpoint: a speaker model file carries its own; a training checkpoint's is built from
    the options (``model`` and its shapes; of a pre-trained WavLM only the configuration is read)."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device

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
        encoder = encoder_from_checkpoint(weights, self.args)
        logger.info("Loaded %s", weights)
        return encoder.to(self.device)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_options("Evaluate speaker-verification checkpoints or embed a training list.", argv,
                         EVAL_OPTIONS, config_options(EVAL_OPTIONS))
    if args.eval == args.generate_embeddings:
        raise InputError("give exactly one of --eval and --generate_embeddings")
    check_counts(args)
    set_torch_threads(args.threads, args.nDataLoaderThread)
    with device_session(args.device, args.distributed) as device:
        encoder_for = EncoderLoader(args, device)
        if args.eval:
            evaluate(args, device, encoder_for)
        else:
            generate_embeddings(args, device, encoder_for, train_mode=args.embedding_mode == "train")


if __name__ == "__main__":
    run_cli(main)
