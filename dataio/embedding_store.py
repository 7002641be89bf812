"""The embeddings file shared by the embedding generator, pseudo-labelling and evaluation (docs/method.md §1).

Format (the original's): ``torch.save`` of a ``Dict[str, Tensor]``; key = the last three parts of
the audio path (``id00012/21Uxsk56VDQ/00001.wav``), value = one embedding of shape ``(1, D)``
(``(D,)`` is accepted on reading). The dict's order is the file order used by every consumer.
The same embeddings can be written as a Kaldi archive and index (``ark`` / ``scp``) for Kaldi-style tools.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import PurePath
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import kaldiio
import torch

from utils.atomic import atomic_open, atomic_torch_save, atomic_write_text
from utils.checkpoints import load_file
from utils.errors import InputError

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def embedding_key(path: str | os.PathLike) -> str:
    """The dict key of an audio file: its last three path parts joined by '/'."""
    parts = PurePath(path).parts
    if len(parts) < 3:
        raise InputError(f"audio path {os.fspath(path)!r} has fewer than 3 parts (speaker/video/file)")
    return "/".join(parts[-3:])


def keyed_paths(paths: Sequence[str], where: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Key (:func:`embedding_key` of the absolute path) -> path, each key once, in the order of ``paths``.

    A file given again is embedded once (logged); two different files with the same key are an
    InputError, since one embeddings file cannot hold both. ``where`` names each path's origin in
    the messages (e.g. ``list.txt:4``).
    """
    keyed: Dict[str, str] = {}
    for index, path in enumerate(paths):
        key = embedding_key(os.path.abspath(path))
        origin = f"{where[index]}: " if where is not None else ""
        if key in keyed:
            if os.path.abspath(keyed[key]) != os.path.abspath(path):
                raise InputError(f"{origin}{keyed[key]} and {path} share the key {key!r} (their last three path "
                                 "parts)")
            logger.warning("%s%s is given again; it is embedded once", origin, path)
            continue
        keyed[key] = path
    return keyed


def _as_row(key: object, value: object, source: str) -> torch.Tensor:
    """Check one dict entry and return its embedding as a (D,) tensor of its own dtype."""
    if not isinstance(key, str):
        raise InputError(f"{source}: key {key!r} is a {type(key).__name__}, expected a str")
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{source}: key {key!r}: value is a {type(value).__name__}, expected a torch.Tensor")
    if value.dtype not in _FLOAT_DTYPES:
        raise InputError(f"{source}: key {key!r}: dtype {value.dtype}, expected float16, float32 or float64")
    if value.dim() == 2 and value.shape[0] == 1:
        value = value[0]
    if value.dim() != 1 or value.shape[0] == 0:
        raise InputError(f"{source}: key {key!r}: shape {tuple(value.shape)}, expected (D,) or (1, D)")
    return value


def _validated_matrix(items: Iterable[Tuple[object, object]], source: str) -> Tuple[List[str], torch.Tensor]:
    """Check every entry, then stack them into an (N, D) float32 CPU matrix of finite values."""
    keys: List[str] = []
    rows: List[torch.Tensor] = []
    for key, value in items:
        rows.append(_as_row(key, value, source))
        keys.append(key)  # type: ignore[arg-type]  # _as_row checked it is a str
    if not rows:
        raise InputError(f"{source} holds an empty dict")
    dim = rows[0].shape[0]
    for key, row in zip(keys, rows):
        if row.shape[0] != dim:
            raise InputError(
                f"{source}: key {key!r} has dimension {row.shape[0]}, but key {keys[0]!r} has {dim}")
    matrix = torch.stack([row.detach().to("cpu", torch.float32) for row in rows])
    finite = torch.isfinite(matrix).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise InputError(f"{source}: key {keys[bad]!r} holds NaN or inf values (as float32)")
    return keys, matrix


def load_embeddings(path: str | os.PathLike) -> Tuple[List[str], torch.Tensor]:
    """Read an embeddings file: its keys in stored order and an (N, D) float32 CPU matrix.

    Raises InputError naming the file (and the key) for anything that is not a non-empty dict of
    same-size finite float vectors.
    """
    source = f"embeddings file {os.fspath(path)!r}"
    if not os.path.isfile(path):
        raise InputError(f"{source} does not exist or is not a file")
    stored = load_file(os.fspath(path), "embeddings file")
    if not isinstance(stored, dict):
        raise InputError(f"{source} holds a {type(stored).__name__}, expected a dict of key -> tensor")
    return _validated_matrix(stored.items(), source)


def save_embeddings(embeddings: Dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write ``embeddings`` atomically, each value as its own contiguous (1, D) float32 CPU tensor."""
    keys, matrix = _validated_matrix(embeddings.items(), f"embeddings for {os.fspath(path)!r}")
    atomic_torch_save({key: matrix[i:i + 1].clone() for i, key in enumerate(keys)}, path)


def check_keys_without_whitespace(keys: Sequence[str], source: str, where: str) -> None:
    """Refuse empty keys and keys holding whitespace, which the whitespace-separated file of ``where``
    (e.g. "a train list line cannot hold") would split; the error names the first and counts them."""
    spaced = [key for key in keys if not key or any(c.isspace() for c in key)]
    if spaced:
        more = f" ({len(spaced)} keys in all)" if len(spaced) > 1 else ""
        raise InputError(f"{source}: key {spaced[0]!r} is empty or holds whitespace, which {where}{more}; "
                         "rename the files (or their folders) without spaces and embed them again")


def kaldi_scp_path(ark_path: str | os.PathLike) -> str:
    """The index written beside a Kaldi archive: ``emb.ark`` -> ``emb.scp``."""
    return os.path.splitext(os.fspath(ark_path))[0] + ".scp"


def save_embeddings_kaldi(embeddings: Dict[str, torch.Tensor], ark_path: str | os.PathLike) -> str:
    """Write ``embeddings`` as a Kaldi binary archive of float32 vectors and its ``.scp`` index; returns the index.

    Both are written atomically; the index names the archive as ``ark_path`` is given. Keys must hold no
    whitespace (Kaldi's key syntax).
    """
    source = f"embeddings for {os.fspath(ark_path)!r}"
    keys, matrix = _validated_matrix(embeddings.items(), source)
    check_keys_without_whitespace(keys, source, "a Kaldi key cannot hold")
    index = io.StringIO()
    with atomic_open(ark_path, "wb") as handle:
        kaldiio.save_ark(handle, {key: matrix[i].numpy() for i, key in enumerate(keys)}, scp=index)
    # kaldiio names the archive by the temporary file it wrote; keep its offsets, name the final file.
    offsets = [line.rsplit(":", 1)[1] for line in index.getvalue().splitlines()]
    scp_path = kaldi_scp_path(ark_path)
    atomic_write_text(scp_path, "".join(f"{key} {os.fspath(ark_path)}:{at}\n" for key, at in zip(keys, offsets)))
    return scp_path
