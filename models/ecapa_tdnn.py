r"""ECAPA-TDNN on log mel filterbanks (Desplanques et al., INTERSPEECH 2020): DINO's encoder, and a speaker encoder.

Waveforms (B, S) at 16 kHz become 80 log mel energies per 10 ms frame (25 ms window), each band minus
its mean over the utterance (``mean_norm``, on by default); then a TDNN layer, three SE-Res2Blocks
(dilations 2, 3, 4), multi-layer feature aggregation (the three blocks' outputs concatenated, 3C
channels), attentive statistics pooling with global context, batch norm and a linear layer to the
embedding. Layer sizes follow sslsv's ``ECAPATDNN`` (channels C, C, C, C, 3C; attention and
squeeze-excitation bottlenecks of 128; Res2Net scale 8).

The filterbank runs in float32 without autograd even under autocast: it has no parameters, and
bf16 log energies would lose the quiet bands.

As a speaker encoder (``model: ecapa_tdnn``) it starts from the teacher of a trainDINO.py checkpoint
(``--pretrained_model_path``), whose weights the L2 regulariser then pulls towards, or at random.
Its parameter groups: the pooling, its batch norm and the embedding layer are the head
(``--LR_MHFA``); the frame-level stages (first TDNN layer, the three blocks, the aggregation) the
backbone (``--LR_Transformer``, stage i scaled by ``--LLRD_factor``\ :sup:`i`).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
import torchaudio.transforms as AT
import yaml
from torch import Tensor, nn

from models.encoder import SpeakerEncoder
from utils.checkpoints import CheckpointError, read_state_dict
from utils.errors import InputError

SAMPLE_RATE = 16000
LOG_FLOOR = 1e-6
"""Added to the mel energies before the log, so that digital silence stays finite."""
RES2NET_SCALE = 8
BOTTLENECK_CHANNELS = 128
"""Width of the squeeze-excitation and attention bottlenecks."""


class LogMelFilterbank(nn.Module):
    """(B, S) waveforms -> (B, n_mels, frames) log mel energies, 25 ms Hann window, 10 ms hop.

    With ``mean_norm`` each band's mean over the utterance is subtracted (cepstral mean normalisation in
    the log mel domain): a fixed channel response then cancels, and so does the speaker's long-term
    spectrum, which is a strong cue wherever every speaker has a single channel.
    """

    def __init__(self, n_mels: int = 80, mean_norm: bool = True) -> None:
        super().__init__()
        self.mean_norm = mean_norm
        self.mel = AT.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160,
                                     n_mels=n_mels)

    def forward(self, waveforms: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(device_type=waveforms.device.type, enabled=False):
            energies = torch.log(self.mel(waveforms.float()) + LOG_FLOOR)
            return energies - energies.mean(dim=-1, keepdim=True) if self.mean_norm else energies


class ExportableLogMelFilterbank(nn.Module):
    """The same log mel energies as a :class:`LogMelFilterbank`, with the short-time Fourier transform written as a
    strided convolution with windowed cosine and sine kernels: ONNX has no complex tensors, which
    ``torch.stft`` returns. Equal to the original up to float rounding; used only for export."""

    def __init__(self, filterbank: LogMelFilterbank) -> None:
        super().__init__()
        spectrogram, mel_scale = filterbank.mel.spectrogram, filterbank.mel.mel_scale
        n_fft, hop = spectrogram.n_fft, spectrogram.hop_length
        window = spectrogram.window.double()
        left = (n_fft - window.numel()) // 2  # torch.stft centres a short window in the FFT frame
        window = F.pad(window, (left, n_fft - window.numel() - left))
        angles = 2 * torch.pi * torch.outer(torch.arange(n_fft // 2 + 1), torch.arange(n_fft)).double() / n_fft
        kernels = torch.cat([torch.cos(angles) * window, -torch.sin(angles) * window])
        self.register_buffer("kernels", kernels.float().unsqueeze(1))
        self.register_buffer("fb", mel_scale.fb.t().contiguous())
        self.pad, self.hop, self.bins = n_fft // 2, hop, n_fft // 2 + 1
        self.mean_norm = filterbank.mean_norm

    def forward(self, waveforms: Tensor) -> Tensor:
        padded = F.pad(waveforms.float().unsqueeze(1), (self.pad, self.pad), mode="reflect")
        parts = F.conv1d(padded, self.kernels, stride=self.hop)
        power = parts[:, :self.bins] ** 2 + parts[:, self.bins:] ** 2
        energies = torch.log(torch.matmul(self.fb, power) + LOG_FLOOR)
        return energies - energies.mean(dim=-1, keepdim=True) if self.mean_norm else energies


class TDNNBlock(nn.Module):
    """Dilated 1-D convolution (reflect padding keeps the frame count), ReLU, batch norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2, padding_mode="reflect")
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net: channel groups convolved in a cascade, each group also receiving the previous group's output."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int = RES2NET_SCALE) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA-TDNN channels ({channels}) must be a multiple of the Res2Net scale {scale}")
        self.scale = scale
        width = channels // scale
        self.convs = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: Tensor) -> Tensor:
        groups = torch.chunk(x, self.scale, dim=1)
        outputs = [groups[0]]
        previous: Optional[Tensor] = None
        for conv, group in zip(self.convs, groups[1:]):
            previous = conv(group if previous is None else group + previous)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    """Rescale each channel by a gate computed from the utterance-mean of all channels."""

    def __init__(self, channels: int, bottleneck: int = BOTTLENECK_CHANNELS) -> None:
        super().__init__()
        self.reduce = nn.Conv1d(channels, bottleneck, 1)
        self.expand = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean(dim=2, keepdim=True)))))
        return x * gate


