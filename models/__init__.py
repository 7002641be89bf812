"""Models: speaker encoders behind one interface, their backbones and checkpoint formats, and export.

``encoder`` states the interface and holds the registry (a config's ``model:`` name -> module);
``wavlm_mhfa`` is the published encoder (WavLM + MHFA; ``Baseline.Spk_Encoder`` resolves to it), built
from ``wavlm`` (the backbone), ``wavlm_checkpoint`` (Microsoft's and Hugging Face's files),
``pretrained`` (known names downloaded) and ``mhfa`` (the pooling head); ``hubert_mhfa`` and
``wav2vec2_mhfa`` put HuBERT and wav2vec 2.0 (the same backbone without relative position bias; fairseq's
files in ``fairseq_checkpoint``) under the same head, all three subclasses of ``mhfa_encoder``;
``ecapa_tdnn`` is another encoder (and DINO's backbone); ``dino`` holds the DINO head and model;
``export`` writes TorchScript / ONNX copies of an encoder. Imports only ``utils``.
"""
