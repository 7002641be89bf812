"""Known pre-trained names are downloaded once into the cache, checked, and loaded; failures name URL and path.

The real download code runs against an HTTP server on 127.0.0.1 (a thread of this process) serving a small
random WavLM checkpoint; the known-model table is pointed at it.
"""
import hashlib
import http.server
import os
import socket
import threading
import time

import pytest
import torch

from models import pretrained
from models.pretrained import KnownModel, RemoteFile, cache_folder, resolve_pretrained
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from models.wavlm_mhfa import MainModel
from utils.download import DownloadError


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 and counts the requests."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        self.delay = 0.0  # seconds before each answer: widens the window in which processes could race
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                time.sleep(outer.delay)
                body = outer.files.get(self.path.lstrip("/"))
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


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("remote") / "WavLM-Tiny.pt"
    save_random_wavlm_checkpoint(str(path), seed=5)
    return path.read_bytes()


@pytest.fixture
def server(checkpoint_bytes):
    served = Server({"WavLM-Tiny.pt": checkpoint_bytes, "corrupt.pt": checkpoint_bytes[:-10] + b"0123456789"})
    yield served
    served.close()


def known(monkeypatch, url, sha256):
    monkeypatch.setitem(pretrained.KNOWN_MODELS, "wavlm-tiny",
                        KnownModel((RemoteFile("WavLM-Tiny.pt", url, sha256),), entry="WavLM-Tiny.pt"))


def cache_files(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def test_known_name_is_downloaded_once_checked_and_loaded(server, checkpoint_bytes, monkeypatch, tmp_path):
    known(monkeypatch, f"{server.url}/WavLM-Tiny.pt", hashlib.sha256(checkpoint_bytes).hexdigest())
    cache = str(tmp_path / "cache")
    encoder = MainModel(pretrained_model_path="wavlm-tiny", model_cache=cache, nOut=8, head_nb=2, compression_dim=4)
    assert server.requests == ["/WavLM-Tiny.pt"]
    assert cache_files(cache) == [os.path.join("wavlm-tiny", "WavLM-Tiny.pt")]
    assert (tmp_path / "cache" / "wavlm-tiny" / "WavLM-Tiny.pt").read_bytes() == checkpoint_bytes
    content = torch.load(tmp_path / "cache" / "wavlm-tiny" / "WavLM-Tiny.pt", weights_only=True)
    assert torch.equal(encoder.model.state_dict()["encoder.layers.0.fc1.weight"],
                       content["model"]["encoder.layers.0.fc1.weight"])
    assert resolve_pretrained("wavlm-tiny", cache) == os.path.join(cache, "wavlm-tiny", "WavLM-Tiny.pt")
    assert server.requests == ["/WavLM-Tiny.pt"], "the second use must read the cache, not the network"


def _resolve_in_a_group(rank, url, sha256, cache, rendezvous, results):
    """One of two processes of a gloo group on one node (as torchrun starts them), resolving the name together."""
    os.environ["LOCAL_RANK"] = str(rank)
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    pretrained.KNOWN_MODELS["wavlm-tiny"] = KnownModel((RemoteFile("WavLM-Tiny.pt", url, sha256),),
                                                       entry="WavLM-Tiny.pt")
    torch.distributed.barrier()
    path = resolve_pretrained("wavlm-tiny", cache)
    with open(os.path.join(results, str(rank)), "w") as handle:
        handle.write(path)
    torch.distributed.destroy_process_group()


def test_the_processes_of_a_torchrun_group_download_a_name_once(server, checkpoint_bytes, tmp_path):
    server.delay = 0.5
    cache, results = str(tmp_path / "cache"), tmp_path / "results"
    results.mkdir()
    torch.multiprocessing.spawn(_resolve_in_a_group, nprocs=2, args=(
        f"{server.url}/WavLM-Tiny.pt", hashlib.sha256(checkpoint_bytes).hexdigest(), cache,
        str(tmp_path / "rendezvous"), str(results)))
    assert server.requests == ["/WavLM-Tiny.pt"]
    destination = os.path.join(cache, "wavlm-tiny", "WavLM-Tiny.pt")
    assert [(results / str(rank)).read_text() for rank in range(2)] == [destination, destination]
    assert cache_files(cache) == [os.path.join("wavlm-tiny", "WavLM-Tiny.pt")]
    assert (tmp_path / "cache" / "wavlm-tiny" / "WavLM-Tiny.pt").read_bytes() == checkpoint_bytes


def test_corrupted_download_is_rejected_and_leaves_nothing(server, checkpoint_bytes, monkeypatch, tmp_path):
    url = f"{server.url}/corrupt.pt"
    known(monkeypatch, url, hashlib.sha256(checkpoint_bytes).hexdigest())
    cache = str(tmp_path / "cache")
    with pytest.raises(DownloadError) as error:
        resolve_pretrained("wavlm-tiny", cache)
    assert "SHA-256" in str(error.value) and url in str(error.value)
    assert cache_files(cache) == []


def test_unreachable_server_names_the_url_and_where_to_put_the_file(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/WavLM-Tiny.pt"
    known(monkeypatch, url, None)
    cache = str(tmp_path / "cache")
    with pytest.raises(DownloadError) as error:
        resolve_pretrained("wavlm-tiny", cache)
    destination = os.path.join(cache, "wavlm-tiny", "WavLM-Tiny.pt")
    assert url in str(error.value) and destination in str(error.value)
    assert cache_files(cache) == []


def test_paths_win_over_names_and_the_cache_follows_xdg(monkeypatch, tmp_path):
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
    assert [f.url for f in hf.files] == [f"https://huggingface.co/microsoft/wavlm-large/resolve/main/{name}"
                                         for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin")]
