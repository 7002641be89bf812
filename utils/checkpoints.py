"""Checkpoint files: the one place that knows their names and key layout (docs/method.md §3, §5).

A training run writes, every ``test_interval`` epochs, into ``save_path/model``:

* ``model%09d.model``: the flat ``SpeakerNet.state_dict()`` in the original's layout
  (``__S__.model.<WavLM key>``, ``__S__.backend.*``, ``__L__.weight``), so the original project's
  loader reads our checkpoints and ours reads the original's (optionally ``module.``-prefixed);
* ``state%09d.pt``: what a resume needs besides the weights: optimizer, scheduler, gate threshold,
  epoch, and every process's random-generator states.

Both are written atomically (temporary file + rename).
"""
from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from utils.atomic import atomic_torch_save
from utils.errors import InputError

MODEL_FILE = "model%09d.model"
STATE_FILE = "state%09d.pt"
LOSS_PREFIX = "__L__."
_MODEL_FILE_RE = re.compile(r"^model(\d+)\.model$")
_DDP_PREFIX = "module."
_WRAPPER_KEYS = ("model", "state_dict")
_SHOWN = 8


class CheckpointError(InputError):
    """A checkpoint that does not fit the model; the message names the file and the tensors."""


def model_path(model_dir: str, epoch: int) -> str:
    return os.path.join(model_dir, MODEL_FILE % epoch)


def state_path(model_dir: str, epoch: int) -> str:
    return os.path.join(model_dir, STATE_FILE % epoch)


def list_checkpoints(model_dir: str) -> List[Tuple[int, str]]:
    """``(epoch, path)`` of every ``model%09d.model`` in ``model_dir``, oldest first."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for name in os.listdir(model_dir):
        match = _MODEL_FILE_RE.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(model_dir, name)))
    return sorted(found)


def newest_checkpoint(model_dir: str) -> Optional[Tuple[int, str]]:
    """The newest ``(epoch, path)`` in ``model_dir``, or None when there is none."""
    found = list_checkpoints(model_dir)
    return found[-1] if found else None


_WEIGHTS_ONLY_DETAIL = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")
_REFUSED_GLOBAL = re.compile(r"^Unsupported global: GLOBAL (\S+)")


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (the type alone when there is no message)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def load_file(path: str, what: str = "checkpoint", weights_only: bool = True, mmap: bool = False,
              refused_hint: str = "", pickle_module: Optional[Any] = None) -> Any:
    """``torch.load`` of ``path`` on the CPU, with safe (weights-only) unpickling unless ``weights_only`` is off.

    A missing, empty, truncated or foreign file, and one that safe unpickling refuses, raise a CheckpointError
    of one line naming ``what`` and the file (``refused_hint`` is added to the refusal); PyTorch's own
    several-line advice is left out. ``mmap`` maps a zip-format file instead of reading it; ``pickle_module``
    replaces pickle for a full (not weights-only) load.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} {path!r} is unreadable: empty, truncated or not a PyTorch file (it holds "
                              "0 bytes)")
    try:
        extra = {"pickle_module": pickle_module} if pickle_module is not None and not weights_only else {}
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap and zipfile.is_zipfile(path),
                          **extra)
    except pickle.UnpicklingError as error:
        detail = _WEIGHTS_ONLY_DETAIL.search(str(error))
        refused = _REFUSED_GLOBAL.match(detail.group(1)) if detail else None
        if refused:
            raise CheckpointError(f"{what} {path!r} holds objects other than tensors and plain containers (such as "
                                  f"{refused.group(1)}), so safe loading refuses it (unpickling it could run code)"
                                  f"{refused_hint}") from None
        reason = detail.group(1) if detail else _first_line(error)
    except Exception as error:  # torch.load raises many types for an empty, truncated or foreign file
        reason = _first_line(error)
    raise CheckpointError(f"{what} {path!r} is unreadable: empty, truncated or not a PyTorch file ({reason})")


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf: training diverged when they were saved."""
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise CheckpointError(f"{source}: tensor {bad[0]!r} holds NaN or inf values{more}; these weights come "
                              "from a diverged run and cannot be used")


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A checkpoint's flat ``name -> tensor`` dict on the CPU, without a DDP ``module.`` prefix.

    Also accepts the flat dict wrapped under ``'model'`` or ``'state_dict'``. An unreadable file or
    a tensor with NaN or inf values is a CheckpointError naming the file (and the tensor).
    """
    loaded = load_file(path)
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"checkpoint {path!r} is not a non-empty dict of tensors")
    state: Dict[str, torch.Tensor] = {}
    for name, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint {path!r}: entry {name!r} is a {type(value).__name__}, not a tensor")
        key = name[len(_DDP_PREFIX):] if name.startswith(_DDP_PREFIX) else name
        if key in state:
            raise CheckpointError(f"checkpoint {path!r} holds {key!r} both with and without the 'module.' prefix")
        state[key] = value
    check_finite(state, f"checkpoint {path!r}")
    return state


