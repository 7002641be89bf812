"""Pre-trained WavLM models known by name, downloaded into a cache folder on first use and checked at every use.

``--pretrained_model_path`` takes a path, or one of the names of :data:`KNOWN_MODELS`: Microsoft's
checkpoints (``wavlm-base-plus``, ``wavlm-large``; the published system starts from WavLM Base+) or
the Hugging Face repositories (``microsoft/wavlm-base-plus``, ``microsoft/wavlm-large``); for the HuBERT and
wav2vec 2.0 encoders, fairseq's checkpoints (``hubert-base-ls960``, ``hubert-large-ll60k``, ``wav2vec2-base``,
``wav2vec2-large-lv60``) and their Hugging Face repositories (``facebook/<same name>``). A name is
downloaded once into ``CACHE/<name>/`` (:func:`cache_folder`); later runs read the cached files, each
checked first against the SHA-256 recorded at its download and the pinned one (utils/download.py).

What is pinned: the WavLM Hugging Face files are fetched at a fixed commit of their repository, which fixes
their content (a commit's files cannot change); the SHA-256 and size of the two ``pytorch_model.bin`` at
those commits were found identical in several independent public projects that check them, and are pinned
here. Their ``config.json`` and ``preprocessor_config.json`` are fixed by the commit only. Microsoft's
``.pt`` files live behind a link whose content nothing fixes and whose SHA-256 could not be found with
certainty (this was written without access to any model host): they are downloaded unchecked, their
digest logged for you to compare and recorded for the later checks. The same holds for fairseq's HuBERT and
wav2vec 2.0 files and the ``facebook/...`` repositories, fetched at their ``main`` revision.

``$WAVLM_SSL_SV_MODEL_MIRROR`` (:data:`MIRROR_ENV`) replaces the hosts: a known file is fetched from that base
URL followed by the original URL's path, without its query (a mirror for users, a local server for tests).
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from utils.distributed import all_gather_objects, is_main_process, local_rank
from utils.download import DownloadError, cached_download
from utils.errors import ReportedError

CACHE_ENV = "XDG_CACHE_HOME"
CACHE_NAME = "wavlm_ssl_sv"
MIRROR_ENV = "WAVLM_SSL_SV_MODEL_MIRROR"

# Microsoft's download links from the WavLM README (github.com/microsoft/unilm, wavlm/README.md); the
# shared-access signature in the query is part of the published link (valid until 2033-03-02).
_AZURE = "https://valle.blob.core.windows.net/share/wavlm/{}?sv=2020-08-04&st=2023-03-01T07%3A51%3A05Z" \
         "&se=2033-03-02T07%3A51%3A00Z&sr=c&sp=rl&sig=QJXmSJG9DbMKf48UDIU1MfzIro8HQOf3sqlNXiflY1I%3D"
_HUGGING_FACE = "https://huggingface.co/{}/resolve/{}/{}"
_FAIRSEQ = "https://dl.fbaipublicfiles.com/{}"  # the links of fairseq's examples/hubert and examples/wav2vec READMEs
_HF_FILES = ("config.json", "preprocessor_config.json", "pytorch_model.bin")
HF_COMMITS = {
    "microsoft/wavlm-base-plus": "4c66d4806a428f2e922ccfa1a962776e232d487b",
    "microsoft/wavlm-large": "c1423ed94bb01d80a3f5ce5bc39f6026a0f4828c",
}
"""The commit each WavLM Hugging Face repository is downloaded at (its files' content cannot change); the
others are downloaded at ``main``."""
HF_WEIGHTS_SHA256 = {
    "microsoft/wavlm-base-plus": "3bb273a6ace99408b50cfc81afdbb7ef2de02da2eab0234e18db608ce692fe51",  # 377,617,425 B
    "microsoft/wavlm-large": "fdee460e529396ddb2f8c8e8ce0ad74cfb747b726bc6f612e666c7c1e1963c9d",  # 1,261,990,257 B
}
"""SHA-256 of ``pytorch_model.bin`` at :data:`HF_COMMITS`."""


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
    return KnownModel(tuple(RemoteFile(name, _HUGGING_FACE.format(repo, HF_COMMITS.get(repo, "main"), name),
                                       HF_WEIGHTS_SHA256.get(repo) if name == "pytorch_model.bin" else None)
                            for name in _HF_FILES))


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


def download_url(url: str) -> str:
    """``url``, or with ``$WAVLM_SSL_SV_MODEL_MIRROR`` set, that base URL followed by ``url``'s path."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return mirror.rstrip("/") + urllib.parse.urlsplit(url).path if mirror else url


def cache_folder(model_cache: Optional[str] = None) -> str:
    """``model_cache``, else ``$XDG_CACHE_HOME/wavlm_ssl_sv``, else ``~/.cache/wavlm_ssl_sv``."""
    if model_cache:
        return model_cache
    return os.path.join(os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache"), CACHE_NAME)


def resolve_pretrained(path_or_name: str, model_cache: Optional[str] = None) -> str:
    """A local path for ``--pretrained_model_path``.

    An existing file or folder is used as it is; a known name is downloaded into the cache folder on
    first use, its cached files checked at every use, and its cached path returned; anything else is
    returned unchanged (the loader then says that it does not exist).
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
    for downloads in (is_main_process(), local_rank() == 0 and not is_main_process()):
        failure: Optional[ReportedError] = None
        if downloads:
            try:
                for remote in known.files:
                    cached_download(download_url(remote.url), os.path.join(folder, remote.name), remote.sha256)
            except ReportedError as error:
                failure = error
        problems = [message for message in all_gather_objects(failure and str(failure)) if message]
        if failure is not None:
            raise failure
        if problems:
            raise DownloadError(f"another process could not download {known.entry or folder}: {problems[0]}")
