"""An encoder of one module (tests/plugin_encoder.py) trains, evaluates, exports and verifies through the public
commands, with no line of the project naming it: the encoder interface is all they use."""
import os

import numpy as np
import torch

from models.export import export_onnx
from scoring.speaker_model import load_speaker_model
from tests.conftest import TINY_CONFIG
from tests.helpers_encoders import train_evaluate_export_verify
from tests.plugin_encoder import FrameStatistics

PLUGIN = ["--model", "tests.plugin_encoder", "--nOut", "16"]
EVAL = ["--eval_frames", "50", "--num_eval", "3", "--eval_batch_size", "4", "--nDataLoaderThread", "0",
        "--plots", "false"]


def test_an_encoder_module_of_your_own_trains_exports_and_verifies(tiny_corpus, tmp_path):
    save_path = str(tmp_path / "exp")
    common = ["--config", TINY_CONFIG, *PLUGIN, "--train_list", tiny_corpus.train_list, "--train_path",
              tiny_corpus.train_path, "--save_path", save_path]
    run = train_evaluate_export_verify(common, EVAL, tiny_corpus, str(tmp_path), 1)
    assert sorted(os.listdir(os.path.join(save_path, "model"))) == ["model000000001.model", "state000000001.pt"]
    content = torch.load(run.speaker, weights_only=True)
    assert content["encoder"] == "tests.plugin_encoder" and content["encoder_config"] == {"hidden": 32, "nOut": 16}
    print(f"plug-in encoder: max |verify - evaluator| = {run.largest_difference:.2e}")
    assert run.largest_difference < 1e-6

    import onnxruntime

    encoder = load_speaker_model(run.speaker).encoder
    onnx_path = str(tmp_path / "speaker.onnx")
    export_onnx(encoder, onnx_path)
    waveforms = torch.randn(2, 12345, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    exported = session.run(None, {"waveform": waveforms.numpy()})[0]
    with torch.no_grad():
        eager = encoder(waveforms).numpy()
    assert np.abs(exported - eager).max() <= 1e-4 * np.abs(eager).max()


def test_padded_rows_embed_as_alone():
    encoder = FrameStatistics().eval()
    waveforms = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = encoder(waveforms, torch.tensor([8000, 5000]))
        alone = torch.cat([encoder(waveforms[:1]), encoder(waveforms[1:, :5000])])
    assert torch.allclose(batched, alone, atol=1e-6)
