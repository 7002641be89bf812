"""Average the weights of several checkpoints (the last N of a run), as WeSpeaker and sslsv users expect.

The averaging is :func:`utils.checkpoints.average_state_dicts` (ours or the original's layout;
float tensors averaged in float64, others required equal; one checkpoint in memory at a time).

Command line: ``python checkpoint_average.py OUTPUT CHECKPOINT [CHECKPOINT ...]`` or
``python checkpoint_average.py OUTPUT --model_dir save_path/model --num N`` (the newest N).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from utils.atomic import atomic_torch_save, check_distinct, check_writable
from utils.checkpoints import average_state_dicts, newest_checkpoint_paths
from utils.cli import run_cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Average the weights of checkpoints into one checkpoint.",
                                     allow_abbrev=False)
    parser.add_argument("output", help="file to write the averaged state dict to")
    parser.add_argument("checkpoints", nargs="*", help="checkpoint files to average")
    parser.add_argument("--model_dir", help="take the newest --num checkpoints of this folder instead")
    parser.add_argument("--num", type=int, default=5, help="how many of --model_dir's newest checkpoints")
    args = parser.parse_args(argv)
    if bool(args.checkpoints) == bool(args.model_dir):
        parser.error("give either checkpoint files or --model_dir, not both or neither")
    paths = list(args.checkpoints) or newest_checkpoint_paths(args.model_dir, args.num)
    check_distinct([("output", args.output)], [("checkpoint", path) for path in paths])
    check_writable(args.output, "output")
    atomic_torch_save(average_state_dicts(paths), args.output)
    print(f"Averaged {len(paths)} checkpoints into {args.output}: " + ", ".join(paths))


if __name__ == "__main__":
    run_cli(main)
