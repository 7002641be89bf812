"""The original's ``DatasetLoader.py`` interface (docs/method.md §9), implemented in the ``dataio`` package.

Audio reading and crops: dataio/audio.py; MUSAN / RIR augmentation: dataio/augment.py; the datasets:
dataio/datasets.py; the sampler: dataio/sampler.py.
"""
from dataio.audio import loadWAV
from dataio.augment import AugmentWAV
from dataio.datasets import test_dataset_loader, train_dataset_loader, worker_init_fn
from dataio.sampler import round_down, train_dataset_sampler

__all__ = ["AugmentWAV", "loadWAV", "round_down", "test_dataset_loader", "train_dataset_loader",
           "train_dataset_sampler", "worker_init_fn"]
