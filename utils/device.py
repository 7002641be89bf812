"""Which torch device a script runs on: the ``--device`` option resolved once, the same for every script."""
from __future__ import annotations

import torch

from utils.distributed import local_rank
from utils.errors import InputError


def resolve_device(name: str, distributed: bool = False) -> torch.device:
    """``auto`` -> cuda when available, else cpu; under torchrun each process takes its LOCAL_RANK's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto ({error})") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank() if distributed else torch.cuda.current_device())
    return device
