"""A pre-trained speech transformer with an MHFA head: the speaker encoder of WavLM, HuBERT and wav2vec 2.0.

The three backbones are one network (:class:`models.wavlm.WavLM`; HuBERT and wav2vec 2.0 without
the relative position bias), so one class does the work; a subclass names its backbone's files
(:class:`models.wavlm_checkpoint.BackboneFormat`) and the key of its config. State-dict keys are
``model.*`` (the backbone, Microsoft / fairseq names) and ``backend.*`` (MHFA), i.e. the original
checkpoints' ``__S__.model.*`` and ``__S__.backend.*`` without the ``__S__.`` prefix.

Only the transformer layers are trained (docs/method.md §10: the original put the other WavLM
parameters in no optimiser group, so they never change); here they are also frozen
(``requires_grad=False``), which skips computing gradients that the original computed and threw away.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from models.encoder import SpeakerEncoder
from models.mhfa import MHFA
from models.pretrained import resolve_pretrained
from models.wavlm import WavLM, WavLMConfig
from models.wavlm_checkpoint import BackboneFormat, copy_pretrained_weights, read_backbone_config, read_pretrained
from utils.errors import InputError


class MHFAEncoder(SpeakerEncoder):
    """A backbone (``backbone_cfg``: a :class:`models.wavlm.WavLMConfig` dict) and an MHFA head of ``head_nb``
    heads over ``compression_dim``-dimensional keys and values, giving ``nOut``-dimensional embeddings."""

    BACKBONE: ClassVar[BackboneFormat]
    CONFIG_KEY: ClassVar[str] = "backbone_cfg"
    """The name of the backbone config in :meth:`config` (and so in speaker model files) and in ``__init__``."""
    KNOWN_NAME: ClassVar[str]
    """A name of models/pretrained.py that ``--pretrained_model_path`` takes, for messages."""

    def __init__(self, backbone_cfg: Mapping[str, Any], nOut: int = 256, head_nb: int = 64,
                 compression_dim: int = 128) -> None:
        super().__init__()
        self.model = WavLM(WavLMConfig.from_dict(backbone_cfg))
        self.backend = MHFA(num_layers=self.model.num_hidden_states, inputs_dim=self.model.embed_dim,
                            head_nb=head_nb, compression_dim=compression_dim, outputs_dim=nOut)
        in_layers = {id(p) for p in self.model.encoder.layers.parameters()}
        for parameter in self.model.parameters():
            if id(parameter) not in in_layers:
                parameter.requires_grad_(False)
        self._reference: Dict[str, Tensor] = {}

    @property
    def padding_is_exact(self) -> bool:  # type: ignore[override]
        """Only the ``layer_norm`` extractor leaves valid frames untouched by padding (scoring/embedding.py)."""
        return self.model.cfg.extractor_mode == "layer_norm"

    @property
    def embedding_size(self) -> int:
        return self.backend.pooling_fc.out_features

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """``lengths`` (B,) gives each row's valid samples; see :meth:`WavLM.forward` for padding."""
        hidden_states = self.model(waveforms, lengths)
        frame_mask = None
        if lengths is not None:
            frames = torch.arange(hidden_states[0].shape[1], device=waveforms.device)
            frame_mask = frames[None, :] < self.model.frame_lengths(lengths).to(waveforms.device)[:, None]
        return self.backend(hidden_states, frame_mask)

    def parameter_groups(self, head_lr: float, backbone_lr: float, layer_decay: float) -> List[Dict[str, Any]]:
        """MHFA at ``head_lr``; transformer layer i at ``backbone_lr * layer_decay**i`` (docs/method.md §5)."""
        groups = [{"params": list(self.backend.parameters()), "lr": head_lr}]
        for index, layer in enumerate(self.model.encoder.layers):
            groups.append({"params": list(layer.parameters()), "lr": backbone_lr * layer_decay ** index})
        return groups

    def reference_weights(self) -> Dict[str, Tensor]:
        """The pre-trained backbone weights (``model.*``), frozen ones included, as in the original's L2 term."""
        return self._reference

    def load_pretrained(self, weights: Mapping[str, Any], source: str) -> None:
        """Copy a pre-trained backbone's weights (Microsoft / fairseq names) in; they become the reference."""
        loaded = copy_pretrained_weights(self.model, weights, source)
        self._reference = {f"model.{key}": value for key, value in loaded.items()}

    def config(self) -> Dict[str, Any]:
        return {self.CONFIG_KEY: self.model.cfg.to_dict(), "nOut": self.embedding_size,
                "head_nb": self.backend.att_head.out_features,
                "compression_dim": self.backend.cmp_linear_k.out_features}

    @classmethod
    def config_from_options(cls, pretrained_model_path: Optional[str] = None, nOut: int = 256, head_nb: int = 64,
                            compression_dim: int = 128, trust_checkpoint: bool = False,
                            model_cache: Optional[str] = None, **options: Any) -> Dict[str, Any]:
        """The config of the options' encoder; of the pre-trained backbone only its configuration is read."""
        path = resolve_pretrained(cls._required_path(pretrained_model_path), model_cache)
        cfg = read_backbone_config(path, cls.BACKBONE, trust_checkpoint)
        return {cls.CONFIG_KEY: cfg.to_dict(), "nOut": nOut, "head_nb": head_nb, "compression_dim": compression_dim}

    @classmethod
    def pretrained(cls, pretrained_model_path: Optional[str] = None, nOut: int = 256, head_nb: int = 64,
                   compression_dim: int = 128, trust_checkpoint: bool = False, model_cache: Optional[str] = None,
                   **options: Any) -> "MHFAEncoder":
        """The encoder training starts from: the pre-trained backbone and a new MHFA head (other options ignored).

        The backbone is built (and randomly initialised) before the head, then the pre-trained weights are
        copied in: the random draws of the head are those of the original.
        """
        path = resolve_pretrained(cls._required_path(pretrained_model_path), model_cache)
        cfg, weights = read_pretrained(path, cls.BACKBONE, trust_checkpoint)
        encoder = cls(cfg.to_dict(), nOut=nOut, head_nb=head_nb, compression_dim=compression_dim)
        encoder.load_pretrained(weights, path)
        return encoder

    @classmethod
    def _required_path(cls, pretrained_model_path: Optional[str]) -> str:
        if not pretrained_model_path:
            backbone = cls.BACKBONE
            raise InputError(f"the {backbone.name} + MHFA encoder needs --pretrained_model_path (a {backbone.name} "
                             f"checkpoint, e.g. {backbone.example_file}, a Hugging Face {backbone.huggingface_class} "
                             f"folder, or a known name such as {cls.KNOWN_NAME})")
        return pretrained_model_path
