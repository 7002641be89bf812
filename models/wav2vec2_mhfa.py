"""wav2vec 2.0 + MHFA (models/mhfa_encoder.py): wav2vec 2.0 Base or Large from fairseq's or Hugging Face's files."""
from __future__ import annotations

from typing import Any

from models.fairseq_checkpoint import WAV2VEC2
from models.mhfa_encoder import MHFAEncoder


class Wav2Vec2MHFA(MHFAEncoder):
    BACKBONE = WAV2VEC2
    KNOWN_NAME = "wav2vec2-base"


def MainModel(**options: Any) -> MHFAEncoder:
    """The pre-trained wav2vec 2.0 and a new MHFA head (:meth:`MHFAEncoder.pretrained`)."""
    return Wav2Vec2MHFA.pretrained(**options)


ENCODER = Wav2Vec2MHFA
