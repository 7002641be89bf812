"""A tiny random HuBERT (fairseq's file, --trust_checkpoint) and a tiny random wav2vec 2.0 (a Hugging Face folder)
train one epoch through trainSpeakerNet.py, are evaluated, exported, and verified through the public commands; the
recipe's parts (layer-wise learning rates, the L2 pull, the frozen convolutional extractor) act on them as on WavLM."""
import os

import numpy as np
import pytest
import torch

from demo.corpus import write_trials
from models import pretrained
from models.export import export_onnx, export_torchscript
from models.mhfa_encoder import MHFAEncoder
from scoring.speaker_model import load_speaker_model
from tests.conftest import REPO_ROOT, TINY_CONFIG
from tests.helpers_backbones import random_huggingface_model, write_backbone
from tests.helpers_encoders import train_evaluate_export_verify
from training.speaker_net import parameter_groups
from utils.options import load_yaml_config

EVAL = ["--eval_frames", "50", "--num_eval", "3", "--eval_batch_size", "4", "--nDataLoaderThread", "0",
        "--plots", "false"]
# (family, file format, Large layout): fairseq's hydra HuBERT file needs --trust_checkpoint; the Large layout's
# padding is exact, so the evaluator batches files of different lengths for it.
CASES = [("hubert", "fairseq_cfg", False), ("wav2vec2", "safetensors", True)]


def _trials(tiny_corpus, path: str) -> str:
    picked = [rel for _, rel in tiny_corpus.entries if rel.endswith("00001.wav")][:6]
    write_trials([(int(a.split("/")[0] == b.split("/")[0]), a, b) for i, a in enumerate(picked)
                  for b in picked[i + 1:]], path)
    return path


def _check_recipe_parts(net, pretrained) -> None:
    """The frozen extractor kept its pre-trained weights (``pretrained``: the copies taken when loading), the layers
    moved, the L2 pull sees every backbone tensor, and layer i trains at LR_Transformer · LLRD_factor^i."""
    encoder: MHFAEncoder = net.__S__
    state = encoder.state_dict()
    assert set(pretrained) == {key for key in state if key.startswith("model.")}
    frozen = [key for key in pretrained if not key.startswith("model.encoder.layers.")]
    assert all(torch.equal(state[key], pretrained[key]) for key in frozen)
    assert all(not p.requires_grad for n, p in encoder.model.named_parameters() if f"model.{n}" in frozen)
    assert not torch.equal(state["model.encoder.layers.1.fc1.weight"], pretrained["model.encoder.layers.1.fc1.weight"])
    assert float(net.weight_distance()) > 0
    assert [group["lr"] for group in parameter_groups(net, 1.0, 0.1, 0.5)] == [1.0, 0.1, 0.05]


@pytest.mark.parametrize("family,file_format,large", CASES)
def test_tiny_backbone_trains_exports_and_verifies(tiny_corpus, tmp_path, family, file_format, large):
    pretrained = write_backbone(random_huggingface_model(family, large), family, tmp_path, file_format,
                                normalize=large)
    common = ["--config", TINY_CONFIG, "--model", f"{family}_mhfa", "--pretrained_model_path", str(pretrained),
              "--trust_checkpoint", str(file_format.startswith("fairseq")), "--train_list", tiny_corpus.train_list,
              "--train_path", tiny_corpus.train_path, "--save_path", str(tmp_path / "exp")]
    run = train_evaluate_export_verify(common, EVAL, tiny_corpus, str(tmp_path), 1)
    assert type(run.net.__S__).__name__ == {"hubert": "HuBERTMHFA", "wav2vec2": "Wav2Vec2MHFA"}[family]
    assert run.net.__S__.padding_is_exact is large
    _check_recipe_parts(run.net, run.net.__S__.reference_weights())
    content = torch.load(run.speaker, weights_only=True)
    assert content["encoder"] == f"{family}_mhfa"
    assert content["encoder_config"]["backbone_cfg"]["relative_position_embedding"] is False
    print(f"\n[{family} + MHFA] {len(run.verified)} trials: max |verify - evaluator| = {run.largest_difference:.2e}")
    assert run.largest_difference < 1e-6

    encoder = load_speaker_model(run.speaker).encoder
    waveforms = torch.randn(2, 12345, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = encoder(waveforms).numpy()
    export_onnx(encoder, str(tmp_path / "speaker.onnx"))
    export_torchscript(encoder, str(tmp_path / "speaker.ts"))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "speaker.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        exported = {"onnx": session.run(None, {"waveform": waveforms.numpy()})[0],
                    "torchscript": torch.jit.load(str(tmp_path / "speaker.ts"))(waveforms).numpy()}
    for kind, values in exported.items():
        relative = np.abs(values - eager).max() / np.abs(eager).max()
        print(f"[{family} + MHFA] {kind}: max relative difference from eager {relative:.1e}")
        assert relative <= 1e-4


@pytest.mark.parametrize("stem,model,repo", [
    ("hubert_base", "hubert_mhfa", "facebook/hubert-base-ls960"),
    ("hubert_large", "hubert_mhfa", "facebook/hubert-large-ll60k"),
    ("wav2vec2_base", "wav2vec2_mhfa", "facebook/wav2vec2-base"),
    ("wav2vec2_large", "wav2vec2_mhfa", "facebook/wav2vec2-large-lv60")])
def test_each_backbone_config_has_the_recipes_values(stem, model, repo):
    recipe = load_yaml_config(os.path.join(REPO_ROOT, "configs", "wavlm_mhfa_dlg_lc.yaml"))
    config = load_yaml_config(os.path.join(REPO_ROOT, "configs", f"{stem}_mhfa_dlg_lc.yaml"))
    assert config == {**recipe, "model": model, "pretrained_model_path": repo, "save_path": f"exp/{stem}_mhfa_dlg_lc"}
    assert repo in pretrained.KNOWN_MODELS
