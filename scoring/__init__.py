"""Scoring: from a trained encoder to verification figures.

Batched embedding of files (``embedding``), trial scoring with the original's crop + whole-file
fusion (``scoring``), score normalisation (``score_norm``), EER and minDCF (``metrics``, behind the
root ``tuneThreshold.py``), and DET / score-histogram figures (``plots``). Imports ``utils``,
``dataio`` and ``models``.
"""
