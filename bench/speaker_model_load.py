#!/usr/bin/env python
"""Size and load time of a speaker model file against a training checkpoint loaded the usual way.

On a Base+-shaped random model (WavLM Base+ + MHFA 256 / 64 heads / 128, AAM 7500 classes): the usual
way is what ``trainSpeakerNet_Eval.py`` does, ``SpeakerNet`` built from the pre-trained WavLM file
(which loads it and keeps a reference copy for the L2 term) then ``load_weights`` of the checkpoint; the
speaker model file is ``SpeakerModel.load``, which reads one file and builds nothing twice. Files are
written to a temporary folder (about 1.2 GB) and read from the page cache: the times are CPU-bound.

    python bench/speaker_model_load.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

from bench.train_speed import median, time_flows
from models.wavlm_checkpoint import BASE_PLUS_CFG, save_random_wavlm_checkpoint
from scoring.speaker_model import EvalProtocol, SpeakerModel, encoder_from_checkpoint, save_speaker_model
from training.speaker_net import SpeakerNet
from utils import checkpoints, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed loads of each (the median counts)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        wavlm, checkpoint, speaker = (os.path.join(folder, name) for name in ("wavlm.pt", "model.model", "speaker.pt"))
        save_random_wavlm_checkpoint(wavlm, seed=0, **BASE_PLUS_CFG.to_dict())
        parsed = options.parse_options("bench", [
            "--pretrained_model_path", wavlm, "--model", "spk_encoder", "--nOut", "256", "--head_nb", "64",
            "--compression_dim", "128", "--nClasses", "7500"])
        net_options = vars(parsed)
        torch.manual_seed(0)
        checkpoints.save_weights(SpeakerNet(**net_options), checkpoint)
        encoder = encoder_from_checkpoint(checkpoint, parsed)
        save_speaker_model(speaker, encoder, EvalProtocol(400, 15, 700000), 16000, None, None, checkpoint)
        del encoder

        def usual() -> None:
            checkpoints.load_weights(SpeakerNet(**net_options), checkpoint, strict_loss=False)

        def speaker_file() -> None:
            SpeakerModel.load(speaker)

        times = time_flows({"usual": usual, "speaker": speaker_file}, args.repeats, 0, torch.device("cpu"))
        usual_s, speaker_s = (median(times[name]) for name in ("usual", "speaker"))
        mib = {path: os.path.getsize(path) / 2 ** 20 for path in (wavlm, checkpoint, speaker)}
        print(f"training checkpoint {mib[checkpoint]:.1f} MiB + pre-trained WavLM {mib[wavlm]:.1f} MiB, "
              f"SpeakerNet + load_weights: {usual_s:.2f} s", flush=True)
        print(f"speaker model file  {mib[speaker]:.1f} MiB, SpeakerModel.load: {speaker_s:.2f} s "
              f"({usual_s / speaker_s:.1f}x faster; median of {args.repeats}, torch threads "
              f"{torch.get_num_threads()})", flush=True)


if __name__ == "__main__":
    main()
