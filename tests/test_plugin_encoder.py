"""An encoder of one module (tests/plugin_encoder.py) trains, evaluates, exports and verifies through the public
commands, with no line of the project naming it: the encoder interface is all they use."""
import os

import numpy as np
import torch

import trainSpeakerNet
import trainSpeakerNet_Eval
from demo.corpus import write_trials
from models.export import export_onnx
from scoring.speaker_model import load_speaker_model
from scripts import export_model, verify
from tests.conftest import TINY_CONFIG
from tests.plugin_encoder import FrameStatistics

PLUGIN = ["--model", "tests.plugin_encoder", "--nOut", "16"]
EVAL = ["--eval_frames", "50", "--num_eval", "3", "--eval_batch_size", "4", "--nDataLoaderThread", "0",
        "--plots", "false"]


def test_an_encoder_module_of_your_own_trains_exports_and_verifies(tiny_corpus, tmp_path):
    save_path = str(tmp_path / "exp")
    common = ["--config", TINY_CONFIG, *PLUGIN, "--train_list", tiny_corpus.train_list, "--train_path",
              tiny_corpus.train_path, "--save_path", save_path]
    net = trainSpeakerNet.main([*common, "--musan_path", tiny_corpus.musan_path, "--rir_path", tiny_corpus.rir_path,
                                "--max_epoch", "1"])
    assert isinstance(net.__S__, FrameStatistics)
    assert sorted(os.listdir(os.path.join(save_path, "model"))) == ["model000000001.model", "state000000001.pt"]

    picked = [rel for _, rel in tiny_corpus.entries if rel.endswith("00001.wav")][:6]
    trials = [(int(a.split("/")[0] == b.split("/")[0]), a, b) for i, a in enumerate(picked) for b in picked[i + 1:]]
    trial_list = str(tmp_path / "trials.txt")
    write_trials(trials, trial_list)
    trainSpeakerNet_Eval.main([*common, *EVAL, "--eval", "--test_list", trial_list,
                               "--test_path", tiny_corpus.train_path])
    with open(os.path.join(save_path, "result", "scores_model000000001_trials.txt")) as handle:
        evaluated = np.array([float(line.split()[0]) for line in handle])

    speaker = str(tmp_path / "speaker.pt")
    export_model.main([*common, *EVAL, "--output", speaker])
    content = torch.load(speaker, weights_only=True)
    assert content["encoder"] == "tests.plugin_encoder" and content["encoder_config"] == {"hidden": 32, "nOut": 16}
    scores = verify.main([speaker, "--trials", trial_list, "--test_path", tiny_corpus.train_path,
                          "--scores", str(tmp_path / "s.txt"), "--eval_batch_size", "4", "--nDataLoaderThread", "0"])
    print(f"plug-in encoder: max |verify - evaluator| = {np.abs(scores - evaluated).max():.2e}")
    assert np.abs(scores - evaluated).max() < 1e-6

    import onnxruntime

    encoder = load_speaker_model(speaker).encoder
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
