"""HuBERT and wav2vec 2.0 by name: fairseq's file and Hugging Face's three files come through the checked download
path of models/pretrained.py (a local HTTP server stands in for the hosts) and load into their encoders."""
import hashlib

import torch

from models import pretrained
from models.hubert_mhfa import MainModel as hubert_main_model
from models.pretrained import KnownModel, RemoteFile
from models.wav2vec2_mhfa import MainModel as wav2vec2_main_model
from tests.helpers_backbones import random_huggingface_model, write_backbone
from tests.test_download import Server, cache_files

HEAD = dict(nOut=8, head_nb=2, compression_dim=4)


def test_the_known_names_point_at_the_authors_files():
    names = ("hubert-base-ls960", "hubert-large-ll60k", "wav2vec2-base", "wav2vec2-large-lv60",
             "facebook/hubert-base-ls960")
    urls = {name: [f.url for f in pretrained.KNOWN_MODELS[name].files] for name in names}
    assert urls["hubert-base-ls960"] == ["https://dl.fbaipublicfiles.com/hubert/hubert_base_ls960.pt"]
    assert urls["hubert-large-ll60k"] == ["https://dl.fbaipublicfiles.com/hubert/hubert_large_ll60k.pt"]
    assert urls["wav2vec2-base"] == ["https://dl.fbaipublicfiles.com/fairseq/wav2vec/wav2vec_small.pt"]
    assert urls["wav2vec2-large-lv60"] == ["https://dl.fbaipublicfiles.com/fairseq/wav2vec/wav2vec_vox_new.pt"]
    assert urls["facebook/hubert-base-ls960"] == [f"https://huggingface.co/facebook/hubert-base-ls960/resolve/main/{n}"
                                                  for n in ("config.json", "preprocessor_config.json",
                                                            "pytorch_model.bin")]
    assert {"facebook/hubert-large-ll60k", "facebook/wav2vec2-base", "facebook/wav2vec2-large-lv60"} \
        <= set(pretrained.KNOWN_MODELS)


def test_a_fairseq_file_and_a_hugging_face_folder_are_fetched_by_name_and_loaded(tmp_path, monkeypatch):
    hubert_file = write_backbone(random_huggingface_model("hubert", False), "hubert", tmp_path, "fairseq_args", False)
    folder = write_backbone(random_huggingface_model("wav2vec2", True), "wav2vec2", tmp_path, "bin", True)
    served = {"hubert_tiny.pt": hubert_file.read_bytes(),
              **{name: (folder / name).read_bytes() for name in ("config.json", "preprocessor_config.json",
                                                                 "pytorch_model.bin")}}
    server = Server(served)
    try:
        def remote(name):
            return RemoteFile(name, f"{server.url}/{name}", hashlib.sha256(served[name]).hexdigest())

        monkeypatch.setitem(pretrained.KNOWN_MODELS, "hubert-tiny", KnownModel((remote("hubert_tiny.pt"),),
                                                                              entry="hubert_tiny.pt"))
        monkeypatch.setitem(pretrained.KNOWN_MODELS, "facebook/wav2vec2-tiny", KnownModel(tuple(
            remote(name) for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"))))
        cache = str(tmp_path / "cache")
        hubert = hubert_main_model(pretrained_model_path="hubert-tiny", model_cache=cache, trust_checkpoint=True,
                                   **HEAD)
        wav2vec2 = wav2vec2_main_model(pretrained_model_path="facebook/wav2vec2-tiny", model_cache=cache, **HEAD)
        assert len(server.requests) == 4
        hubert_main_model(pretrained_model_path="hubert-tiny", model_cache=cache, trust_checkpoint=True, **HEAD)
        assert len(server.requests) == 4, "the second use must read the cache, not the network"
    finally:
        server.close()
    downloaded = ["hubert-tiny/hubert_tiny.pt", "facebook/wav2vec2-tiny/config.json",
                  "facebook/wav2vec2-tiny/preprocessor_config.json", "facebook/wav2vec2-tiny/pytorch_model.bin"]
    assert cache_files(cache) == sorted(downloaded + [f"{name}.sha256.json" for name in downloaded])  # + digests
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert torch.equal(wav2vec2.model.encoder.layers[1].fc2.weight,
                       state["wav2vec2.encoder.layers.1.feed_forward.output_dense.weight"])
    assert wav2vec2.model.cfg.normalize and not hubert.model.cfg.normalize
