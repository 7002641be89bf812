"""Pre-trained WavLM models known by name, downloaded into a cache folder on first use.

``--pretrained_model_path`` takes a path, or one of the names of :data:`KNOWN_MODELS`: Microsoft's
checkpoints (``wavlm-base-plus``, ``wavlm-large``; the published system starts from WavLM Base+) or
the Hugging Face repositories (``microsoft/wavlm-base-plus``, ``microsoft/wavlm-large``); for the HuBERT and
wav2vec 2.0 encoders, fairseq's checkpoints (``hubert-base-ls960``, ``hubert-large-ll60k``, ``wav2vec2-base``,
``wav2vec2-large-lv60``) and their Hugging Face repositories (``facebook/<same name>``). A name is
downloaded once into ``CACHE/<name>/`` (:func:`cache_folder`); later runs read the cached files.

Every file's SHA-256 lives in this table. None of them could be verified from the machine this was
written on (it reaches no model host), so every entry is None: such a file is downloaded without a
check and its digest is logged for you to compare with the one its host publishes. Fill in a digest
here and every later download is checked against it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from utils.distributed import all_gather_objects, is_main_process, local_rank
from utils.download import DownloadError, cached_download
from utils.errors import ReportedError

CACHE_ENV = "XDG_CACHE_HOME"
CACHE_NAME = "wavlm_ssl_sv"

# Microsoft's download links from the WavLM README (github.com/microsoft/unilm, wavlm/README.md); the
# shared-access signature in the query is part of the published link (valid until 2033-03-02).
_AZURE = "https://valle.blob.core.windows.net/share/wavlm/{}?sv=2020-08-04&st=2023-03-01T07%3A51%3A05Z" \
         "&se=2033-03-02T07%3A51%3A00Z&sr=c&sp=rl&sig=QJXmSJG9DbMKf48UDIU1MfzIro8HQOf3sqlNXiflY1I%3D"
_HUGGING_FACE = "https://huggingface.co/{}/resolve/main/{}"
_FAIRSEQ = "https://dl.fbaipublicfiles.com/{}"  # the links of fairseq's examples/hubert and examples/wav2vec READMEs
_HF_FILES = ("config.json", "preprocessor_config.json", "pytorch_model.bin")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    sha256: Optional[str] = None


@dataclass(frozen=True)
class KnownModel:
    """Files of one model, and the file (or ``""``: the folder) that the WavLM loader is given."""

    files: Tuple[RemoteFile, ...]
    entry: str = ""


def _microsoft(file_name: str) -> KnownModel:
    return KnownModel((RemoteFile(file_name, _AZURE.format(file_name)),), entry=file_name)


def _fairseq(path: str) -> KnownModel:
    file_name = os.path.basename(path)
    return KnownModel((RemoteFile(file_name, _FAIRSEQ.format(path)),), entry=file_name)


def _hugging_face(repo: str) -> KnownModel:
    return KnownModel(tuple(RemoteFile(name, _HUGGING_FACE.format(repo, name)) for name in _HF_FILES))


KNOWN_MODELS: Dict[str, KnownModel] = {
    "wavlm-base-plus": _microsoft("WavLM-Base+.pt"),
    "wavlm-large": _microsoft("WavLM-Large.pt"),
    "microsoft/wavlm-base-plus": _hugging_face("microsoft/wavlm-base-plus"),
    "microsoft/wavlm-large": _hugging_face("microsoft/wavlm-large"),
    "hubert-base-ls960": _fairseq("hubert/hubert_base_ls960.pt"),
    "hubert-large-ll60k": _fairseq("hubert/hubert_large_ll60k.pt"),
    "wav2vec2-base": _fairseq("fairseq/wav2vec/wav2vec_small.pt"),
    "wav2vec2-large-lv60": _fairseq("fairseq/wav2vec/wav2vec_vox_new.pt"),
    **{repo: _hugging_face(repo) for repo in ("facebook/hubert-base-ls960", "facebook/hubert-large-ll60k",
                                              "facebook/wav2vec2-base", "facebook/wav2vec2-large-lv60")},
}


def cache_folder(model_cache: Optional[str] = None) -> str:
    """``model_cache``, else ``$XDG_CACHE_HOME/wavlm_ssl_sv``, else ``~/.cache/wavlm_ssl_sv``."""
    if model_cache:
        return model_cache
    return os.path.join(os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache"), CACHE_NAME)


def resolve_pretrained(path_or_name: str, model_cache: Optional[str] = None) -> str:
    """A local path for ``--pretrained_model_path``.

    An existing file or folder is used as it is; a known name is downloaded into the cache folder on
    first use and its cached path returned; anything else is returned unchanged (the loader then says
    that it does not exist).
    """
    known = KNOWN_MODELS.get(path_or_name)
    if known is None or os.path.exists(path_or_name):
        return path_or_name
    folder = os.path.join(cache_folder(model_cache), *path_or_name.split("/"))
    download_once(known, folder)
    return os.path.join(folder, known.entry) if known.entry else folder


def download_once(known: KnownModel, folder: str) -> None:
    """``known``'s files into ``folder``, by one process at a time; collective under torchrun.

    Every process of a torchrun group builds its model and so gets here together. The main process
    downloads first while the others wait; then, for a cache folder that is not shared between
    nodes, the first process of every other node does the same. Concurrent downloads of one file
    would remove each other's temporary files. A failed download stops every process with its message.
    """
    for downloads in (is_main_process(), local_rank() == 0):
        failure: Optional[ReportedError] = None
        if downloads:
            try:
                for remote in known.files:
                    cached_download(remote.url, os.path.join(folder, remote.name), remote.sha256)
            except ReportedError as error:
                failure = error
        problems = [message for message in all_gather_objects(failure and str(failure)) if message]
        if failure is not None:
            raise failure
        if problems:
            raise DownloadError(f"another process could not download {known.entry or folder}: {problems[0]}")
