"""Audio I/O, crops, augmentation, the training and test datasets and the training sampler (SPEC §6).

Names and signatures of the original's ``DatasetLoader.py`` are kept (SPEC §9). Randomness follows
the original: crop starts and augmentation draws use Python's ``random`` module (which PyTorch seeds
in every DataLoader worker), the sampler uses a ``torch.Generator`` seeded ``seed + epoch``.

Audio is read as float32 (the same values the original's float64 read gives for 8/16/24-bit PCM and
float32 files); crops are returned as float64 like the original's ``loadWAV`` and the worker-side
augmentation runs in float64; the datasets hand float32 tensors to the trainer.
"""
from __future__ import annotations

import glob
import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio.transforms as AT
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from audio_augment import add_scaled_noise, augment_batch, reverberate, scale_noise, unit_energy
from utils import distributed as dist_utils

SAMPLE_RATE = 16000
_log = logging.getLogger(__name__)
_warned: Set[str] = set()
_RESAMPLERS: Dict[int, AT.Resample] = {}


class AudioReadError(RuntimeError):
    """An audio file could not be read or holds no samples."""


def crop_samples(max_frames: int) -> int:
    """Samples in a crop of ``max_frames`` 10 ms frames: ``max_frames * 160 + 240``."""
    return max_frames * 160 + 240


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


def _resampler(rate: int) -> AT.Resample:
    """One ``Resample`` to 16 kHz per source rate: its sinc kernel is built once, not once per file.

    Its kernel is built in float32, the dtype of every signal read here, as
    ``torchaudio.functional.resample`` builds it for a float32 signal: the results are bit-identical.
    """
    if rate not in _RESAMPLERS:
        _RESAMPLERS[rate] = AT.Resample(rate, SAMPLE_RATE, dtype=torch.float32)
    return _RESAMPLERS[rate]


def read_audio(path: str) -> np.ndarray:
    """Read any file soundfile can open as float32 mono at 16 kHz.

    Multi-channel audio is averaged to mono and other sample rates are resampled as
    ``torchaudio.functional.resample`` does (one cached kernel per source rate); each of these
    conversions is logged once per process.
    """
    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:
        raise AudioReadError(f"cannot read audio file {path}: {err}") from err
    if audio.shape[0] == 0:
        raise AudioReadError(f"audio file {path} holds no samples")
    if audio.shape[1] > 1:
        _warn_once("channels", f"{path} has {audio.shape[1]} channels; averaging multi-channel files to mono")
        audio = audio.mean(axis=1, dtype=np.float32)
    else:
        audio = audio[:, 0]
    if rate != SAMPLE_RATE:
        _warn_once("rate", f"{path} is sampled at {rate} Hz; resampling files to {SAMPLE_RATE} Hz")
        with torch.no_grad():
            audio = _resampler(rate)(torch.from_numpy(np.ascontiguousarray(audio))).numpy()
    return np.ascontiguousarray(audio)


def crop_audio(audio: np.ndarray, max_frames: int, evalmode: bool = True, num_eval: int = 5) -> np.ndarray:
    """Crops of ``crop_samples(max_frames)`` samples from a 1-D signal, as float64 ``(n_crops, samples)``.

    A signal no longer than a crop is first wrap-padded to one sample more than a crop. Train mode
    (``evalmode=False``) takes one crop at a random start; eval mode takes ``num_eval`` crops with
    starts spread evenly over the signal, or the whole signal when ``max_frames == 0``.
    """
    if audio.ndim != 1 or audio.shape[0] == 0:
        raise ValueError(f"crop_audio expects a non-empty 1-D signal, got shape {audio.shape}")
    max_audio = crop_samples(max_frames)
    if audio.shape[0] <= max_audio:
        audio = np.pad(audio, (0, max_audio - audio.shape[0] + 1), mode="wrap")
    size = audio.shape[0]
    if evalmode and max_frames == 0:
        crops = audio[np.newaxis]
    else:
        if evalmode:
            starts = np.linspace(0, size - max_audio, num=num_eval)
        else:
            starts = [random.random() * (size - max_audio)]
        crops = np.stack([audio[int(s) : int(s) + max_audio] for s in starts])
    return crops.astype(np.float64)


