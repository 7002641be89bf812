"""The original's ``SpeakerNet.py`` interface, implemented in the ``training`` package.

``SpeakerNet`` (encoder ``__S__`` + loss ``__L__``, the checkpoints' key layout): training/speaker_net.py;
``ModelTrainer`` (AdamW, StepLR, the loss's hooks, one step): training/speaker_trainer.py.
"""
from training.speaker_net import SpeakerNet
from training.speaker_trainer import ModelTrainer

__all__ = ["ModelTrainer", "SpeakerNet"]
