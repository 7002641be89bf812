#!/usr/bin/env python
"""Fine-tune the speaker encoder on a (pseudo-)labelled train list (docs/method.md §1 step 3, §5).

One process:   python trainSpeakerNet.py --config configs/wavlm_mhfa_dlg_lc.yaml --train_list PL_FILE
Several:       torchrun --nproc_per_node=N trainSpeakerNet.py --config ... --train_list PL_FILE --distributed

Outputs under ``save_path``: ``model/model%09d.model`` (weights, original key layout) and
``model/state%09d.pt`` (optimizer, scheduler, gate threshold, random states) every ``test_interval``
epochs; ``loss_vals/epoch_N.txt`` (each sample's CE and path); ``result/scores.txt`` (one line per
epoch) and ``result/train_metrics.jsonl`` (the same epoch as a JSON record); ``config.yaml`` (the
resolved options). Where a run starts (newest checkpoint, ``--initial_model``, or the encoder's initial
weights: the pre-trained WavLM) is described in training/run.py.
"""
from __future__ import annotations

from typing import Optional, Sequence

from training.run import seed_everything, train
from training.speaker_net import SpeakerNet
from training.speaker_trainer import SpeakerTraining, check_options
from utils.cli import run_cli
from utils.device import device_session
from utils.distributed import get_rank
from utils.errors import InputError
from utils.options import TRAIN_OPTIONS, config_options, parse_options


def main(argv: Optional[Sequence[str]] = None) -> SpeakerNet:
    """Parse the options, join the process group under ``--distributed``, train; return the network."""
    args = parse_options("Fine-tune a speaker encoder (WavLM + MHFA, or ECAPA-TDNN) on a (pseudo-)labelled list "
                         "with AAM-softmax, the loss gate and label correction.", argv, TRAIN_OPTIONS,
                         config_options(TRAIN_OPTIONS))
    if args.eval or args.generate_embeddings:
        raise InputError("trainSpeakerNet.py only trains; for --eval or --generate_embeddings run "
                         "trainSpeakerNet_Eval.py with the same options")
    check_options(args)
    with device_session(args.device, args.distributed) as device:
        seed_everything(args.seed + get_rank())
        return train(SpeakerTraining(args, device))


if __name__ == "__main__":
    run_cli(main)