def loadWAV(filename: str, max_frames: int, evalmode: bool = True, num_eval: int = 5) -> np.ndarray:
    """Read ``filename`` and crop it (:func:`crop_audio`): float64 ``(n_crops, samples)``."""
    return crop_audio(read_audio(filename), max_frames, evalmode, num_eval)


@dataclass
class AugmentPlan:
    """One sample's drawn augmentation: an optional unit-energy RIR, then noise stages in order."""

    rir: Optional[Tensor]
    noises: Tuple[Tensor, ...]


SIXTH_AUGMENTATIONS = ("faithful", "babble_music")


class AugmentWAV:
    """MUSAN noise and simulated-RIR reverberation, drawn as in the original (SPEC §6).

    ``sixth_augmentation``: 'faithful' makes the sixth choice music only, as the original does
    (**quirk**); 'babble_music' adds babble and then music, the music gain taken from the babbled
    signal. In 'faithful' mode the babble the original draws and throws away is not drawn.
    """

    NOISE_SNR = {"noise": (0.0, 15.0), "speech": (13.0, 20.0), "music": (5.0, 15.0)}
    NOISE_COUNT = {"noise": (1, 1), "speech": (3, 8), "music": (1, 1)}
    LAYOUT = "musan_path/{music,speech,noise}/<subfolder>/<file>.wav (MUSAN cut into 5 s pieces)"

    def __init__(self, musan_path: str, rir_path: str, max_frames: int, sixth_augmentation: str = "faithful") -> None:
        if sixth_augmentation not in SIXTH_AUGMENTATIONS:
            raise ValueError(f"sixth_augmentation must be one of {SIXTH_AUGMENTATIONS}, got {sixth_augmentation!r}")
        self.max_frames = max_frames
        self.max_audio = crop_samples(max_frames)
        self.sixth_augmentation = sixth_augmentation
        self.noiselist = self._musan_files(musan_path)
        self.rir_files = sorted(glob.glob(os.path.join(glob.escape(rir_path), "*", "*", "*.wav")))
        if not self.rir_files:
            raise FileNotFoundError(
                f"rir_path {rir_path!r} holds no impulse responses; expected rir_path/<folder>/<subfolder>/<file>.wav "
                "(e.g. RIRS_NOISES/simulated_rirs)"
            )
        sixth = ("music",) if sixth_augmentation == "faithful" else ("speech", "music")
        self.kind_noises: Tuple[Tuple[str, ...], ...] = ((), (), ("music",), ("speech",), ("noise",), sixth)
        self.noise_stages = len(sixth)

    def _musan_files(self, musan_path: str) -> Dict[str, List[str]]:
        if not os.path.isdir(musan_path):
            raise FileNotFoundError(f"musan_path {musan_path!r} is not a folder; expected {self.LAYOUT}")
        files: Dict[str, List[str]] = {}
        for path in sorted(glob.glob(os.path.join(glob.escape(musan_path), "*", "*", "*.wav"))):
            category = os.path.relpath(path, musan_path).split(os.sep)[0]
            files.setdefault(category, []).append(path)
        for category, (_, most) in self.NOISE_COUNT.items():
            found = len(files.get(category, []))
            if found < most:
                raise FileNotFoundError(
                    f"musan_path {musan_path!r} has {found} '{category}' files, needs at least {most}; expected {self.LAYOUT}"
                )
        return files

    def pick_rir(self) -> Tensor:
        """A random impulse response, float64, scaled to unit energy."""
        path = random.choice(self.rir_files)
        rir = torch.from_numpy(read_audio(path)).double()
        if not torch.any(rir != 0):
            raise AudioReadError(f"impulse response {path} is silent")
        return unit_energy(rir)

    def pick_noise(self, noisecat: str) -> Tensor:
        """Random MUSAN crops of one category, each scaled for a random SNR (:func:`scale_noise`), summed."""
        lowest, most = self.NOISE_COUNT[noisecat]
        paths = random.sample(self.noiselist[noisecat], random.randint(lowest, most))
        total = torch.zeros(self.max_audio, dtype=torch.float64)
        for path in paths:
            noise = torch.from_numpy(loadWAV(path, self.max_frames, evalmode=False)[0])
            total += scale_noise(noise, random.uniform(*self.NOISE_SNR[noisecat]))
        return total

    def reverberate(self, audio: np.ndarray) -> np.ndarray:
        """``audio`` (1, samples) convolved with a random unit-energy RIR, cut to the crop length."""
        return reverberate(torch.from_numpy(audio), self.pick_rir()).numpy()

    def additive_noise(self, noisecat: str, audio: np.ndarray) -> np.ndarray:
        """``audio`` (1, samples) plus MUSAN ``noisecat`` ('noise', 'speech' or 'music') at random SNRs."""
        return add_scaled_noise(torch.from_numpy(audio), self.pick_noise(noisecat)).numpy()

    def draw(self) -> AugmentPlan:
        """Draw one of the six augmentations with equal odds (none, reverb, music, babble, noise, sixth)."""
        kind = random.randint(0, 5)
        if kind == 1:
            return AugmentPlan(self.pick_rir(), ())
        return AugmentPlan(None, tuple(self.pick_noise(category) for category in self.kind_noises[kind]))

    @staticmethod
    def apply(audio: np.ndarray, plan: AugmentPlan) -> np.ndarray:
        """Apply a drawn plan to a float64 crop ``(1, samples)``."""
        out = torch.from_numpy(audio)
        if plan.rir is not None:
            out = reverberate(out, plan.rir)
        for noise in plan.noises:
            out = add_scaled_noise(out, noise)
        return out.numpy()

    def plan_tensors(self, plans: Sequence[AugmentPlan]) -> Dict[str, Tensor]:
        """Fixed-shape float32 tensors for :func:`audio_augment.augment_batch`: reverb (n,), rir (n, S), noise (n, K, S)."""
        count = len(plans)
        reverb = torch.zeros(count, dtype=torch.bool)
        rir = torch.zeros(count, self.max_audio)
        noise = torch.zeros(count, self.noise_stages, self.max_audio)
        for row, plan in enumerate(plans):
            if plan.rir is not None:
                taps = min(plan.rir.shape[0], self.max_audio)
                reverb[row] = True
                rir[row, :taps] = plan.rir[:taps]
            for stage, stage_noise in enumerate(plan.noises):
                noise[row, stage] = stage_noise
        return {"reverb": reverb, "rir": rir, "noise": noise}


