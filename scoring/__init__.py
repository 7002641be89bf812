"""Scoring: from a trained encoder to verification figures.

Batched embedding of files (``embedding``), trial scoring with the original's crop + whole-file
fusion (``scoring``), score normalisation (``score_norm``), EER and minDCF (``metrics``, behind the
root ``tuneThreshold.py``), DET / score-histogram figures (``plots``), the ``--eval`` and
``--generate_embeddings`` runs of any encoder (``evaluate``), and a speaker model file in use
(``speaker_model``). Imports ``utils``, ``dataio`` and ``models``.
"""
