"""Average the weights of several checkpoints (the last N of a run), as WeSpeaker and sslsv users expect.

Checkpoints are read with :func:`checkpoints.read_state_dict` (ours or the original's layout, a
DDP ``module.`` prefix dropped). Floating-point tensors are averaged in float64 and cast back to
their dtype; other tensors (integer counters) must agree across the checkpoints and are kept as
they are. Checkpoints are read one at a time, so the memory cost is two state dicts whatever N is.

Command line: ``python checkpoint_average.py OUTPUT CHECKPOINT [CHECKPOINT ...]`` or
``python checkpoint_average.py OUTPUT --model_dir save_path/model --num N`` (the newest N).
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence

import torch

from checkpoints import list_checkpoints, read_state_dict
from utils.atomic import atomic_torch_save
from utils.cli import run_cli


def average_state_dicts(paths: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints at ``paths`` (same keys and shapes in every one)."""
    if not paths:
        raise ValueError("average_state_dicts needs at least one checkpoint")
    first = read_state_dict(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for path in paths[1:]:
        state = read_state_dict(path)
        if state.keys() != sums.keys():
            extra = sorted(state.keys() - sums.keys())[:3]
            lacking = sorted(sums.keys() - state.keys())[:3]
            raise ValueError(f"checkpoint {path!r} has different keys from {paths[0]!r}: "
                             f"extra {extra}, missing {lacking}")
        for key, value in state.items():
            if value.shape != sums[key].shape:
                raise ValueError(f"checkpoint {path!r}: {key} has shape {tuple(value.shape)}, "
                                 f"{paths[0]!r} has {tuple(sums[key].shape)}")
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, sums[key]):
                raise ValueError(f"checkpoint {path!r}: non-float tensor {key} differs from {paths[0]!r}; "
                                 "it cannot be averaged")
    return {k: (v / len(paths)).to(first[k].dtype) if first[k].is_floating_point() else v
            for k, v in sums.items()}


def newest_checkpoint_paths(model_dir: str, count: int) -> List[str]:
    """The newest ``count`` checkpoints of ``model_dir`` (``model%09d.model``), oldest first."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    found = list_checkpoints(model_dir)
    if len(found) < count:
        raise FileNotFoundError(f"{model_dir!r} holds {len(found)} checkpoint(s); {count} requested")
    return [path for _, path in found[-count:]]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Average the weights of checkpoints into one checkpoint.")
    parser.add_argument("output", help="file to write the averaged state dict to")
    parser.add_argument("checkpoints", nargs="*", help="checkpoint files to average")
    parser.add_argument("--model_dir", help="take the newest --num checkpoints of this folder instead")
    parser.add_argument("--num", type=int, default=5, help="how many of --model_dir's newest checkpoints")
    args = parser.parse_args(argv)
    if bool(args.checkpoints) == bool(args.model_dir):
        parser.error("give either checkpoint files or --model_dir, not both or neither")
    paths = list(args.checkpoints) or newest_checkpoint_paths(args.model_dir, args.num)
    atomic_torch_save(average_state_dicts(paths), args.output)
    print(f"Averaged {len(paths)} checkpoints into {args.output}: " + ", ".join(paths))


if __name__ == "__main__":
    run_cli(main)