def read_train_list(train_list: str) -> Tuple[List[str], List[str], List[int]]:
    """Parse ``LABEL RELPATH`` lines: (labels, relative paths, 1-based line numbers). Blank lines are skipped."""
    labels: List[str] = []
    paths: List[str] = []
    line_numbers: List[int] = []
    with open(train_list, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(
                    f"{train_list}:{number}: expected two fields 'LABEL RELPATH', got {len(fields)}: {line.strip()!r}"
                )
            labels.append(fields[0])
            paths.append(fields[1])
            line_numbers.append(number)
    if not labels:
        raise ValueError(f"train list {train_list} has no entries; expected lines 'LABEL RELPATH'")
    return labels, paths, line_numbers


def _missing(paths: Sequence[str]) -> List[int]:
    """Indices of ``paths`` that are not in their folder, listing each folder once (fast on network disks)."""
    listings: Dict[str, frozenset] = {}
    missing = []
    for index, path in enumerate(paths):
        folder, name = os.path.split(path)
        if folder not in listings:
            try:
                listings[folder] = frozenset(os.listdir(folder))
            except OSError:
                listings[folder] = frozenset()
        if name not in listings[folder]:
            missing.append(index)
    return missing


class train_dataset_loader(Dataset):
    """Training crops from a ``LABEL RELPATH`` list; an item is a list of indices of one label.

    Item: ``(clean (n, S) float32, augmented (n, S) float32, label, relative paths (n,))``. With
    ``augment_on_device`` the second element is instead the dict of :meth:`AugmentWAV.plan_tensors`,
    which :func:`prepare_batch` turns into the augmented crops on the training device.
    Labels are indices into the sorted label strings (so '10' comes before '2'), as in the original.
    """

    def __init__(
        self,
        train_list: str,
        augment: bool,
        musan_path: str,
        rir_path: str,
        max_frames: int,
        train_path: str,
        augment_on_device: bool = False,
        sixth_augmentation: str = "faithful",
        **kwargs: Any,
    ) -> None:
        labels, self.relative_paths, self.line_numbers = read_train_list(train_list)
        self.train_list = train_list
        self.max_frames = max_frames
        self.augment = augment
        self.augment_on_device = augment_on_device
        self.label_names = sorted(set(labels))
        self.num_labels = len(self.label_names)
        label_index = {name: index for index, name in enumerate(self.label_names)}
        self.data_label = [label_index[name] for name in labels]
        self.data_list = [os.path.abspath(os.path.join(train_path, rel)) for rel in self.relative_paths]
        missing = _missing(self.data_list)
        if missing:
            shown = "; ".join(f"line {self.line_numbers[i]}: {self.data_list[i]}" for i in missing[:5])
            raise FileNotFoundError(
                f"{train_list}: {len(missing)} of {len(self.data_list)} listed files do not exist "
                f"(train_path {train_path!r}); first: {shown}"
            )
        self.augment_wav = AugmentWAV(musan_path, rir_path, max_frames, sixth_augmentation) if augment else None

    def _clean_crop(self, index: int) -> np.ndarray:
        try:
            return loadWAV(self.data_list[index], self.max_frames, evalmode=False)
        except AudioReadError as err:
            raise AudioReadError(f"{self.train_list} line {self.line_numbers[index]}: {err}") from err

    def __getitem__(self, indices: Union[int, Sequence[int]]) -> Tuple[Tensor, Any, int, Tuple[str, ...]]:
        indices = [int(indices)] if isinstance(indices, (int, np.integer)) else [int(i) for i in indices]
        labels = {self.data_label[i] for i in indices}
        if len(labels) != 1:
            raise ValueError(f"an item's indices must share one label, got labels {sorted(labels)} for {indices}")
        clean = [self._clean_crop(index) for index in indices]
        clean_tensor = torch.from_numpy(np.concatenate(clean)).float()
        if self.augment_wav is None:
            second: Any = clean_tensor.clone()
        else:
            plans = [self.augment_wav.draw() for _ in indices]
            if self.augment_on_device:
                second = self.augment_wav.plan_tensors(plans)
            else:
                augmented = [AugmentWAV.apply(crop, plan) for crop, plan in zip(clean, plans)]
                second = torch.from_numpy(np.concatenate(augmented)).float()
        return clean_tensor, second, labels.pop(), tuple(self.relative_paths[i] for i in indices)

    def __len__(self) -> int:
        return len(self.data_list)


def _crop_major(tensor: Tensor, device: torch.device) -> Tensor:
    """(B, n, ...) -> (n*B, ...), row k*B + b holding crop k of item b, the original's order."""
    return tensor.transpose(0, 1).reshape(-1, *tensor.shape[2:]).to(device, non_blocking=True)


def prepare_batch(batch: Sequence[Any], device: torch.device) -> Tuple[Tensor, Tensor, Tensor, List[str]]:
    """A collated training batch -> (clean (N, S), augmented (N, S), labels (N,), relative paths (N,)) on ``device``.

    N = batch size × crops per item; crops are ordered crop-major like the original trainer's
    ``transpose(1, 0)``. On-device augmentation plans are applied here.
    """
    if len(batch) != 4:
        raise ValueError(f"prepare_batch expects (clean, augmented or plan, labels, paths), got {len(batch)} elements")
    clean, second, labels, paths = batch
    crops = clean.shape[1]
    clean_flat = _crop_major(clean, device).float()
    if isinstance(second, dict):
        augmented = augment_batch(
            clean_flat, _crop_major(second["reverb"], device), _crop_major(second["rir"], device),
            _crop_major(second["noise"], device),
        )
    else:
        augmented = _crop_major(second, device).float()
    flat_labels = torch.as_tensor(labels, dtype=torch.long).repeat(crops).to(device, non_blocking=True)
    flat_paths = [path for crop_paths in paths for path in crop_paths]
    return clean_flat, augmented, flat_labels, flat_paths


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy per DataLoader worker, as the original does."""
    np.random.seed((int(np.random.get_state()[1][0]) + worker_id) % 2**32)


class test_dataset_loader(Dataset):
    """Evaluation items: (num_eval crops (num_eval, S), whole file (1, S_full), name), float32."""

    def __init__(self, test_list: Sequence[str], test_path: str, eval_frames: int, num_eval: int, **kwargs: Any) -> None:
        self.max_frames = eval_frames
        self.num_eval = num_eval
        self.test_path = test_path
        self.test_list = test_list

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor, str]:
        name = self.test_list[index]
        audio = read_audio(os.path.join(self.test_path, name))
        crops = crop_audio(audio, self.max_frames, evalmode=True, num_eval=self.num_eval)
        whole = crop_audio(audio, 0, evalmode=True)
        return torch.from_numpy(crops).float(), torch.from_numpy(whole).float(), name

    def __len__(self) -> int:
        return len(self.test_list)


def round_down(num: int, divisor: int) -> int:
    return num - (num % divisor)


class train_dataset_sampler(Sampler):
    """The original's epoch order: groups of ``nPerSpeaker`` indices of one label, no label twice in a batch.

    Per epoch, with a ``torch.Generator`` seeded ``seed + epoch``: permute the files, group them by
    label (at most ``max_seg_per_spk`` per label, rounded down to ``nPerSpeaker``), permute the groups,
    drop a group whose label is already in the batch being filled, cut to a multiple of
    ``batch_size * world_size`` and give process ``rank`` its contiguous block. World size and rank
    come from ``num_replicas`` / ``rank`` kwargs when given, else from the process group when
    ``distributed``.
    """

    def __init__(
        self,
        data_source: Any,
        nPerSpeaker: int,
        max_seg_per_spk: int,
        batch_size: int,
        distributed: bool,
        seed: int,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if nPerSpeaker < 1 or max_seg_per_spk < 1 or batch_size < 1:
            raise ValueError(
                f"nPerSpeaker, max_seg_per_spk and batch_size must be positive, got {nPerSpeaker}, {max_seg_per_spk}, {batch_size}"
            )
        self.data_label = np.asarray(data_source.data_label, dtype=np.int64)
        self.nPerSpeaker = nPerSpeaker
        self.max_seg_per_spk = max_seg_per_spk
        self.batch_size = batch_size
        self.seed = seed
        self.distributed = distributed
        self.num_replicas = num_replicas if num_replicas is not None else (dist_utils.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist_utils.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside world size {self.num_replicas}")
        self.epoch = 0
        self._cache: Optional[Tuple[int, List[List[int]]]] = None

    def _epoch_groups(self) -> np.ndarray:
        """All processes' groups for this epoch, ``(total, nPerSpeaker)``, before the cut."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.data_label), generator=generator).numpy()
        labels = self.data_label[order]
        by_label = np.argsort(labels, kind="stable")
        files, labels = order[by_label], labels[by_label]
        _, starts, counts = np.unique(labels, return_index=True, return_counts=True)
        kept = np.minimum(counts, self.max_seg_per_spk) // self.nPerSpeaker * self.nPerSpeaker
        rank_in_label = np.arange(len(files)) - np.repeat(starts, counts)
        keep = rank_in_label < np.repeat(kept, counts)
        groups = files[keep].reshape(-1, self.nPerSpeaker)
        group_labels = labels[keep][:: self.nPerSpeaker].tolist()
        mixed = torch.randperm(len(group_labels), generator=generator).tolist()
        chosen: List[int] = []
        in_batch: set = set()
        for group in mixed:
            if len(chosen) % self.batch_size == 0:
                in_batch.clear()
            if group_labels[group] not in in_batch:
                in_batch.add(group_labels[group])
                chosen.append(group)
        return groups[chosen]

    def _indices(self) -> List[List[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            groups = self._epoch_groups()
            world = self.num_replicas
            total = round_down(len(groups), self.batch_size * world)
            start = int(self.rank / world * total)
            end = int((self.rank + 1) / world * total)
            self._cache = (self.epoch, groups[start:end].tolist())
        return self._cache[1]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
