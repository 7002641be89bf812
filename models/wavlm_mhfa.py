"""WavLM + MHFA: the speaker encoder of the published system (docs/method.md §3; models/mhfa_encoder.py)."""
from __future__ import annotations

from typing import Any, Mapping

from models.mhfa_encoder import MHFAEncoder
from models.wavlm_checkpoint import WAVLM


class WavLMMHFA(MHFAEncoder):
    """WavLM (``wavlm_cfg``: a :class:`models.wavlm.WavLMConfig` dict) and an MHFA head."""

    BACKBONE = WAVLM
    CONFIG_KEY = "wavlm_cfg"
    KNOWN_NAME = "wavlm-base-plus"

    def __init__(self, wavlm_cfg: Mapping[str, Any], nOut: int = 256, head_nb: int = 64,
                 compression_dim: int = 128) -> None:
        super().__init__(wavlm_cfg, nOut=nOut, head_nb=head_nb, compression_dim=compression_dim)


def MainModel(**options: Any) -> MHFAEncoder:
    """The pre-trained WavLM and a new MHFA head (:meth:`MHFAEncoder.pretrained`)."""
    return WavLMMHFA.pretrained(**options)


ENCODER = WavLMMHFA
