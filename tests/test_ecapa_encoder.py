"""ECAPA-TDNN as the rounds' encoder: it starts from a DINO teacher, trains through trainSpeakerNet.py, and exports
to a speaker model file and ONNX whose scores are the evaluator's."""
import os

import numpy as np
import pytest
import torch
import yaml

import trainSpeakerNet
import trainSpeakerNet_Eval
from models.ecapa_tdnn import ECAPATDNN, MainModel
from models.export import export_onnx
from scoring.speaker_model import load_speaker_model
from scripts import export_model
from tests.conftest import TINY_CONFIG
from tests.helpers_encoders import train_evaluate_export_verify
from training.dino import build_dino_model
from utils.errors import InputError

SHAPE = {"channels": 16, "nOut": 8, "n_mels": 20, "mean_norm": False}
EVAL = ["--eval_frames", "0", "--num_eval", "1", "--eval_batch_size", "4", "--nDataLoaderThread", "0",
        "--plots", "false", "--embedding_mode", "eval"]


@pytest.fixture(scope="module")
def dino_checkpoint(tmp_path_factory):
    """A trainDINO.py checkpoint (random student, teacher moved away from it) with its run's config.yaml."""
    run = tmp_path_factory.mktemp("dino")
    torch.manual_seed(0)
    model = build_dino_model(**SHAPE, n_prototypes=32, head_hidden_dim=16, head_bottleneck_dim=8)
    with torch.no_grad():
        for parameter in model.teacher.parameters():
            parameter.add_(0.01)
    (run / "model").mkdir()
    path = run / "model" / "model000000001.model"
    torch.save(model.state_dict(), path)
    (run / "config.yaml").write_text(yaml.safe_dump(SHAPE))
    return str(path), {k[len("teacher.backbone."):]: v for k, v in model.state_dict().items()
                       if k.startswith("teacher.backbone.")}


def test_the_encoder_starts_from_the_dino_teacher(dino_checkpoint):
    path, teacher = dino_checkpoint
    encoder = MainModel(pretrained_model_path=path, **SHAPE)
    assert all(torch.equal(value, encoder.state_dict()[key]) for key, value in teacher.items())
    reference = encoder.reference_weights()
    assert set(reference) == {name for name, _ in encoder.named_parameters()}
    with pytest.raises(InputError, match=r"trained with mean_norm: False .* set --mean_norm False"):
        MainModel(pretrained_model_path=path, **dict(SHAPE, mean_norm=True))
    with pytest.raises(InputError, match=r"trained with channels: 16 .* set --channels 16"):
        MainModel(pretrained_model_path=path, **dict(SHAPE, channels=24))
    alone = os.path.join(os.path.dirname(os.path.dirname(path)), "copied.model")  # no config.yaml two levels up
    torch.save(torch.load(path, weights_only=True), alone)
    with pytest.raises(InputError, match="does not fit this ECAPA-TDNN.*set --channels, --nOut and --n_mels"):
        MainModel(pretrained_model_path=alone, **dict(SHAPE, channels=24))
    assert MainModel(**SHAPE).reference_weights() == {}  # random weights: no L2 pull


def test_trained_exported_and_verified_with_the_evaluators_scores(dino_checkpoint, tiny_corpus, tmp_path):
    save_path = str(tmp_path / "exp")
    shape = [item for key, value in SHAPE.items() for item in (f"--{key}", str(value))]
    common = ["--config", TINY_CONFIG, "--model", "ecapa_tdnn", *shape, "--pretrained_model_path", dino_checkpoint[0],
              "--train_list", tiny_corpus.train_list, "--train_path", tiny_corpus.train_path, "--save_path", save_path]
    run = train_evaluate_export_verify(common, EVAL, tiny_corpus, str(tmp_path), 2, "--gate_start_epoch", "2",
                                       "--lc_start_epoch", "2")
    content = torch.load(run.speaker, weights_only=True)
    assert content["encoder"] == "ecapa_tdnn" and content["encoder_config"] == SHAPE
    print(f"ECAPA-TDNN: max |verify --trials - evaluator| = {run.largest_difference:.2e}")
    assert run.largest_difference < 1e-6
    with pytest.raises(InputError, match="--embedding_mode eval"):
        trainSpeakerNet_Eval.main([*common, *EVAL, "--generate_embeddings", "--embedding_mode", "train",
                                   "--embeddings_path", str(tmp_path / "e.pt")])

    onnx_path = str(tmp_path / "speaker.onnx")
    export_model.main([*common, *EVAL, "--initial_model", run.speaker, "--onnx", onnx_path])
    import onnxruntime

    encoder = load_speaker_model(run.speaker).encoder
    assert isinstance(encoder, ECAPATDNN) and not encoder.training
    waveforms = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    exported = session.run(None, {"waveform": waveforms.numpy()})[0]
    with torch.no_grad():
        eager = encoder(waveforms).numpy()
    print(f"ECAPA-TDNN ONNX: max relative difference {np.abs(exported - eager).max() / np.abs(eager).max():.1e}")
    assert np.abs(exported - eager).max() <= 1e-4 * np.abs(eager).max()
    export_onnx(encoder, str(tmp_path / "again.onnx"))  # a loaded speaker file exports as well


def test_a_resumed_run_is_the_uninterrupted_run(dino_checkpoint, tiny_corpus, tmp_path):
    """Kill after epoch 1 and resume: the weights, the batch-norm statistics and the per-sample losses of epoch 2
    (gate and label correction on) are those of a run that was never stopped."""
    shape = [item for key, value in SHAPE.items() for item in (f"--{key}", str(value))]

    def run(save_path: str, epochs: int):
        return trainSpeakerNet.main([
            "--config", TINY_CONFIG, "--model", "ecapa_tdnn", *shape, "--pretrained_model_path", dino_checkpoint[0],
            "--train_list", tiny_corpus.train_list, "--train_path", tiny_corpus.train_path, "--save_path", save_path,
            "--musan_path", tiny_corpus.musan_path, "--rir_path", tiny_corpus.rir_path, "--max_epoch", str(epochs),
            "--gate_start_epoch", "2", "--lc_start_epoch", "2"])

    straight = run(str(tmp_path / "straight"), 2)
    run(str(tmp_path / "resumed"), 1)
    resumed = run(str(tmp_path / "resumed"), 2)
    buffers = [key for key in straight.state_dict() if key.endswith("running_var")]
    assert buffers, "the ECAPA-TDNN has batch-norm statistics to restore"
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    for folder in ("straight", "resumed"):
        assert (tmp_path / folder / "loss_vals" / "epoch_2.txt").is_file()
    assert (tmp_path / "straight" / "loss_vals" / "epoch_2.txt").read_text() == \
        (tmp_path / "resumed" / "loss_vals" / "epoch_2.txt").read_text()