class SERes2Block(nn.Module):
    """1x1 TDNN, dilated Res2Net convolution, 1x1 TDNN, squeeze-excitation, plus the block's input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels)
        self.res2 = Res2Conv(channels, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(channels, channels)
        self.se = SqueezeExcitation(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.se(self.tdnn2(self.res2(self.tdnn1(x))))


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over time, per channel: (B, C, T) -> (B, 2C).

    The attention sees each frame together with the utterance's mean and standard deviation
    (global context), as in ECAPA-TDNN.
    """

    def __init__(self, channels: int, attention_channels: int = BOTTLENECK_CHANNELS) -> None:
        super().__init__()
        self.tdnn = TDNNBlock(3 * channels, attention_channels)
        self.attention = nn.Conv1d(attention_channels, channels, 1)

    @staticmethod
    def _statistics(x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        mean = (weights * x).sum(dim=2)
        variance = (weights * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2)
        return mean, variance.clamp_min(1e-12).sqrt()

    def forward(self, x: Tensor) -> Tensor:
        frames = x.shape[2]
        mean, std = self._statistics(x, torch.full_like(x[:, :1], 1.0 / frames))
        context = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, frames), std.unsqueeze(2).expand(-1, -1, frames)],
                            dim=1)
        weights = torch.softmax(self.attention(torch.tanh(self.tdnn(context))), dim=2)
        return torch.cat(self._statistics(x, weights), dim=1)


