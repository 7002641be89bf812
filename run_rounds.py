#!/usr/bin/env python
"""The self-supervised loop in one command: pseudo-labels, fine-tuning and new embeddings, round after round,
then large-margin fine-tuning (LMFT) and evaluation. ``python run_rounds.py --help``; the driver is rounds/cli.py.
"""
import sys

from rounds.cli import main

if __name__ == "__main__":
    sys.exit(main())