def _listing(names: List[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _shape_hint(name: str, saved: torch.Size, expected: torch.Size) -> str:
    if name == LOSS_PREFIX + "weight" and len(saved) == 2 and len(expected) == 2:
        if saved[0] != expected[0]:
            return f" — set --nClasses {saved[0]}"
        return f" — set --nOut {saved[1]}"
    return ""


def load_weights(speaker_net: nn.Module, path: str, strict_loss: bool = True, assign: bool = False) -> None:
    """Copy a checkpoint (ours or the original's) into ``speaker_net``; every tensor must match.

    With ``strict_loss=False`` (evaluation, embedding) the AAM weight ``__L__.*`` is neither
    required nor loaded, so a model built with another ``nClasses`` still loads. With ``assign`` the
    checkpoint's tensors become the parameters instead of being copied (for a model built on the
    meta device).
    """
    saved = read_state_dict(path)
    own = speaker_net.state_dict()

    def wanted(name: str) -> bool:
        return strict_loss or not name.startswith(LOSS_PREFIX)

    saved = {k: v for k, v in saved.items() if wanted(k)}
    missing = sorted(k for k in own if wanted(k) and k not in saved)
    unexpected = sorted(k for k in saved if k not in own)
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_listing(unexpected)}")
    for name in sorted(k for k in saved if k in own and saved[k].shape != own[k].shape):
        problems.append(f"{name}: checkpoint {tuple(saved[name].shape)} vs model {tuple(own[name].shape)}"
                        + _shape_hint(name, saved[name].shape, own[name].shape))
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not fit the model:\n  " + "\n  ".join(problems))
    speaker_net.load_state_dict(saved, strict=strict_loss, assign=assign)


def save_weights(speaker_net: nn.Module, path: str) -> None:
    """Write ``speaker_net``'s flat state dict (original layout, no ``module.`` prefix) atomically."""
    atomic_torch_save({k: v.detach().cpu() for k, v in speaker_net.state_dict().items()}, path)


def capture_rng_state() -> Dict[str, Any]:
    """This process's torch, CUDA, numpy and ``random`` generator states, in a weights_only-loadable form."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "random": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(model_dir: str, epoch: int, speaker_net: nn.Module, resume_state: Dict[str, Any]) -> str:
    """Write ``model%09d.model`` and ``state%09d.pt`` for ``epoch``; returns the model file's path.

    The state file is written first, so a model file never exists without its state.
    """
    atomic_torch_save(dict(resume_state, epoch=epoch), state_path(model_dir, epoch))
    path = model_path(model_dir, epoch)
    save_weights(speaker_net, path)
    return path


def read_resume_state(path: str) -> Dict[str, Any]:
    """A ``state%09d.pt`` file's dict."""
    state = load_file(path, "resume state")
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"resume state {path!r} is not a dict with an 'epoch' entry")
    return state


def average_state_dicts(paths: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints at ``paths`` (same keys and shapes in every one)."""
    if not paths:
        raise ValueError("average_state_dicts needs at least one checkpoint")
    first = read_state_dict(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for path in paths[1:]:
        state = read_state_dict(path)
        if state.keys() != sums.keys():
            extra = sorted(state.keys() - sums.keys())[:3]
            lacking = sorted(sums.keys() - state.keys())[:3]
            raise CheckpointError(f"checkpoint {path!r} has different keys from {paths[0]!r}: "
                             f"extra {extra}, missing {lacking}")
        for key, value in state.items():
            if value.shape != sums[key].shape:
                raise CheckpointError(f"checkpoint {path!r}: {key} has shape {tuple(value.shape)}, "
                                 f"{paths[0]!r} has {tuple(sums[key].shape)}")
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, sums[key]):
                raise CheckpointError(f"checkpoint {path!r}: non-float tensor {key} differs from {paths[0]!r}; "
                                 "it cannot be averaged")
    return {k: (v / len(paths)).to(first[k].dtype) if first[k].is_floating_point() else v
            for k, v in sums.items()}


def newest_checkpoint_paths(model_dir: str, count: int) -> List[str]:
    """The newest ``count`` checkpoints of ``model_dir`` (``model%09d.model``), oldest first."""
    if count < 1:
        raise InputError(f"the number of checkpoints to average must be at least 1, got {count}")
    found = list_checkpoints(model_dir)
    if len(found) < count:
        raise CheckpointError(f"{model_dir!r} holds {len(found)} checkpoint(s); {count} requested")
    return [path for _, path in found[-count:]]
