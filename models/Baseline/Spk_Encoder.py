"""The published config's ``model: Baseline.Spk_Encoder``: WavLM + MHFA (:mod:`models.wavlm_mhfa`)."""
from models.wavlm_mhfa import ENCODER, MainModel, WavLMMHFA

__all__ = ["ENCODER", "MainModel", "WavLMMHFA"]
