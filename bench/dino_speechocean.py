"""DINO against MFCC statistics as step 1 of the loop, on real speech of many speakers (speechocean762).

    python bench/dino_speechocean.py                       # data in /work/shared/data/speechocean762
    python bench/dino_speechocean.py --data DIR --work /tmp/so --set max_epoch=10

The data is not in the repository: DIR holds ``SPEAKERnnnn/UTTID.flac`` (16 kHz) files, e.g. the 125
speakers x 10 files of speechocean762's train split (Zhang et al., INTERSPEECH 2021; jimbozhang/speechocean762).
The script links them into ``WORK/corpus/SPEAKER/s1/UTT.flac`` (the three-part layout embedding keys need),
holds out every ``--held_out_every``-th speaker (in sorted order) for verification, trains DINO without
labels on the other speakers' files with ``--config`` (configs/dino_demo.yaml) and generated MUSAN-like /
RIR folders (demo/noise.py), and measures for DINO (teacher backbone, whole files) and for the MFCC
statistics of scripts/bootstrap_embeddings.py:

* EER (%) of cosine scoring on every pair of held-out files (speakers training never saw). Each speaker's
  files are different utterance ids, so target trials never repeat a recording; the corpus's prompts are
  shared between speakers but this copy carries no transcripts, so non-target trials mix same-sentence
  and different-sentence pairs in unknown proportion (neither a text-dependent nor a purely
  text-independent list);
* NMI of pseudo-labels (clustering/pseudo_labels.py: k-means ``--n_clusters``, then Ward AHC to
  ``--n_clusters_ahc``) of the training speakers' files against their true speakers;
* DINO's training time and throughput (utterances/s, from result/train_metrics.jsonl).

Training resumes from WORK/dino's newest checkpoint, so a second run only re-measures.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from clustering.pseudo_labels import run_pseudo_labeling
from dataio.embedding_store import embedding_key, load_embeddings, save_embeddings
from demo.corpus import link_speaker_files, split_by_speaker, write_train_list
from demo.noise import make_musan_like, make_rirs
from scoring.metrics import compute_eer_mindcf
from scripts.bootstrap_embeddings import mfcc_embeddings
from training.run import METRICS_FILE
from utils.records import read_records

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = "/work/shared/data/speechocean762"


def cosine_eer(keys: Sequence[str], embeddings: torch.Tensor) -> Tuple[float, int, int]:
    """EER (%) of cosine scores over every pair of files, and the target / non-target trial counts."""
    normalised = F.normalize(embeddings.double(), dim=1)
    first, second = zip(*itertools.combinations(range(len(keys)), 2))
    first_t, second_t = torch.tensor(first), torch.tensor(second)
    scores = (normalised[first_t] * normalised[second_t]).sum(dim=1).numpy()
    speakers = np.array([key.split("/")[0] for key in keys])
    labels = (speakers[list(first)] == speakers[list(second)]).astype(np.int64)
    result = compute_eer_mindcf(scores, labels)
    return result["eer"], result["n_target"], result["n_nontarget"]


def run(command: List[str], env: Dict[str, str]) -> float:
    """Run a command (its output passes through); return its wall time in seconds."""
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True)
    return time.perf_counter() - started


def nmi_of(embeddings_file: Path, output: Path, n_clusters: int, n_clusters_ahc: int) -> float:
    summary = run_pseudo_labeling(str(embeddings_file), str(output), n_clusters=n_clusters,
                                  n_clusters_ahc=n_clusters_ahc, device="cpu")
    return float(summary["nmi"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="The data is not in the repository; see the module docstring.")
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder of SPEAKER/UTT.flac files (not in the "
                        f"repository; default {DEFAULT_DATA})")
    parser.add_argument("--work", default="/tmp/dino_speechocean", help="scratch folder for everything written")
    parser.add_argument("--config", default=str(REPO / "configs" / "dino_demo.yaml"), help="trainDINO.py config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra trainDINO.py option for training and embedding (repeatable)")
    parser.add_argument("--held_out_every", type=int, default=5, help="hold out every N-th speaker (5: 25 of 125)")
    parser.add_argument("--n_clusters", type=int, default=200, help="k-means clusters of the pseudo-labelling")
    parser.add_argument("--n_clusters_ahc", type=int, default=100, help="Ward AHC groups of the pseudo-labelling")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the DINO processes (1: on a shared 2-core machine two threads "
                        "oversubscribe the cores and run slower, not faster)")
    args = parser.parse_args(argv)

    work = Path(args.work)
    corpus = work / "corpus"
    relative = link_speaker_files(Path(args.data), corpus)
    train, held_out = split_by_speaker(relative, args.held_out_every)
    write_train_list(train, work / "train_list.txt")
    write_train_list(held_out, work / "held_out_list.txt")
    musan, rirs = make_musan_like(work / "musan"), make_rirs(work / "rirs")  # seeded: the same files every run
    print(f"{len(train)} training files of {len({r.split('/')[0] for r in train})} speakers, {len(held_out)} "
          f"held-out files of {len({r.split('/')[0] for r in held_out})} speakers", flush=True)

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    extra = [f"--{item}" for item in args.set]  # --KEY=VALUE, read by trainDINO.py's own parser
    dino = [sys.executable, str(REPO / "trainDINO.py"), "--config", args.config, "--train_path", str(corpus),
            "--musan_path", musan, "--rir_path", rirs, "--save_path", str(work / "dino"), *extra]
    seconds = run([*dino, "--train_list", str(work / "train_list.txt")], env)
    records = read_records(work / "dino" / "result" / METRICS_FILE)
    for name in ("train", "held_out"):
        run([*dino, "--train_list", str(work / f"{name}_list.txt"), "--generate_embeddings",
             "--embeddings_path", str(work / f"dino_{name}.pt")], env)
        paths = [str(corpus / rel) for rel in (train if name == "train" else held_out)]
        save_embeddings({embedding_key(p): row for p, row in zip(paths, mfcc_embeddings(paths, progress=False))},
                        work / f"mfcc_{name}.pt")

    rows = []
    for method in ("mfcc", "dino"):
        keys, matrix = load_embeddings(work / f"{method}_held_out.pt")
        eer, n_target, n_nontarget = cosine_eer(keys, matrix)
        score = nmi_of(work / f"{method}_train.pt", work / f"{method}_pseudo_labels.txt", args.n_clusters,
                       args.n_clusters_ahc)
        rows.append((method, eer, score, matrix.shape[1]))
    print(f"\nHeld-out trials: every pair of {len(held_out)} files, {n_target} target / {n_nontarget} non-target; "
          f"pseudo-labels: k-means {args.n_clusters} -> Ward {args.n_clusters_ahc} on {len(train)} files\n")
    print("| embeddings | dim | EER held-out (%) | NMI train |")
    print("|---|---|---|---|")
    names = {"mfcc": "MFCC statistics", "dino": "DINO ECAPA-TDNN (teacher)"}
    for method, eer, score, dim in rows:
        print(f"| {names[method]} | {dim} | {eer:.2f} | {score:.3f} |")
    trained = sum(r["seconds"] for r in records)
    utterances = sum(r["utterances_per_s"] * r["seconds"] for r in records)
    print(f"\nDINO: {len(records)} epochs, {trained / 60:.1f} min of training epochs ({seconds / 60:.1f} min this "
          f"run incl. start-up), {utterances / max(trained, 1e-9):.2f} utterances/s "
          f"(last epoch {records[-1]['utterances_per_s']:.2f})")


if __name__ == "__main__":
    main()
