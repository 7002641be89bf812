"""Downloading a file once into a cache, and checking it before every use: SHA-256 records, atomic rename.

A download is written under a temporary name beside its destination and renamed only once complete and,
when a hash is pinned, matching it: a corrupt, truncated or interrupted download never reaches the
destination. Beside each file, ``<file>.sha256.json`` records the SHA-256 and size it had when it was
downloaded. Every later use reads the cached file again and checks it against that record and against
the pinned hash, if any: a file damaged, truncated or replaced in the cache is an error that says how to
fetch it again, never a silent use. A file put there by hand (offline) is checked against the pinned hash
and recorded on its first use.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

from utils.atomic import atomic_open, atomic_write_text, check_writable, remove_stale_temporaries
from utils.errors import InputError
from utils.progress import progress_bar

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes read per step: the progress bar counts MiB."""
TIMEOUT_S = 60.0
RECORD_SUFFIX = ".sha256.json"


class DownloadError(InputError):
    """A file that could not be downloaded or failed its checksum; the message names the URL or the file."""


def record_path(destination: str) -> str:
    """Where the SHA-256 and size of ``destination``'s download are recorded."""
    return destination + RECORD_SUFFIX


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_record(destination: str, sha256: str, size: int, url: str, downloaded: bool) -> None:
    atomic_write_text(record_path(destination), json.dumps(
        {"sha256": sha256, "bytes": size, "url": url, "downloaded": downloaded}, indent=1) + "\n")


def _fetch_again(destination: str) -> str:
    return f"delete {destination} and {record_path(destination)} to download it again"


def _read_record(destination: str) -> Optional[Dict[str, Any]]:
    """The record of ``destination``'s download, None when there is none; a damaged one is an error."""
    path = record_path(destination)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        if isinstance(record, dict) and isinstance(record.get("sha256"), str) and isinstance(record.get("bytes"), int):
            return record
    except (OSError, ValueError):
        pass
    raise DownloadError(f"{path}, the record of the cached file {destination}, is damaged; {_fetch_again(destination)}")


def check_cached(destination: str, url: str, sha256: Optional[str]) -> None:
    """Check the cached ``destination`` against the record of its download and the pinned ``sha256``.

    Reads the whole file (about a second per 400 MB). A file without a record (put there by hand) passes
    against the pinned hash, or with a warning when there is none, and is recorded now.
    """
    record = _read_record(destination)
    size = os.path.getsize(destination)
    if record is not None and size != record["bytes"]:
        raise DownloadError(f"cached file {destination} holds {size} bytes, but {record['bytes']} were downloaded "
                            f"from {record['url']}: it is truncated or was changed; {_fetch_again(destination)}")
    digest = file_sha256(destination)
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(f"cached file {destination} has SHA-256 {digest}, not the pinned {sha256}: it is damaged "
                            f"or was replaced; {_fetch_again(destination)}")
    if record is not None and digest != record["sha256"]:
        raise DownloadError(f"cached file {destination} has SHA-256 {digest}, not {record['sha256']} as when it was "
                            f"downloaded from {record['url']}: it is damaged or was replaced; "
                            f"{_fetch_again(destination)}")
    if record is None:
        if sha256 is None:
            logger.warning("%s: no record of a download (put there by hand?) and no known SHA-256 to check it "
                           "against: compare its SHA-256 %s with the one its host publishes; it is recorded now "
                           "and every later use is checked against it", destination, digest)
        _write_record(destination, digest, size, url, downloaded=False)


def cached_download(url: str, destination: str, sha256: Optional[str], timeout: float = TIMEOUT_S) -> str:
    """``destination``, downloaded from ``url`` first if it is not there yet, checked; returns ``destination``.

    A file already in the cache is checked (:func:`check_cached`) and used without any request. A download
    must have the pinned ``sha256`` when there is one, else it is discarded and a DownloadError says so;
    without one its digest is logged for you to compare. A failed request is a DownloadError naming the URL
    and where to put the file by hand.
    """
    if os.path.isfile(destination):
        check_cached(destination, url, sha256)
        return destination
    check_writable(destination, "model cache file")
    remove_stale_temporaries(os.path.dirname(os.path.abspath(destination)))  # left by an interrupted download
    by_hand = f"without network access, download it elsewhere and put it at {destination}"
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"cannot download {url}: {reason}; {by_hand}") from None
    digest = hashlib.sha256()
    with response, atomic_open(destination, "wb") as handle:
        size = int(response.headers.get("Content-Length") or 0)
        received = 0
        chunks = -(-size // CHUNK) if size else None
        with progress_bar(total=chunks, desc=f"Downloading {os.path.basename(destination)}", unit="MiB") as bar:
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(1)
            except OSError as error:
                raise DownloadError(f"download of {url} broke off after {received} bytes ({error}); run again, or "
                                    f"{by_hand}") from None
        if size and received != size:
            raise DownloadError(f"download of {url} ended after {received} of {size} bytes; run again, or {by_hand}")
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DownloadError(f"{url}: the download's SHA-256 is {digest.hexdigest()}, not the expected {sha256}; "
                                f"it was discarded (a corrupt transfer, or the file changed upstream); {by_hand} "
                                "after checking it")
        # Recorded before the file is renamed into place: a cached file always has its record, unless put by hand.
        _write_record(destination, digest.hexdigest(), received, url, downloaded=True)
    if sha256 is None:
        logger.warning("%s: no known SHA-256 to check it against (this project could not pin one); its SHA-256 is "
                       "%s, recorded in %s: every later use is checked against it", destination, digest.hexdigest(),
                       record_path(destination))
    return destination
