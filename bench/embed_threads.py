#!/usr/bin/env python
"""embed.py and the evaluator on the same files: the torch threads they choose against torch's default.

``--files`` generated utterances of 2-6 s (tests/data_factory.py) and a tiny random WavLM + MHFA exported as
a speaker model file; ``scripts/embed.py`` and ``trainSpeakerNet_Eval.py --eval`` (a trial list over the
same files), both with 2 DataLoader workers, run alternately with ``--threads 0`` (the cores the workers
leave: utils.device.set_torch_threads) and ``--threads N``, N = the cores (torch's default, what both used
before). Prints the files/s of each run (the commands' own progress figure: embedding only, model loading
and process start left out).

    python bench/embed_threads.py [--files 100] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

import torch

from demo.corpus import write_trials
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from scripts import export_model
from tests.data_factory import make_speaker_dataset
from training.speaker_net import SpeakerNet
from utils import checkpoints, options
from utils.device import THREADS_ENV, available_cores

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.yaml")
WORKERS = "2"


def files_per_second(command: List[str]) -> float:
    """Run a command without $OMP_NUM_THREADS; return the last files/s its progress printed."""
    environment = {key: value for key, value in os.environ.items() if key != THREADS_ENV}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    return float(re.findall(r"([0-9.]+) files?/s", result.stdout + result.stderr)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100, help="utterances (10 speakers)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each command and setting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _, entries = make_speaker_dataset(str(root / "corpus"), n_speakers=10, n_sessions=2,
                                          n_utts=-(-args.files // 20), seconds=(2.0, 6.0))
        entries = entries[:args.files]
        wavlm = str(root / "wavlm.pt")
        save_random_wavlm_checkpoint(wavlm, seed=0)
        model_options = ["--config", TINY, "--pretrained_model_path", wavlm]
        torch.manual_seed(0)
        checkpoints.save_weights(SpeakerNet(**vars(options.parse_options("bench", model_options))),
                                 str(root / "m.model"))
        speaker = str(root / "speaker.pt")
        export_model.main([*model_options, "--initial_model", str(root / "m.model"), "--output", speaker])
        (root / "list.txt").write_text("".join(f"{rel}\n" for _, rel in entries))
        write_trials([(int(a[0] == b[0]), a[1], b[1]) for i, a in enumerate(entries) for b in entries[i + 1:i + 3]],
                     str(root / "trials.txt"))
        commands = {
            "embed.py": [sys.executable, str(REPO / "scripts" / "embed.py"), speaker, str(root / "list.txt"),
                         "--root", str(root / "corpus"), "--output", str(root / "e.pt")],
            "evaluator": [sys.executable, str(REPO / "trainSpeakerNet_Eval.py"), "--config", TINY, "--eval",
                          "--initial_model", speaker, "--test_list", str(root / "trials.txt"), "--test_path",
                          str(root / "corpus"), "--save_path", str(root / "run"), "--plots", "false"],
        }
        cores = available_cores()
        settings = {"--threads 0 (now)": "0", f"--threads {cores} (torch's default)": str(cores)}
        print(f"{len(entries)} files of 2-6 s, tiny WavLM + MHFA, {WORKERS} DataLoader workers, {cores} cores")
        for name, command in commands.items():
            for _ in range(args.repeats):
                for setting, threads in settings.items():
                    rate = files_per_second([*command, "--nDataLoaderThread", WORKERS, "--threads", threads])
                    print(f"  {name:10s} {setting:28s} {rate:6.1f} files/s", flush=True)


if __name__ == "__main__":
    main()
