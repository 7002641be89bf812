"""Which torch device a script runs on: the ``--device`` option resolved once, the same for every script,
the process group a ``--distributed`` run joins on it, and bf16 autocast (``--mixedprec``) there."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

import torch

from utils.distributed import cleanup, get_rank, init_distributed, is_main_process, local_rank
from utils.errors import InputError

logger = logging.getLogger(__name__)


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on ``device`` (every CPU; CUDA devices with bf16 support)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False


def bf16_autocast(device: torch.device, wanted: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``wanted`` (``--mixedprec``) and supported there, else a disabled one."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=wanted and bf16_autocast_supported(device))


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


THREADS_ENV = "OMP_NUM_THREADS"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a cluster job's share), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_torch_threads(threads: int, workers: int) -> int:
    """Set torch's CPU threads for a run with ``workers`` DataLoader worker processes; returns the count.

    ``threads`` > 0 is used as given; 0 means $OMP_NUM_THREADS when set (run_rounds.py sets it), else the
    cores the workers leave, at least 1. Torch's own default, a thread per core, puts the model's threads on
    the cores where the workers decode audio: its threads wait for one another at every operation, and on a
    busy machine a run was 6x slower (docs/speed.md).
    """
    if threads == 0:
        from_environment = os.environ.get(THREADS_ENV, "").strip()
        threads = int(from_environment) if from_environment.isdigit() and int(from_environment) > 0 else \
            max(1, available_cores() - workers)
    torch.set_num_threads(threads)
    logger.info("%d torch thread(s) beside %d DataLoader worker(s) on %d core(s)", threads, workers, available_cores())
    return threads


@contextlib.contextmanager
def device_session(name: str, distributed: bool) -> Iterator[torch.device]:
    """An entry point's run on ``--device name``: under ``--distributed`` the torchrun process group is joined
    first and left at the end. Logging goes to standard output with the process's rank, at INFO on the
    main process and WARNING on the others."""
    device = resolve_device(name, distributed)
    if distributed:
        init_distributed(device.type)
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format=f"%(asctime)s [rank {get_rank()}] %(message)s", stream=sys.stdout)
    try:
        yield device
    finally:
        cleanup()
