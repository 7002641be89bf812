"""Secondary command lines: data preparation, MFCC-statistics bootstrap embeddings, checkpoint
averaging, the README's options table, and using a trained model (``export_model``, ``embed``,
``verify``). Each runs as ``python scripts/NAME.py``; they import the
library packages and no entry point.
"""
