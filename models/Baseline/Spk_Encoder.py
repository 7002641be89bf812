"""The published config's ``model: Baseline.Spk_Encoder`` name for :mod:`models.spk_encoder`."""
from models.spk_encoder import MainModel, SpeakerEncoder

__all__ = ["MainModel", "SpeakerEncoder"]
