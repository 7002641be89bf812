"""TorchScript and ONNX copies of a speaker encoder: waveform (B, S) of any length to embedding (B, nOut).

Both are traced from the encoder in evaluation mode (no dropout, no layer drop) on the CPU, with one
input ``waveform`` whose batch and time axes are dynamic and one output ``embedding``. They hold the
network only: the evaluation protocol's crops and averaging (docs/method.md §7) stay in Python around
them. Padding lengths are not part of the traced signature: every row of a batch is a whole waveform.
Writing the ONNX file needs the ``onnx`` package and running it ``onnxruntime``: optional dependencies,
in requirements-test.txt.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import warnings
from typing import Iterator

import torch
from torch import nn

from models.encoder import SpeakerEncoder
from utils.atomic import atomic_path
from utils.errors import InputError

ONNX_OPSET = 17
_EXAMPLE_SAMPLES = 16000


def _traceable(encoder: nn.Module) -> nn.Module:
    """A CPU float32 copy of ``encoder`` (of its ``traceable()`` form) in evaluation mode; the caller's module is
    left as it was."""
    traceable = encoder.traceable() if isinstance(encoder, SpeakerEncoder) else encoder
    return copy.deepcopy(traceable).cpu().float().eval()


def _example() -> torch.Tensor:
    return torch.zeros(1, _EXAMPLE_SAMPLES)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's warnings about WavLM's and MHFA's Python input checks (length against the receptive
    field, hidden-state count): they hold for every waveform the exported graph is meant for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_torchscript(encoder: nn.Module, path: str) -> None:
    """Write a traced TorchScript copy of ``encoder`` to ``path`` (``torch.jit.load`` reads it), atomically."""
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(_traceable(encoder), (_example(),), check_trace=False)
    with atomic_path(path) as tmp_path:
        torch.jit.save(traced, tmp_path)


def export_onnx(encoder: nn.Module, path: str) -> None:
    """Write an ONNX copy of ``encoder`` to ``path`` (opset 17; input ``waveform``, output ``embedding``), atomically.

    Uses the TorchScript-based exporter (``dynamo=False``): the newer one needs ``onnxscript`` as well.
    """
    if importlib.util.find_spec("onnx") is None:
        raise InputError("writing ONNX needs the onnx package (pip install onnx onnxruntime; requirements-test.txt)")
    with _quiet_tracing(), torch.no_grad(), atomic_path(path) as tmp_path:
        torch.onnx.export(_traceable(encoder), (_example(),), tmp_path, input_names=["waveform"],
                          output_names=["embedding"], opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "embedding": {0: "batch"}})
