"""Downloading a file once into a cache: progress bar, SHA-256 check, atomic rename.

A file that is already in place is used as it is, without any request. A download is written under a
temporary name beside its destination and renamed only once complete and, when a hash is known,
matching it: a corrupt, truncated or interrupted download never reaches the destination.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from typing import Optional

from utils.atomic import atomic_open, check_writable, remove_stale_temporaries
from utils.errors import InputError
from utils.progress import progress_bar

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes read per step: the progress bar counts MiB."""
TIMEOUT_S = 60.0


class DownloadError(InputError):
    """A file that could not be downloaded or failed its checksum; the message names the URL and the destination."""


def cached_download(url: str, destination: str, sha256: Optional[str], timeout: float = TIMEOUT_S) -> str:
    """``destination``, downloaded from ``url`` first if it is not there yet; returns ``destination``.

    With ``sha256`` the download must have that hex digest, else it is discarded and a DownloadError says
    so; without one the digest is logged as unverified. A failed request is a DownloadError naming the URL
    and where to put the file by hand.
    """
    if os.path.isfile(destination):
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
    if sha256 is None:
        logger.warning("%s: no known SHA-256 to check it against (this project could not pin one); its SHA-256 is %s",
                       destination, digest.hexdigest())
    return destination
