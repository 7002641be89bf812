"""Secondary command lines: data preparation, MFCC-statistics bootstrap embeddings, checkpoint
averaging and the README's options table. Each runs as ``python scripts/NAME.py``; they import the
library packages and no entry point.
"""
