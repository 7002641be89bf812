"""Losses, chosen by the config's ``trainfunc`` name (a module under ``loss/`` defining ``LossFunction``).

``aamsoftmax`` is AAM-softmax with the dynamic loss gate and label correction; ``gate`` fits the
gate's threshold between epochs (``LGL_threshold_update_gmm``, the original's name); ``dino`` is the
DINO bootstrap's loss, with its centre and the teacher statistics that show a collapse. Imports only ``utils``.
"""
from loss.gate import LGL_threshold_update_gmm, NoCrossingError, gaussian_crossing, read_loss_file

__all__ = ["LGL_threshold_update_gmm", "NoCrossingError", "gaussian_crossing", "read_loss_file"]
