"""The original's ``tuneThreshold.py`` interface (docs/method.md §9), implemented in scoring/metrics.py.

``tuneThresholdfromScore``, ``ComputeErrorRates`` and ``ComputeMinDcf`` keep voxceleb_trainer's names,
signatures and return types; ``compute_eer_mindcf`` gives the EER and every minDCF from one sort.
"""
from scoring.metrics import ComputeErrorRates, ComputeMinDcf, compute_eer_mindcf, tuneThresholdfromScore

__all__ = ["ComputeErrorRates", "ComputeMinDcf", "compute_eer_mindcf", "tuneThresholdfromScore"]
