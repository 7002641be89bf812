"""ECAPA-TDNN on log mel filterbanks (Desplanques et al., INTERSPEECH 2020): the DINO bootstrap's encoder.

Waveforms (B, S) at 16 kHz become 80 log mel energies per 10 ms frame (25 ms window), each band minus
its mean over the utterance (``mean_norm``, on by default); then a TDNN layer, three SE-Res2Blocks
(dilations 2, 3, 4), multi-layer feature aggregation (the three blocks' outputs concatenated, 3C
channels), attentive statistics pooling with global context, batch norm and a linear layer to the
embedding. Layer sizes follow sslsv's ``ECAPATDNN`` (channels C, C, C, C, 3C; attention and
squeeze-excitation bottlenecks of 128; Res2Net scale 8).

The filterbank runs in float32 without autograd even under autocast: it has no parameters, and
bf16 log energies would lose the quiet bands.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import torchaudio.transforms as AT
from torch import Tensor, nn

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


class ECAPATDNN(nn.Module):
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

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        x = self.layer1(self.features(waveforms))
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        pooled = self.pooling(self.aggregation(torch.cat(outputs, dim=1)))
        return self.embedding(self.pooling_norm(pooled))
