"""Process-group helpers: the same calls work in a plain process and under torchrun.

Outside a process group, rank is 0, world size is 1 and every collective is the identity.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from utils.errors import InputError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def local_rank() -> int:
    """The process's index on its node (torchrun's LOCAL_RANK), 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device_type: str) -> None:
    """Join the env:// rendezvous that torchrun sets up: nccl on CUDA, gloo otherwise."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise InputError(
            "--distributed needs the environment that torchrun sets "
            f"(missing {', '.join(missing)}); launch with "
            "`torchrun --nproc_per_node=N trainSpeakerNet.py ... --distributed`"
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every process."""
    if not is_distributed():
        return obj
    holder: List[Any] = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not is_distributed():
        return [obj]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_processes(flag: torch.Tensor) -> bool:
    """Whether the boolean tensor ``flag`` is true on every process (a decision they must all take together)."""
    if is_distributed():
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def gather_objects(obj: Any, dst: int = 0) -> Optional[List[Any]]:
    """Every process's ``obj``, in rank order, on process ``dst``; None on the others."""
    if not is_distributed():
        return [obj]
    gathered: Optional[List[Any]] = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


@torch.no_grad()
def average_buffers_(*modules: torch.nn.Module) -> None:
    """Average the floating-point buffers (batch-norm running statistics) of ``modules`` over the processes.

    Each process updates them from its own batches; the average (of batches of equal size) is the
    same on every process, so a replicated network stays identical everywhere, buffers included.
    """
    if not is_distributed():
        return
    buffers = [b for module in modules for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.all_reduce(flat)
    flat /= get_world_size()
    for buffer, values in zip(buffers, flat.split([b.numel() for b in buffers])):
        buffer.copy_(values.view_as(buffer))


def replicate(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel for ``device``, its buffers left to each process.

    Construction broadcasts rank 0's parameters. Buffers are not broadcast at each forward: a network
    with batch norms averages them after each step (:func:`average_buffers_`).
    """
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
