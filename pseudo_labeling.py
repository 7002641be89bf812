"""Pseudo-labels from embeddings (docs/method.md §1 step 2): k-means, then Ward AHC of the k-means centroids.

    python pseudo_labeling.py EMB_FILE PL_FILE [--n_clusters 50000] [--n_clusters_ahc 7500] ...

Writes one ``PSEUDO_LABEL KEY`` line per embedding, in the embeddings file's order (a train list
for trainSpeakerNet.py); nothing is written when any step fails. Reports NMI and purity against
the speaker of each key, cluster-size percentiles and the time of each stage (clustering/pseudo_labels.py).
"""
from __future__ import annotations

import logging
import sys
from typing import List, Optional

from clustering.pseudo_labels import PSEUDO_LABELING_OPTIONS, run_pseudo_labeling
from utils.cli import error_status
from utils.options import parse_options


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit status (1 on bad input, nothing written)."""
    try:
        args = vars(parse_options(__doc__.split("\n")[0], argv, PSEUDO_LABELING_OPTIONS))
    except SystemExit as parse_exit:  # argparse has printed the usage error (or --help)
        return int(parse_exit.code or 0)
    args.pop("config")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    return error_status(lambda: run_pseudo_labeling(**args))


if __name__ == "__main__":
    sys.exit(main())
