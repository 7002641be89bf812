"""k-means speed and quality: ours against scikit-learn, and the VoxCeleb2-sized pseudo-labelling run.

    python -m bench.kmeans_speed            # 100,000 x 256, K = 5,000: ours vs sklearn Lloyd
    python -m bench.kmeans_speed --full     # 1,092,009 x 256, K = 50,000, Ward AHC to 7,500

Data: gaussian blobs on the unit sphere (centres uniform on the sphere, each point its centre plus
isotropic noise of norm ~``--noise``, re-normalised), so NMI against the generating blob is
meaningful. The default run starts both implementations from the same initial centroids (distinct
points drawn with ``--seed``) and runs exactly ``--iters`` Lloyd iterations (tol 0); both use every
core: torch through its intra-op threads, scikit-learn through its OpenMP threads (BLAS pinned to
one thread per worker inside its Lloyd loop). ``--full`` goes through ``run_pseudo_labeling``
(file load, k-means, AHC, report, write) and prints minutes per stage and the peak resident memory.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import sys
import tempfile
import time
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from clustering.kmeans import kmeans
from clustering.report import nmi
from dataio.embedding_store import save_embeddings
from pseudo_labeling import run_pseudo_labeling

VOXCELEB2_FILES, VOXCELEB2_SPEAKERS = 1_092_009, 5_994


def sphere_blobs(n: int, dim: int, n_blobs: int, noise: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(n, dim) float32 unit vectors around ``n_blobs`` random centres, and each point's blob."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_blobs, dim, generator=g), dim=1)
    truth = torch.randint(n_blobs, (n,), generator=g)
    x = torch.empty(n, dim)
    for start in range(0, n, 65536):
        rows = truth[start:start + 65536]
        jitter = torch.randn(rows.numel(), dim, generator=g) * (noise / math.sqrt(dim))
        x[start:start + rows.numel()] = F.normalize(centres[rows] + jitter, dim=1)
    return x, truth


def compare_with_sklearn(args: argparse.Namespace) -> None:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_info

    x, truth = sphere_blobs(args.n_points, args.dim, args.blobs, args.noise, args.seed)
    init = x[torch.randperm(args.n_points, generator=torch.Generator().manual_seed(args.seed + 1))[: args.clusters]]
    print(f"data: {args.n_points} x {args.dim}, {args.blobs} blobs (noise {args.noise}); K = {args.clusters}, "
          f"{args.iters} Lloyd iterations from the same {args.clusters} initial points")
    pools = ", ".join(f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info())
    print(f"threads: torch intra-op {torch.get_num_threads()}; sklearn thread pools {pools}; "
          f"cpu count {os.cpu_count()}")

    started, cpu = time.perf_counter(), time.process_time()
    ours = kmeans(x, args.clusters, init_centroids=init, max_iter=args.iters, tol=0.0)
    ours_s, ours_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    ref = KMeans(args.clusters, init=init.numpy(), n_init=1, max_iter=args.iters, tol=0.0,
                 algorithm="lloyd").fit(x.numpy())
    ref_s, ref_cpu = time.perf_counter() - started, time.process_time() - cpu

    ours_nmi, ref_nmi = nmi(truth.numpy(), ours.labels.numpy()), nmi(truth.numpy(), ref.labels_)
    agree = float((ours.labels.numpy() == ref.labels_).mean())
    print(f"ours   : {ours_s:7.1f} s wall, {ours_cpu:7.1f} s CPU  ({ours.n_iter} iterations)  "
          f"inertia {ours.inertia:.6f}  NMI {ours_nmi:.4f}")
    print(f"sklearn: {ref_s:7.1f} s wall, {ref_cpu:7.1f} s CPU  ({ref.n_iter_} iterations)  "
          f"inertia {ref.inertia_:.6f}  NMI {ref_nmi:.4f}")
    print(f"NMI difference {abs(ours_nmi - ref_nmi):.5f}; identical labels {agree:.5f}; "
          f"relative inertia difference {abs(ours.inertia - ref.inertia_) / ref.inertia_:.2e}; "
          f"speed ratio sklearn/ours {ref_s / ours_s:.2f}x wall, {ref_cpu / ours_cpu:.2f}x CPU time")


def full_run(args: argparse.Namespace) -> None:
    n, speakers = args.n_points, args.blobs
    x, truth = sphere_blobs(n, args.dim, speakers, args.noise, args.seed)
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        emb_file = os.path.join(folder, "embeddings.pt")
        started = time.perf_counter()
        save_embeddings({f"id{int(s):05d}/video/{i:07d}.wav": row for i, (s, row) in enumerate(zip(truth, x))},
                        emb_file)
        print(f"wrote {n} x {args.dim} embeddings ({speakers} speakers) in {(time.perf_counter() - started) / 60:.2f}"
              f" min, {os.path.getsize(emb_file) / 1e9:.2f} GB")
        del x, truth
        summary = run_pseudo_labeling(emb_file, os.path.join(folder, "pl.txt"), n_clusters=args.full_clusters,
                                      n_clusters_ahc=args.full_clusters_ahc, seed=args.seed, device=args.device,
                                      max_iter=args.iters, tol=0.0, init=args.init)
    minutes = ", ".join(f"{stage} {seconds / 60:.2f}" for stage, seconds in summary["timings"].items())
    print(f"minutes per stage: {minutes}")
    print(f"k-means {summary['kmeans_iterations']} iterations; NMI after k-means {summary['nmi_kmeans']:.4f}, "
          f"after AHC {summary['nmi']:.4f}, purity {summary['purity']:.4f}, "
          f"{summary['n_clusters_nonempty']} non-empty groups")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="VoxCeleb2-sized run through run_pseudo_labeling")
    parser.add_argument("--n_points", type=int, default=None, help="points (default 100,000; --full 1,092,009)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--blobs", type=int, default=None, help="generating blobs (default 5,000; --full 5,994)")
    parser.add_argument("--noise", type=float, default=0.8, help="norm of each point's offset from its centre")
    parser.add_argument("--clusters", type=int, default=5000, help="K of the comparison with sklearn")
    parser.add_argument("--iters", type=int, default=10, help="Lloyd iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full_clusters", type=int, default=50000)
    parser.add_argument("--full_clusters_ahc", type=int, default=7500)
    parser.add_argument("--init", default="k-means++-subsample", help="initialisation of the --full run")
    parser.add_argument("--device", default="auto", help="device of the --full run")
    parser.add_argument("--workdir", default=None, help="folder for the --full run's temporary files")
    args = parser.parse_args(argv)
    args.n_points = args.n_points or (VOXCELEB2_FILES if args.full else 100_000)
    args.blobs = args.blobs or (VOXCELEB2_SPEAKERS if args.full else 5_000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.full:
        full_run(args)
    else:
        compare_with_sklearn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
