"""Known pre-trained names are downloaded once into the cache and checked at every use; failures name URL and file.

The real download code runs against an HTTP server on 127.0.0.1 (a thread of this process), reached through
$WAVLM_SSL_SV_MODEL_MIRROR as a mirror would be: it serves a small random WavLM checkpoint under the path of
Microsoft's WavLM-Base+.pt link, and stand-ins under the paths of a Hugging Face repository's pinned commit.
"""
import hashlib
import http.server
import json
import logging
import os
import socket
import threading
import time

import pytest
import torch

from models import pretrained
from models.pretrained import MIRROR_ENV, cache_folder, download_url, resolve_pretrained
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from models.wavlm_mhfa import MainModel
from utils.download import DownloadError

MICROSOFT = "share/wavlm/WavLM-Base+.pt"
HF_BASE_PLUS = "microsoft/wavlm-base-plus/resolve/4c66d4806a428f2e922ccfa1a962776e232d487b/"


class Server:
    """Serves ``files`` (URL path without the query -> bytes) on 127.0.0.1 and counts the requests."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        self.delay = 0.0  # seconds before each answer: widens the window in which processes could race
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                time.sleep(outer.delay)
                body = outer.files.get(self.path.split("?")[0].lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def checkpoint(tmp_path_factory, seed):
    path = tmp_path_factory.mktemp("remote") / f"WavLM-{seed}.pt"
    save_random_wavlm_checkpoint(str(path), seed=seed)
    return path.read_bytes()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    return checkpoint(tmp_path_factory, 5)


@pytest.fixture
def server(checkpoint_bytes, monkeypatch):
    served = Server({MICROSOFT: checkpoint_bytes, HF_BASE_PLUS + "config.json": b"{}",
                     HF_BASE_PLUS + "preprocessor_config.json": b"{}",
                     HF_BASE_PLUS + "pytorch_model.bin": b"not the weights whose SHA-256 is pinned"})
    monkeypatch.setenv(MIRROR_ENV, served.url)
    yield served
    served.close()


def cache_files(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def test_a_known_name_is_downloaded_once_recorded_checked_and_loaded(server, checkpoint_bytes, tmp_path):
    cache = str(tmp_path / "cache")
    encoder = MainModel(pretrained_model_path="wavlm-base-plus", model_cache=cache, nOut=8, head_nb=2,
                        compression_dim=4)
    assert [path.split("?")[0] for path in server.requests] == ["/share/wavlm/WavLM-Base+.pt"]
    cached = os.path.join(cache, "wavlm-base-plus", "WavLM-Base+.pt")
    assert cache_files(cache) == [os.path.join("wavlm-base-plus", name)
                                  for name in ("WavLM-Base+.pt", "WavLM-Base+.pt.sha256.json")]
    assert open(cached, "rb").read() == checkpoint_bytes
    with open(cached + ".sha256.json") as handle:
        assert json.load(handle) == {"sha256": hashlib.sha256(checkpoint_bytes).hexdigest(),
                                     "bytes": len(checkpoint_bytes), "url": f"{server.url}/{MICROSOFT}",
                                     "downloaded": True}
    content = torch.load(cached, weights_only=True)
    assert torch.equal(encoder.model.state_dict()["encoder.layers.0.fc1.weight"],
                       content["model"]["encoder.layers.0.fc1.weight"])
    assert resolve_pretrained("wavlm-base-plus", cache) == cached
    assert len(server.requests) == 1, "the second use must read the cache, not the network"


def test_a_cached_file_changed_after_its_download_is_refused_with_how_to_fetch_it_again(server, checkpoint_bytes,
                                                                                         tmp_path_factory, tmp_path):
    cache = str(tmp_path / "cache")
    cached = resolve_pretrained("wavlm-base-plus", cache)
    again = f"delete {cached} and {cached}.sha256.json to download it again"
    other = checkpoint(tmp_path_factory, 6)  # another WavLM of the same shapes: the same size, other weights
    assert len(other) == len(checkpoint_bytes) and other != checkpoint_bytes
    with open(cached, "wb") as handle:
        handle.write(other)
    with pytest.raises(DownloadError) as error:
        resolve_pretrained("wavlm-base-plus", cache)
    assert str(error.value) == (f"cached file {cached} has SHA-256 {hashlib.sha256(other).hexdigest()}, not "
                                f"{hashlib.sha256(checkpoint_bytes).hexdigest()} as when it was downloaded from "
                                f"{server.url}/{MICROSOFT}: it is damaged or was replaced; {again}")
    with open(cached, "wb") as handle:
        handle.write(checkpoint_bytes[:1000])
    with pytest.raises(DownloadError) as error:
        resolve_pretrained("wavlm-base-plus", cache)
    assert str(error.value) == (f"cached file {cached} holds 1000 bytes, but {len(checkpoint_bytes)} were downloaded "
                                f"from {server.url}/{MICROSOFT}: it is truncated or was changed; {again}")
    os.remove(cached)
    os.remove(cached + ".sha256.json")
    assert resolve_pretrained("wavlm-base-plus", cache) == cached and len(server.requests) == 2
    assert open(cached, "rb").read() == checkpoint_bytes


def test_the_pinned_digest_refuses_a_wrong_download_and_a_wrong_file_put_by_hand(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as error:
        resolve_pretrained("microsoft/wavlm-base-plus", str(cache))
    url = f"{server.url}/{HF_BASE_PLUS}pytorch_model.bin"
    wrong = hashlib.sha256(b"not the weights whose SHA-256 is pinned").hexdigest()
    assert str(error.value).startswith(f"{url}: the download's SHA-256 is {wrong}, not the expected "
                                       f"{pretrained.HF_WEIGHTS_SHA256['microsoft/wavlm-base-plus']}; it was discarded")
    folder = os.path.join("microsoft", "wavlm-base-plus")
    assert cache_files(cache) == [os.path.join(folder, name) for name in (
        "config.json", "config.json.sha256.json", "preprocessor_config.json", "preprocessor_config.json.sha256.json")]
    by_hand = cache / folder / "pytorch_model.bin"
    by_hand.write_bytes(b"not the weights whose SHA-256 is pinned")
    with pytest.raises(DownloadError, match=f"cached file {by_hand} has SHA-256 {wrong}, not the pinned 3bb273a6"):
        resolve_pretrained("microsoft/wavlm-base-plus", str(cache))
    assert len(server.requests) == 3, "a file in the cache is checked, not fetched"


def test_a_file_put_by_hand_without_a_pinned_digest_is_recorded_then_checked(server, checkpoint_bytes, tmp_path,
                                                                             caplog):
    cached = tmp_path / "cache" / "wavlm-base-plus" / "WavLM-Base+.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(checkpoint_bytes)
    with caplog.at_level(logging.WARNING):
        assert resolve_pretrained("wavlm-base-plus", str(tmp_path / "cache")) == str(cached)
    digest = hashlib.sha256(checkpoint_bytes).hexdigest()
    assert f"{cached}: no record of a download (put there by hand?) and no known SHA-256" in caplog.text
    assert json.loads((tmp_path / "cache" / "wavlm-base-plus" / "WavLM-Base+.pt.sha256.json").read_text())[
        "sha256"] == digest
    cached.write_bytes(checkpoint_bytes[:-1] + b"x")
    with pytest.raises(DownloadError, match=f"not {digest} as when it was downloaded"):
        resolve_pretrained("wavlm-base-plus", str(tmp_path / "cache"))
    assert server.requests == []


def _resolve_in_a_group(rank, mirror, cache, rendezvous, results):
    """One of two processes of a gloo group on one node (as torchrun starts them), resolving the name together."""
    os.environ["LOCAL_RANK"] = str(rank)
    os.environ[MIRROR_ENV] = mirror
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    path = resolve_pretrained("wavlm-base-plus", cache)
    with open(os.path.join(results, str(rank)), "w") as handle:
        handle.write(path)
    torch.distributed.destroy_process_group()


def test_the_processes_of_a_torchrun_group_download_a_name_once(server, checkpoint_bytes, tmp_path):
    server.delay = 0.5
    cache, results = str(tmp_path / "cache"), tmp_path / "results"
    results.mkdir()
    torch.multiprocessing.spawn(_resolve_in_a_group, nprocs=2, args=(server.url, cache, str(tmp_path / "rendezvous"),
                                                                     str(results)))
    assert len(server.requests) == 1
    destination = os.path.join(cache, "wavlm-base-plus", "WavLM-Base+.pt")
    assert [(results / str(rank)).read_text() for rank in range(2)] == [destination, destination]
    assert cache_files(cache) == [os.path.join("wavlm-base-plus", name)
                                  for name in ("WavLM-Base+.pt", "WavLM-Base+.pt.sha256.json")]
    assert open(destination, "rb").read() == checkpoint_bytes


def test_unreachable_server_names_the_url_and_where_to_put_the_file(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}/")
    cache = str(tmp_path / "cache")
    with pytest.raises(DownloadError) as error:
        resolve_pretrained("wavlm-base-plus", cache)
    destination = os.path.join(cache, "wavlm-base-plus", "WavLM-Base+.pt")
    assert f"cannot download http://127.0.0.1:{port}/{MICROSOFT}: " in str(error.value)
    assert f"put it at {destination}" in str(error.value)
    assert cache_files(cache) == []


def test_paths_win_over_names_the_cache_follows_xdg_and_the_mirror_keeps_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == str(tmp_path / "xdg" / "wavlm_ssl_sv")
    assert cache_folder(str(tmp_path / "mine")) == str(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    os.makedirs("microsoft/wavlm-base-plus")
    assert resolve_pretrained("microsoft/wavlm-base-plus") == "microsoft/wavlm-base-plus"
    assert resolve_pretrained("some/file.pt") == "some/file.pt"
    assert {"wavlm-base-plus", "wavlm-large", "microsoft/wavlm-base-plus",
            "microsoft/wavlm-large"} <= set(pretrained.KNOWN_MODELS)  # tests/test_backbone_download.py: the others
    hf = pretrained.KNOWN_MODELS["microsoft/wavlm-large"]
    commit = "c1423ed94bb01d80a3f5ce5bc39f6026a0f4828c"
    assert [(f.url, f.sha256) for f in hf.files] == [
        (f"https://huggingface.co/microsoft/wavlm-large/resolve/{commit}/config.json", None),
        (f"https://huggingface.co/microsoft/wavlm-large/resolve/{commit}/preprocessor_config.json", None),
        (f"https://huggingface.co/microsoft/wavlm-large/resolve/{commit}/pytorch_model.bin",
         "fdee460e529396ddb2f8c8e8ce0ad74cfb747b726bc6f612e666c7c1e1963c9d")]
    azure = pretrained.KNOWN_MODELS["wavlm-large"].files[0].url
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert download_url(azure) == azure
    monkeypatch.setenv(MIRROR_ENV, "https://mirror.example.org/models/")
    assert download_url(azure) == "https://mirror.example.org/models/share/wavlm/WavLM-Large.pt"
