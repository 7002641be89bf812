"""Loss functions, chosen by name from the config (``trainfunc``), and the loss gate's threshold fit."""
from loss.gate import LGL_threshold_update_gmm, NoCrossingError, gaussian_crossing, read_loss_file

__all__ = ["LGL_threshold_update_gmm", "NoCrossingError", "gaussian_crossing", "read_loss_file"]
