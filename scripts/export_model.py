"""Make a self-contained speaker model file (and TorchScript / ONNX copies) from a training checkpoint.

    python scripts/export_model.py --config configs/wavlm_mhfa_dlg_lc_lmft.yaml --initial_model model000000018.model \\
        --pretrained_model_path WavLM-Base+.pt --output speaker.pt [--eval_json eval_X_Y.json | --threshold T] \\
        [--onnx speaker.onnx] [--torchscript speaker.ts]

The checkpoint is ``--initial_model`` (ours or the original's layout) or else the newest of
``save_path/model`` (with ``--average_checkpoints N``, the average of the newest N, as the evaluator
chooses: scoring/evaluate.py). The encoder is built from the options (``model`` and its shapes, as the
training config gives them); for WavLM, ``--pretrained_model_path`` only gives its configuration (no
weights are read from it). The evaluation settings stored are the options' ``eval_frames``, ``num_eval``
and ``max_eval_samples``: give the config the model was evaluated with. The EER threshold comes from an
evaluation record of trainSpeakerNet_Eval.py (``--eval_json``) or ``--threshold``. ``--initial_model``
may also be a speaker model file, e.g. to write only its ONNX copy. See scoring/speaker_model.py for the
file's content and scripts/embed.py / scripts/verify.py for its use.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Optional, Sequence, Tuple

from dataio.audio import SAMPLE_RATE
from models.encoder import SpeakerEncoder
from models.export import export_onnx, export_torchscript
from scoring.evaluate import check_counts, read_inputs, select_checkpoints
from scoring.speaker_model import (
    EvalProtocol,
    encoder_from_checkpoint,
    is_speaker_model,
    load_speaker_model,
    save_speaker_model,
)
from utils.atomic import check_distinct, check_writable
from utils.cli import run_cli
from utils.errors import InputError
from utils.options import (
    MODEL,
    OPTIONS_BY_NAME,
    Option,
    config_options,
    optional_str,
    parse_options,
    str2bool,
)
from utils.records import read_json

OUTPUT, CHECKPOINT, PROTOCOL, THRESHOLD = "output", "checkpoint", "evaluation protocol stored", "threshold stored"
EXPORT_OPTIONS = [
    Option("output", optional_str, None, "speaker model file to write", OUTPUT),
    Option("onnx", optional_str, None, "also write the embedding network as ONNX to this file", OUTPUT),
    Option("torchscript", optional_str, None, "also write the embedding network as TorchScript to this file",
           OUTPUT),
    dataclasses.replace(OPTIONS_BY_NAME["initial_model"], group=CHECKPOINT,
                        help="checkpoint to export (ours or the original's layout) or a speaker model file; "
                             "default: the newest of save_path/model"),
    dataclasses.replace(OPTIONS_BY_NAME["save_path"], group=CHECKPOINT),
    dataclasses.replace(OPTIONS_BY_NAME["average_checkpoints"], group=CHECKPOINT,
                        help="export the weight average of the newest N checkpoints of save_path/model"),
    *(option for option in OPTIONS_BY_NAME.values() if option.group == MODEL),
    *(dataclasses.replace(OPTIONS_BY_NAME[name], group=PROTOCOL)
      for name in ("eval_frames", "num_eval", "max_eval_samples")),
    Option("whole_file", str2bool, True, "average the whole-file score in, as the evaluator does", PROTOCOL),
    Option("eval_json", optional_str, None,
           "the EER threshold of this evaluation record (save_path/result/eval_<checkpoint>_<list>.json)", THRESHOLD),
    Option("threshold", float, None, "this score threshold instead", THRESHOLD),
]


def threshold_from(args: argparse.Namespace, checkpoint: str) -> Tuple[Optional[float], Optional[str]]:
    """(threshold, where it comes from) from --threshold or --eval_json, or (None, None)."""
    if args.threshold is not None and args.eval_json:
        raise InputError("give --threshold or --eval_json, not both")
    if args.threshold is not None:
        return args.threshold, "--threshold"
    if not args.eval_json:
        return None, None
    record = read_json(args.eval_json)
    if record.get("eer_threshold") is None:
        raise InputError(f"{args.eval_json}: no 'eer_threshold' (a record of an unlabelled list, or written before "
                         "thresholds were recorded: evaluate again, or give --threshold)")
    if record.get("score_norm", "none") != "none":
        raise InputError(f"{args.eval_json}: its threshold is on normalised scores ({record['score_norm']}); the "
                         "speaker model scores without normalisation")
    if os.path.realpath(record.get("checkpoint_path", "")) != os.path.realpath(checkpoint):
        raise InputError(f"{args.eval_json} evaluated {record.get('checkpoint_path')!r}, not {checkpoint!r}: its "
                         "threshold does not apply")
    return float(record["eer_threshold"]), (f"{args.eval_json}: EER {record['eer']:.4f}% on {record['trial_list']} "
                                            f"({record['n_trials']} trials)")


def export(args: argparse.Namespace) -> SpeakerEncoder:
    """Write what the options ask for; returns the exported encoder."""
    check_counts(args)  # --average_checkpoints, --num_eval, ... as the evaluator checks them
    outputs = [(name, getattr(args, name)) for name in ("output", "onnx", "torchscript") if getattr(args, name)]
    if not outputs:
        raise InputError("nothing to write: give --output (the speaker model file), --onnx or --torchscript")
    check_distinct([(f"--{name}", path) for name, path in outputs],
                   [*read_inputs(args), ("--eval_json", args.eval_json)])
    for name, path in outputs:
        check_writable(path, f"--{name}")
    _, checkpoint = select_checkpoints(args)[0]  # --initial_model, the average of the newest, or the newest
    threshold, source = threshold_from(args, checkpoint)
    if is_speaker_model(checkpoint):
        content = load_speaker_model(checkpoint)
        encoder, protocol = content.encoder, content.protocol
        if threshold is None:
            threshold, source = content.eer_threshold, content.threshold_source
    else:
        encoder = encoder_from_checkpoint(checkpoint, args)
        protocol = EvalProtocol(args.eval_frames, args.num_eval, args.max_eval_samples, args.whole_file)
    if args.output:
        save_speaker_model(args.output, encoder, protocol, SAMPLE_RATE, threshold, source, checkpoint)
        size = os.path.getsize(args.output) / 2 ** 20
        print(f"Wrote speaker model {args.output} ({size:.1f} MiB) from {checkpoint}\n  protocol: {protocol}\n"
              f"  EER threshold: {'none' if threshold is None else f'{threshold:.6f} ({source})'}", flush=True)
    for name, writer, kind in (("onnx", export_onnx, "ONNX"), ("torchscript", export_torchscript, "TorchScript")):
        if getattr(args, name):
            started = time.perf_counter()
            writer(encoder, getattr(args, name))
            print(f"Wrote the {kind} embedding network {getattr(args, name)} in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
    return encoder


def main(argv: Optional[Sequence[str]] = None) -> SpeakerEncoder:
    return export(parse_options("Make a speaker model file (and ONNX / TorchScript copies) from a checkpoint.", argv,
                                EXPORT_OPTIONS, config_options(EXPORT_OPTIONS)))


if __name__ == "__main__":
    run_cli(main)
