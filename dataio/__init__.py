"""Data: everything read from or written to disk besides checkpoints.

Audio reading, resampling and crops (``audio``); MUSAN / RIR augmentation (``augment``); training
lists (``lists``) and trial lists (``trials``); the datasets and batch preparation (``datasets``);
the training sampler (``sampler``); DINO's multi-crop views of an utterance (``multicrop``); the
embeddings file that links embedding and pseudo-labelling (``embedding_store``). Imports only ``utils``.
"""
