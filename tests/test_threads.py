"""Torch's CPU threads while embedding: the cores the DataLoader workers leave, unless told otherwise."""
import pytest
import torch

from utils import device


@pytest.mark.parametrize("threads, workers, environment, expected", [
    (0, 2, None, 1),  # 2 cores, 2 workers: one thread, not one per core beside the workers
    (0, 0, None, 2),
    (0, 10, None, 1),
    (3, 2, None, 3),
    (0, 2, "4", 4),   # run_rounds.py --threads sets OMP_NUM_THREADS for its steps
    (0, 2, "", 1),
])
def test_threads_default_to_the_cores_the_workers_leave(monkeypatch, threads, workers, environment, expected):
    monkeypatch.setattr(device, "available_cores", lambda: 2)
    if environment is None:
        monkeypatch.delenv(device.THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(device.THREADS_ENV, environment)
    assert device.set_torch_threads(threads, workers) == expected
    assert torch.get_num_threads() == expected
