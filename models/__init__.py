"""Models: speaker encoders behind one interface, their backbones and checkpoint formats, and export.

``encoder`` states the interface and holds the registry (a config's ``model:`` name -> module);
``wavlm_mhfa`` is the published encoder (WavLM + MHFA; ``Baseline.Spk_Encoder`` resolves to it), built
from ``wavlm`` (the backbone), ``wavlm_checkpoint`` (Microsoft's and Hugging Face's files),
``pretrained`` (known names downloaded) and ``mhfa`` (the pooling head); ``ecapa_tdnn`` is the second
encoder (and DINO's backbone); ``dino`` holds the DINO head and model; ``export`` writes TorchScript /
ONNX copies of an encoder. Imports only ``utils``.
"""
