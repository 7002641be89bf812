"""HuBERT + MHFA (models/mhfa_encoder.py): HuBERT Base or Large from fairseq's or Hugging Face's files."""
from __future__ import annotations

from typing import Any

from models.fairseq_checkpoint import HUBERT
from models.mhfa_encoder import MHFAEncoder


class HuBERTMHFA(MHFAEncoder):
    BACKBONE = HUBERT
    KNOWN_NAME = "hubert-base-ls960"


def MainModel(**options: Any) -> MHFAEncoder:
    """The pre-trained HuBERT and a new MHFA head (:meth:`MHFAEncoder.pretrained`)."""
    return HuBERTMHFA.pretrained(**options)


ENCODER = HuBERTMHFA
