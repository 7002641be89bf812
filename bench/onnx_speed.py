#!/usr/bin/env python
"""Embedding throughput on the CPU: the ONNX export under onnxruntime against eager PyTorch.

Both run the same random speaker encoder (WavLM + MHFA, evaluation mode) on the same random batch, with
the same number of threads, alternately, and the median of the timed runs counts. Also prints the
largest relative difference between the two embeddings. Needs ``onnxruntime`` (requirements-test.txt).

    python bench/onnx_speed.py                       # tiny and Base+-shaped (12 layers, 768 dims)
    python bench/onnx_speed.py --models base_plus --batch 1 --seconds 4 --threads 2
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch

from bench.train_speed import HEADS, median, time_flows
from models.export import export_onnx
from models.wavlm_checkpoint import BASE_PLUS_CFG, TINY_WAVLM_CFG
from models.wavlm_mhfa import WavLMMHFA

CONFIGS = {"tiny": TINY_WAVLM_CFG, "base_plus": BASE_PLUS_CFG}


def bench(shape: str, args: argparse.Namespace, folder: str) -> None:
    import onnxruntime

    n_out, heads, compression = (int(value) for value in HEADS[shape])
    torch.manual_seed(0)
    encoder = WavLMMHFA(CONFIGS[shape].to_dict(), nOut=n_out, head_nb=heads, compression_dim=compression).eval()
    path = os.path.join(folder, f"{shape}.onnx")
    export_onnx(encoder, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    waveforms = torch.randn(args.batch, int(args.seconds * 16000), generator=torch.Generator().manual_seed(1)) * 0.1
    feed = {"waveform": waveforms.numpy()}

    def eager() -> np.ndarray:
        with torch.no_grad():
            return encoder(waveforms).numpy()

    def onnx() -> np.ndarray:
        return session.run(["embedding"], feed)[0]

    reference, exported = eager(), onnx()  # warm-up, and the parity figure
    difference = float(np.abs(exported - reference).max() / np.abs(reference).max())
    times = time_flows({"eager": eager, "onnx": onnx}, args.repeats, 0, torch.device("cpu"))
    eager_rate, onnx_rate = (args.batch * args.seconds / median(times[name]) for name in ("eager", "onnx"))
    print(f"{shape:9s} onnxruntime {onnx_rate:8.1f} audio-s/s  eager {eager_rate:8.1f} audio-s/s  "
          f"ratio {onnx_rate / eager_rate:5.2f}x  (max relative difference {difference:.1e})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "base_plus"], choices=sorted(CONFIGS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0, help="waveform length (the evaluation crop: 4 s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (the median counts)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of both (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} threads each, batch {args.batch} x {args.seconds} s, median of "
          f"{args.repeats} alternating timed runs after one warm-up", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.models:
            bench(shape, args, folder)


if __name__ == "__main__":
    main()
