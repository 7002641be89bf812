"""Pseudo-labels from embeddings (docs/method.md §1 step 2): k-means, then Ward AHC of the k-means centroids.

Writes one ``PSEUDO_LABEL KEY`` line per embedding, in the embeddings file's order (a train list for
trainSpeakerNet.py), and a JSON summary beside it; nothing is written when any step fails. The summary
holds NMI (after k-means and after AHC) and purity against the speaker of each key (``speaker/video/file``
keys, see clustering/report.py), cluster-size percentiles and the time of each stage.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from typing import Any, Dict, List

import torch

from clustering.ahc import DEFAULT_BLOCK_BYTES, check_ward_memory, ward_ahc
from clustering.kmeans import INIT_METHODS, kmeans
from clustering.report import cluster_sizes, nmi, purity, speakers_from_keys
from dataio.embedding_store import check_keys_without_whitespace, load_embeddings
from utils.atomic import atomic_open, check_distinct, check_writable
from utils.device import resolve_device
from utils.errors import InputError
from utils.options import Option, integer, str2bool
from utils.records import write_json

logger = logging.getLogger("pseudo_labeling")

PL = "pseudo-labelling"
PSEUDO_LABELING_OPTIONS: List[Option] = [
    Option("embeddings_file", str, None, "embeddings file (.pt): torch.save of {key: (1, D) tensor}", PL,
           positional=True),
    Option("output_file", str, None, "pseudo-label list to write: 'LABEL KEY' per line", PL, positional=True),
    Option("n_clusters", integer, 50000, "k-means clusters", PL),
    Option("n_clusters_ahc", integer, 7500, "Ward AHC groups of the k-means centroids; 0 skips AHC", PL),
    Option("seed", integer, 0, "seed of the k-means initialisation (the original: random_state=0)", PL),
    Option("device", str, "auto", "cpu, cuda, cuda:N or auto (cuda when available)", PL),
    Option("max_iter", integer, 300, "k-means iterations at most (cuML's default)", PL),
    Option("tol", float, 1e-4, "stop k-means when inertia changes by <= tol relatively (cuML's default)", PL),
    Option("n_init", integer, 1, "k-means runs from different seeds; the lowest inertia wins", PL),
    Option("init", str, "auto", "k-means initialisation: auto = k-means|| on GPU (as cuML), "
           "k-means++-subsample on CPU (k-means|| costs ~10 full passes there); see clustering/kmeans.py",
           PL, choices=("auto",) + INIT_METHODS),
    Option("normalize", str2bool, False, "L2-normalise embeddings before k-means (the original does not)", PL),
    Option("chunk_size", integer, 0, "points per k-means distance block; 0 = blocks of 2**26 distances", PL),
    Option("max_memory_gb", float, 24.0, "refuse Ward AHC when its memory estimate is above this", PL),
    Option("ahc_size_weighted", str2bool, False,
           "weight each centroid by its k-means cluster size in Ward AHC (the original does not)", PL),
]


def summary_path(output_file: str | os.PathLike) -> str:
    """Where the JSON summary of a pseudo-label file goes: ``pseudo_labels.txt`` -> ``pseudo_labels.summary.json``."""
    return os.path.splitext(os.fspath(output_file))[0] + ".summary.json"


def auto_init(device: torch.device) -> str:
    """``--init auto``: k-means|| on a GPU (as cuML), k-means++ on a subsample on the CPU."""
    return "k-means||" if device.type == "cuda" else "k-means++-subsample"


def run_pseudo_labeling(embeddings_file: str, output_file: str, n_clusters: int = 50000,
                        n_clusters_ahc: int = 7500, seed: int = 0, device: str = "auto", max_iter: int = 300,
                        tol: float = 1e-4, n_init: int = 1, init: str = "auto", normalize: bool = False,
                        chunk_size: int = 0, max_memory_gb: float = 24.0,
                        ahc_size_weighted: bool = False) -> Dict[str, Any]:
    """Cluster the embeddings of ``embeddings_file`` and write ``output_file``; returns a summary.

    The summary is also written as JSON beside the output (:func:`summary_path`). Its keys:
    embeddings_file, output_file, n_clusters, n_clusters_ahc, init, n_files, dim, kmeans_inertia,
    kmeans_iterations, n_clusters_nonempty, sizes (percentiles), nmi_kmeans / nmi / purity (None when
    keys carry no speaker), timings (seconds per stage), peak_rss_gb.
    """
    if init not in ("auto",) + INIT_METHODS:
        raise InputError(f"--init {init!r}: expected one of {['auto', *INIT_METHODS]}")
    check_distinct([("output_file", output_file), ("output_file's summary", summary_path(output_file))],
                   [("embeddings_file", embeddings_file)])
    check_writable(output_file, "pseudo-label list")
    check_writable(summary_path(output_file), "pseudo-label summary")
    timings: Dict[str, float] = {}
    started = time.perf_counter()
    keys, embeddings = load_embeddings(embeddings_file)
    # Each key becomes the path of a 'LABEL PATH' line, which the trainer splits at whitespace.
    check_keys_without_whitespace(keys, f"embeddings file {embeddings_file!r}", "a train list line cannot hold")
    n, dim = embeddings.shape
    timings["load"] = time.perf_counter() - started
    logger.info("loaded %d embeddings of dimension %d from %s in %.1f s", n, dim, embeddings_file, timings["load"])
    if not 1 <= n_clusters <= n:
        raise InputError(f"--n_clusters {n_clusters} must be between 1 and the number of embeddings ({n}) "
                         f"in {embeddings_file}")
    if not 0 <= n_clusters_ahc <= n_clusters:
        raise InputError(f"--n_clusters_ahc {n_clusters_ahc} must be between 0 (no AHC) and --n_clusters "
                         f"({n_clusters})")
    if n_clusters_ahc > 0:
        check_ward_memory(n_clusters, dim, max_memory_gb, DEFAULT_BLOCK_BYTES)
    target = resolve_device(device)
    if init == "auto":
        init = auto_init(target)

    stage = time.perf_counter()
    km = kmeans(embeddings, n_clusters, max_iter=max_iter, tol=tol, n_init=n_init, seed=seed, device=target,
                chunk_size=chunk_size or None, init=init, normalize=normalize)
    timings["kmeans"] = time.perf_counter() - stage
    logger.info("k-means: %d iterations (%s), inertia %.8g, %.2f min (initialisation %.2f min)", km.n_iter,
                "converged" if km.converged else "not converged", km.inertia, timings["kmeans"] / 60,
                km.init_seconds / 60)
    labels = km.labels
    if n_clusters_ahc > 0:
        stage = time.perf_counter()
        sizes = torch.bincount(km.labels, minlength=n_clusters).clamp_(min=1) if ahc_size_weighted else None
        groups = ward_ahc(km.centroids, n_clusters_ahc, sizes=sizes, max_memory_gb=max_memory_gb, device=target)
        labels = groups.labels[km.labels]
        timings["ahc"] = time.perf_counter() - stage
        logger.info("Ward AHC: %d -> %d groups in %.2f min", n_clusters, n_clusters_ahc, timings["ahc"] / 60)

    stage = time.perf_counter()
    pred = labels.numpy()
    summary: Dict[str, Any] = {"embeddings_file": embeddings_file, "output_file": output_file,
                               "n_clusters": n_clusters, "n_clusters_ahc": n_clusters_ahc, "init": init,
                               "n_files": n, "dim": dim, "kmeans_inertia": km.inertia,
                               "kmeans_iterations": km.n_iter, "nmi_kmeans": None, "nmi": None, "purity": None}
    sizes_summary = cluster_sizes(pred)
    summary["n_clusters_nonempty"] = sizes_summary.pop("n_nonempty")
    summary["sizes"] = sizes_summary
    speakers = speakers_from_keys(keys)
    if speakers is None:
        logger.info("keys are not speaker/video/file paths: no NMI or purity against speakers")
    else:
        summary["nmi_kmeans"] = nmi(speakers, km.labels.numpy())
        summary["nmi"] = nmi(speakers, pred)
        summary["purity"] = purity(speakers, pred)
        logger.info("speakers: %d; NMI after k-means: %.4f", int(speakers.max()) + 1, summary["nmi_kmeans"])
        logger.info("NMI: %.4f, purity: %.4f", summary["nmi"], summary["purity"])
    logger.info("%d non-empty clusters; sizes %s", summary["n_clusters_nonempty"],
                ", ".join(f"{q} {v:g}" for q, v in sizes_summary.items()))
    timings["report"] = time.perf_counter() - stage

    stage = time.perf_counter()
    with atomic_open(output_file, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{label} {key}\n" for label, key in zip(pred.tolist(), keys)))
    timings["write"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started
    summary["timings"] = timings
    summary["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    write_json(summary_path(output_file), summary)
    logger.info("wrote %d pseudo-labels to %s and their summary to %s; stages (s): %s; peak RSS %.2f GB", n,
                output_file, summary_path(output_file), ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
                summary["peak_rss_gb"])
    return summary


