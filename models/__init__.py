"""Models: the WavLM backbone and its checkpoint formats, the MHFA head, the speaker encoder.

A config's ``model:`` names a module under ``models/`` that defines ``MainModel`` (the published
``Baseline.Spk_Encoder`` resolves to ``spk_encoder``). ``wavlm`` is the backbone, ``wavlm_checkpoint``
reads Microsoft's and Hugging Face's files, ``pretrained`` downloads them by name, ``mhfa`` is the
pooling head; ``speaker_file`` is the self-contained file of a trained encoder and ``export`` its
TorchScript / ONNX copies; ``ecapa_tdnn`` and ``dino`` are the DINO bootstrap's encoder and head.
Imports only ``utils``.
"""
from __future__ import annotations

import importlib
from typing import Callable

from utils.errors import InputError

KNOWN_MODELS = ("spk_encoder", "Baseline.Spk_Encoder")


def get_model_factory(name: str) -> Callable:
    """Return ``MainModel`` of module ``models.<name>``."""
    module_name = f"models.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name == error.name or module_name.startswith(error.name + ".")):
            raise
        raise InputError(f"unknown model {name!r}: no module {module_name}; known models: "
                         f"{', '.join(KNOWN_MODELS)}") from None
    factory = getattr(module, "MainModel", None)
    if not callable(factory):
        raise InputError(f"model module {module_name} defines no MainModel; known models: "
                         f"{', '.join(KNOWN_MODELS)}")
    return factory
