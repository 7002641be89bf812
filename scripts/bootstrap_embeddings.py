"""Label-free initial embeddings from MFCC statistics: step 1 of the loop when no SSL model is at hand.

The paper starts the loop from the embeddings of a self-supervised DINO model. Without one, the
per-utterance mean and standard deviation of MFCCs over the voiced frames (an energy threshold
relative to the utterance's loudest frame) give a crude speaker embedding, in the spirit of the
i-vector-bootstrapped pseudo-labelling of earlier self-supervised speaker-verification systems.
Each dimension is then standardised over the whole collection so that no coefficient dominates
the k-means distances. No label is read: the list's first column is ignored.

    python bootstrap_embeddings.py --train_list L --train_path P --embeddings_path F

The output is the embeddings file of docs/method.md §1 (key = last three path parts, value (1, D) float32),
ready for ``pseudo_labeling.py``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

import torch
import torchaudio

from dataio.audio import SAMPLE_RATE, pad_short_file, read_audio
from dataio.embedding_store import embedding_key, save_embeddings
from dataio.lists import checked_train_list
from utils.atomic import check_distinct, check_writable
from utils.cli import error_status
from utils.errors import InputError
from utils.progress import progress_bar


class MfccStatistics:
    """Mean and standard deviation of MFCCs over an utterance's voiced frames: a (2·n_mfcc,) vector."""

    def __init__(self, n_mfcc: int = 20, n_mels: int = 40, vad_db: float = 40.0) -> None:
        if n_mfcc > n_mels:
            raise InputError(f"n_mfcc ({n_mfcc}) cannot exceed n_mels ({n_mels})")
        self.vad_db = vad_db
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=SAMPLE_RATE, n_mfcc=n_mfcc,
            melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": n_mels})

    def voiced_frames(self, audio: torch.Tensor) -> torch.Tensor:
        """MFCCs (n_mfcc, kept frames) of the frames within ``vad_db`` of the loudest one (all if fewer than 2)."""
        with torch.no_grad():
            coefficients = self.mfcc(audio)
            mel_energy = self.mfcc.MelSpectrogram(audio).sum(dim=0)
        if self.vad_db <= 0:
            return coefficients
        level = 10.0 * torch.log10(mel_energy.clamp_min(1e-20))
        kept = coefficients[:, level >= level.max() - self.vad_db]
        return kept if kept.shape[1] >= 2 else coefficients

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio``: (samples,) float at 16 kHz."""
        frames = self.voiced_frames(audio)
        return torch.cat([frames.mean(dim=1), frames.std(dim=1)])


def standardise(matrix: torch.Tensor) -> torch.Tensor:
    """Each column to zero mean and unit variance over the rows (a constant column becomes 0)."""
    std = matrix.std(dim=0, unbiased=False)
    return (matrix - matrix.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))


def mfcc_embeddings(paths: Sequence[str], n_mfcc: int = 20, n_mels: int = 40, vad_db: float = 40.0,
                    progress: bool = True) -> torch.Tensor:
    """Standardised MFCC statistics of every file: (len(paths), 2·n_mfcc) float32."""
    statistics = MfccStatistics(n_mfcc, n_mels, vad_db)
    rows = [statistics(torch.from_numpy(pad_short_file(read_audio(path), path)))
            for path in progress_bar(paths, desc="MFCC statistics", unit="file", disable=not progress)]
    return standardise(torch.stack(rows).float())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--train_list", required=True, help="LABEL RELPATH lines (the label is not read)")
    parser.add_argument("--train_path", required=True, help="folder the list's paths are relative to")
    parser.add_argument("--embeddings_path", required=True, help="output: torch.save of Dict[key, (1, D) tensor]")
    parser.add_argument("--n_mfcc", type=int, default=20, help="cepstral coefficients (embedding size = 2*n_mfcc)")
    parser.add_argument("--n_mels", type=int, default=40, help="mel bands of the MFCC front end")
    parser.add_argument("--vad_db", type=float, default=40.0,
                        help="keep frames within this many dB of the loudest frame; 0 keeps all")
    return parser


def write_bootstrap_embeddings(args: argparse.Namespace) -> None:
    """Embed every file of ``args.train_list`` and write the embeddings file."""
    check_distinct([("--embeddings_path", args.embeddings_path)], [("--train_list", args.train_list)])
    check_writable(args.embeddings_path, "--embeddings_path")
    _labels, relative_paths, _lines, paths = checked_train_list(args.train_list, args.train_path)
    matrix = mfcc_embeddings(paths, args.n_mfcc, args.n_mels, args.vad_db)
    save_embeddings({embedding_key(p): row for p, row in zip(relative_paths, matrix)}, args.embeddings_path)
    print(f"Wrote {matrix.shape[0]} MFCC-statistics embeddings of dimension {matrix.shape[1]} "
          f"to {args.embeddings_path}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit status (1 on bad input, nothing written)."""
    args = build_parser().parse_args(argv)
    return error_status(lambda: write_bootstrap_embeddings(args))


if __name__ == "__main__":
    torch.set_num_threads(1)  # per-file transforms are too small to gain from threads; they only contend
    sys.exit(main())