class ECAPATDNN(SpeakerEncoder):
    """Waveforms (B, S) at 16 kHz to embeddings (B, nOut); see the module docstring.

    ``forward`` takes the speaker encoder's ``(waveforms, lengths)``; ``lengths`` is ignored, so
    every row is embedded as if all its samples were speech: rows of equal length batch exactly,
    zero-padded rows do not (``scoring.embedding`` batches only equal lengths for this encoder).
    """

    def __init__(self, channels: int = 1024, nOut: int = 192, n_mels: int = 80, mean_norm: bool = True) -> None:
        super().__init__()
        self.features = LogMelFilterbank(n_mels, mean_norm)
        self.layer1 = TDNNBlock(n_mels, channels, kernel_size=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, kernel_size=3, dilation=d) for d in (2, 3, 4))
        self.aggregation = TDNNBlock(3 * channels, 3 * channels)
        self.pooling = AttentiveStatisticsPooling(3 * channels)
        self.pooling_norm = nn.BatchNorm1d(6 * channels)
        self.embedding = nn.Linear(6 * channels, nOut)
        self._reference: Dict[str, Tensor] = {}

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        x = self.layer1(self.features(waveforms))
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        pooled = self.pooling(self.aggregation(torch.cat(outputs, dim=1)))
        return self.embedding(self.pooling_norm(pooled))

    @property
    def embedding_size(self) -> int:
        return self.embedding.out_features

    def parameter_groups(self, head_lr: float, backbone_lr: float, layer_decay: float) -> List[Dict[str, Any]]:
        stages = [self.layer1, *self.blocks, self.aggregation]
        head = [self.pooling, self.pooling_norm, self.embedding]
        groups = [{"params": [p for module in head for p in module.parameters()], "lr": head_lr}]
        groups += [{"params": list(stage.parameters()), "lr": backbone_lr * layer_decay ** index}
                   for index, stage in enumerate(stages)]
        return groups

    def reference_weights(self) -> Dict[str, Tensor]:
        return self._reference

    def traceable(self) -> "ECAPATDNN":
        """A copy whose filterbank ONNX can express (:class:`ExportableLogMelFilterbank`)."""
        copied = copy.deepcopy(self)
        copied.features = ExportableLogMelFilterbank(self.features)
        return copied

    def config(self) -> Dict[str, Any]:
        return {"channels": self.layer1.conv.out_channels, "nOut": self.embedding_size,
                "n_mels": self.layer1.conv.in_channels, "mean_norm": self.features.mean_norm}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], state: Optional[Mapping[str, Tensor]] = None) -> "ECAPATDNN":
        """Built on the CPU, not the meta device (torchaudio's filterbank cannot be built there), without
        touching the global random state; the model is small."""
        with torch.random.fork_rng(devices=[]):
            encoder = cls(**config)
        if state is not None:
            encoder.load_state_dict(state)
        return encoder

    @classmethod
    def config_from_options(cls, channels: int = 1024, nOut: int = 192, n_mels: int = 80, mean_norm: bool = True,
                            **options: Any) -> Dict[str, Any]:
        return {"channels": channels, "nOut": nOut, "n_mels": n_mels, "mean_norm": mean_norm}

    def load_dino_teacher(self, path: str) -> None:
        """Take the weights of the teacher of a trainDINO.py checkpoint; they become the L2 reference.

        Every tensor must fit (the error names the option that sets its shape). When the DINO run's
        ``config.yaml`` lies beside its ``model/`` folder, its ECAPA-TDNN options must equal this encoder's.
        """
        state = read_state_dict(path)
        teacher = {key[len(DINO_TEACHER_PREFIX):]: value for key, value in state.items()
                   if key.startswith(DINO_TEACHER_PREFIX)}
        if not teacher:
            raise CheckpointError(f"{path!r} holds no {DINO_TEACHER_PREFIX}* tensors: the ECAPA-TDNN encoder starts "
                                  "from a trainDINO.py checkpoint (save_path/model/model*.model), or at random "
                                  "without --pretrained_model_path")
        _check_dino_options(path, self.config())
        own = self.state_dict()
        problems = sorted(set(own) ^ set(teacher))[:4]
        problems += [f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}" for key, value in teacher.items()
                     if key in own and value.shape != own[key].shape][:4]
        if problems:
            raise CheckpointError(f"the DINO teacher of {path!r} does not fit this ECAPA-TDNN ({self.config()}): "
                                  f"{'; '.join(problems)}; set --channels, --nOut and --n_mels to the DINO run's")
        self.load_state_dict(teacher)
        self._reference = {name: parameter.detach().clone() for name, parameter in self.named_parameters()}


DINO_TEACHER_PREFIX = "teacher.backbone."
"""Keys of the teacher's ECAPA-TDNN in a trainDINO.py checkpoint."""


def _check_dino_options(path: str, config: Mapping[str, Any]) -> None:
    run_config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "config.yaml")
    if not os.path.isfile(run_config):
        return
    with open(run_config, encoding="utf-8") as handle:
        trained = yaml.safe_load(handle) or {}
    for key, value in config.items():
        if key in trained and trained[key] != value:
            raise InputError(f"{path!r} was trained with {key}: {trained[key]!r} ({run_config}); this encoder has "
                             f"{key} {value!r}: set --{key} {trained[key]}")


def MainModel(pretrained_model_path: Optional[str] = None, channels: int = 1024, nOut: int = 192, n_mels: int = 80,
              mean_norm: bool = True, **options: Any) -> ECAPATDNN:
    """The encoder training starts from: a DINO teacher (``pretrained_model_path``), else random weights."""
    encoder = ECAPATDNN(channels, nOut, n_mels, mean_norm)
    if pretrained_model_path:
        encoder.load_dino_teacher(pretrained_model_path)
    return encoder


ENCODER = ECAPATDNN
