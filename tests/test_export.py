"""TorchScript and ONNX copies of the embedding network match eager PyTorch for any waveform length."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.export import export_onnx, export_torchscript
from models.wavlm_checkpoint import TINY_WAVLM_CFG
from models.wavlm_mhfa import WavLMMHFA
from tests.helpers_models import randomize_parameters_

SECONDS = (1.0, 7.3, 20.0)
TOLERANCE = 1e-4  # relative: max |difference| / max |eager embedding|


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    model = WavLMMHFA(TINY_WAVLM_CFG.to_dict(), nOut=32, head_nb=4, compression_dim=16)
    randomize_parameters_(model, seed=1)
    return model.train()  # the exports must switch to evaluation mode themselves


def waveforms(batch, seconds, seed):
    return torch.randn(batch, int(seconds * 16000), generator=torch.Generator().manual_seed(seed)) * 0.1


def relative_difference(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exported_network_matches_eager_pytorch(encoder, tmp_path, kind):
    path = str(tmp_path / f"encoder.{kind}")
    (export_onnx if kind == "onnx" else export_torchscript)(encoder, path)
    assert encoder.training, "the caller's module must be left in its mode"
    if kind == "onnx":
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["waveform"]

        def run(x):
            return session.run(["embedding"], {"waveform": x.numpy()})[0]
    else:
        loaded = torch.jit.load(path)

        def run(x):
            with torch.no_grad():
                return loaded(x).numpy()
    reference_model = encoder.eval()
    worst = 0.0
    try:
        for index, (batch, seconds) in enumerate([(1, s) for s in SECONDS] + [(3, 2.5)]):
            x = waveforms(batch, seconds, seed=index)
            with torch.no_grad():
                reference = reference_model(x).numpy()
            ours = run(x)
            assert ours.shape == reference.shape == (batch, 32)
            worst = max(worst, relative_difference(ours, reference))
    finally:
        encoder.train()
    print(f"{kind}: max relative difference to eager PyTorch over {SECONDS} s and a batch of 3: {worst:.2e}")
    assert worst < TOLERANCE
