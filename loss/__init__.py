"""Losses, chosen by the config's ``trainfunc`` name: a module ``loss/<trainfunc>.py`` defining ``LossFunction``.

``speaker_loss`` states the interface (a :class:`SpeakerLoss` with between-epoch hooks); ``aam`` is plain
AAM-softmax; ``aamsoftmax`` is the published system's AAM-softmax with the dynamic loss gate and label
correction; ``gate`` fits the gate's threshold between epochs (``LGL_threshold_update_gmm``, the
original's name); ``dino`` is the DINO bootstrap's loss, with its centre and the teacher statistics
that show a collapse. Imports only ``utils``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, List

from loss.gate import LGL_threshold_update_gmm, NoCrossingError, gaussian_crossing, read_loss_file
from loss.speaker_loss import SpeakerLoss
from utils.errors import InputError

__all__ = ["LGL_threshold_update_gmm", "NoCrossingError", "SpeakerLoss", "gaussian_crossing", "loss_function",
           "read_loss_file", "speaker_losses"]


def speaker_losses() -> List[str]:
    """The ``trainfunc`` names of the speaker losses under ``loss/``."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        factory = getattr(importlib.import_module(f"loss.{info.name}"), "LossFunction", None)
        if isinstance(factory, type) and issubclass(factory, SpeakerLoss):
            names.append(info.name)
    return sorted(names)


def loss_function(trainfunc: str) -> Callable[..., SpeakerLoss]:
    """``LossFunction`` of ``loss/<trainfunc>.py``, a :class:`SpeakerLoss`."""
    try:
        module = importlib.import_module(f"loss.{trainfunc}")
    except ModuleNotFoundError as error:
        if error.name not in (f"loss.{trainfunc}", "loss"):
            raise
        raise InputError(f"unknown trainfunc {trainfunc!r}; the losses are {', '.join(speaker_losses())}") from None
    factory = getattr(module, "LossFunction", None)
    if not (isinstance(factory, type) and issubclass(factory, SpeakerLoss)):
        raise InputError(f"trainfunc {trainfunc!r}: loss/{trainfunc}.py defines no LossFunction that is a "
                         f"SpeakerLoss (loss/speaker_loss.py); the losses are {', '.join(speaker_losses())}")
    return factory
