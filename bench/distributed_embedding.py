#!/usr/bin/env python
"""Embedding a training list in N torchrun processes against one process: files/s and the ratio.

``trainSpeakerNet_Eval.py --generate_embeddings`` runs on a random WavLM (4 layers, 256 dims) and
``--files`` generated 4-6 s utterances, once in one process and once under
``torchrun --nproc_per_node N ... --distributed``. The files/s printed are the scripts' own (embedding
time of the main process, gathering included; model loading and process start excluded); the
embeddings of the two runs are compared. Each process gets ``--threads`` torch threads, so on this
2-core CPU 2 processes x 1 thread compete with 1 process x 1 thread: the ratio is what sharding gains
when every process has its own device.

    python bench/distributed_embedding.py [--processes 2] [--files 96]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

from demo.corpus import write_train_list
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from training.speaker_net import SpeakerNet
from utils import checkpoints, options

REPO = Path(__file__).resolve().parent.parent


def run(command: list, threads: int) -> float:
    """Run an embedding command; return the files/s it printed."""
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    return float(re.search(r"\(([0-9.]+) files/s\)", result.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes of the sharded run")
    parser.add_argument("--files", type=int, default=96, help="utterances to embed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rng = np.random.default_rng(0)
        relative = [f"spk{i % 8}/s1/{i:05d}.wav" for i in range(args.files)]
        for rel in relative:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(root / rel, 0.1 * rng.standard_normal(int(16000 * rng.uniform(4, 6))), 16000)
        write_train_list(relative, root / "list.txt")
        wavlm = str(root / "wavlm.pt")
        save_random_wavlm_checkpoint(wavlm, seed=0, encoder_layers=4, encoder_embed_dim=256,
                                     encoder_ffn_embed_dim=1024, encoder_attention_heads=4)
        argv = ["--pretrained_model_path", wavlm, "--model", "spk_encoder", "--nOut", "64", "--head_nb", "8",
                "--compression_dim", "32", "--nClasses", "8", "--train_list", str(root / "list.txt"),
                "--train_path", str(root), "--nDataLoaderThread", "0", "--eval_batch_size", "8",
                "--embedding_mode", "eval", "--device", "cpu", "--generate_embeddings"]
        torch.manual_seed(0)
        checkpoints.save_weights(SpeakerNet(**vars(options.parse_options("bench", argv))), str(root / "m.model"))
        argv += ["--initial_model", str(root / "m.model")]
        script = str(REPO / "trainSpeakerNet_Eval.py")
        one = run([sys.executable, script, *argv, "--embeddings_path", str(root / "one.pt")], args.threads)
        many = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={args.processes}", script, "--distributed", *argv,
                    "--embeddings_path", str(root / "many.pt")], args.threads)
        first, second = (torch.load(root / name, weights_only=True) for name in ("one.pt", "many.pt"))
        difference = max(float((first[key] - second[key]).abs().max()) for key in first)
    print(f"{args.files} files of 4-6 s, WavLM 4 layers x 256, {args.threads} thread(s) per process")
    print(f"  1 process:  {one:7.2f} files/s")
    print(f"  {args.processes} processes: {many:7.2f} files/s   ratio x{many / one:.2f}")
    print(f"  same keys: {list(first) == list(second)}; max |difference| of the embeddings {difference:.1e}")


if __name__ == "__main__":
    main()
