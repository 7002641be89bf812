"""The speaker model file: made from our checkpoints and the original's, used without the pre-trained WavLM,
scored exactly as the evaluator scores; Kaldi outputs."""
import dataclasses
import os
import shutil

import kaldiio
import numpy as np
import pytest
import soundfile
import torch

import trainSpeakerNet_Eval
from dataio.audio import read_audio
from demo.corpus import write_trials
from scoring.speaker_model import SpeakerModel, load_speaker_model
from scripts import embed, export_model, verify
from utils import checkpoints
from utils.checkpoints import CheckpointError
from utils.errors import InputError
from utils.records import read_json

EVAL = ["--eval_frames", "50", "--num_eval", "3", "--eval_batch_size", "4", "--nDataLoaderThread", "0",
        "--plots", "false"]


@pytest.fixture(scope="module")
def trials(tiny_corpus, tmp_path_factory):
    """A labelled trial list over the first file of each of 3 speakers' two sessions (15 trials, 3 target)."""
    picked = [(label, rel) for label, rel in tiny_corpus.entries if rel.endswith("00001.wav")][:6]
    pairs = [(int(a[0] == b[0]), a[1], b[1]) for i, a in enumerate(picked) for b in picked[i + 1:]]
    path = str(tmp_path_factory.mktemp("trials") / "trials.txt")
    write_trials(pairs, path)
    return path, pairs


@pytest.fixture(scope="module")
def exported(two_epoch_run, trials, tiny_corpus, tmp_path_factory):
    """The 2-epoch run evaluated on the trials, then exported with the evaluation's EER threshold."""
    save_path, argv, _ = two_epoch_run
    trainSpeakerNet_Eval.main(argv + EVAL + ["--eval", "--test_list", trials[0], "--test_path",
                                             tiny_corpus.train_path])
    newest = checkpoints.newest_checkpoint(os.path.join(save_path, "model"))[1]
    record = os.path.join(save_path, "result", f"eval_{os.path.basename(newest)[:-6]}_trials.json")
    out = str(tmp_path_factory.mktemp("speaker") / "speaker.pt")
    export_model.main(argv + EVAL + ["--output", out, "--eval_json", record])
    return out, newest, record


def evaluator_scores(path):
    with open(path) as handle:
        return np.array([float(line.split()[0]) for line in handle])


def test_speaker_file_holds_the_encoder_only_and_the_protocol(exported):
    out, newest, record = exported
    content = torch.load(out, weights_only=True)
    keys = list(content["state_dict"])
    assert all(k.startswith(("model.", "backend.")) for k in keys), keys[:5]
    assert not [k for k in content if k.startswith("__L__")] and "__L__.weight" not in keys
    trained = checkpoints.read_state_dict(newest)
    assert sorted("__S__." + k for k in keys) == sorted(k for k in trained if k.startswith("__S__."))
    assert content["protocol"] == {"eval_frames": 50, "num_eval": 3, "max_eval_samples": 700000, "whole_file": True}
    assert content["version"] == 2 and content["encoder"] == "wavlm_mhfa"
    config = content["encoder_config"]
    assert {k: config[k] for k in ("nOut", "head_nb", "compression_dim")} == {"nOut": 32, "head_nb": 4,
                                                                              "compression_dim": 16}
    assert config["wavlm_cfg"]["encoder_layers"] == 2
    assert content["sample_rate"] == 16000
    assert content["eer_threshold"] == pytest.approx(read_json(record)["eer_threshold"])
    loaded = load_speaker_model(out)
    assert loaded.encoder.reference_weights() == {} and not loaded.encoder.training
    for key, value in loaded.encoder.state_dict().items():
        assert torch.equal(value, trained["__S__." + key]), key


def test_a_version_1_file_still_loads(exported, tmp_path):
    """Files written before the encoder interface (WavLM + MHFA only) give the same encoder."""
    out, _, _ = exported
    content = torch.load(out, weights_only=True)
    config = content.pop("encoder_config")
    content.update(version=1, wavlm_cfg=config.pop("wavlm_cfg"), encoder=config)
    old = str(tmp_path / "v1.pt")
    torch.save(content, old)
    for (key, value), (old_key, old_value) in zip(load_speaker_model(out).encoder.state_dict().items(),
                                                  load_speaker_model(old).encoder.state_dict().items()):
        assert key == old_key and torch.equal(value, old_value)


def test_verify_and_embed_give_the_evaluators_scores(exported, trials, tiny_corpus, tmp_path, capsys):
    out, newest, _ = exported
    root = tiny_corpus.train_path
    evaluated = evaluator_scores(os.path.join(os.path.dirname(os.path.dirname(newest)), "result",
                                              f"scores_{os.path.basename(newest)[:-6]}_trials.txt"))
    scores = verify.main([out, "--trials", trials[0], "--test_path", root, "--scores", str(tmp_path / "s.txt"),
                          "--eval_batch_size", "4", "--nDataLoaderThread", "0"])
    print(f"max |verify --trials - evaluator| = {np.abs(scores - evaluated).max():.2e}")
    assert np.abs(scores - evaluated).max() < 1e-6
    label, enroll, test = trials[1][0]
    pair = verify.main([out, os.path.join(root, enroll), os.path.join(root, test), "--nDataLoaderThread", "0"])[0]
    printed = capsys.readouterr().out
    print(f"|verify pair - evaluator| = {abs(pair - evaluated[0]):.2e}")
    assert abs(pair - evaluated[0]) < 1e-6
    threshold = load_speaker_model(out).eer_threshold
    assert ("same speaker" if pair >= threshold else "different speakers") in printed
    embeddings = embed.main([out, os.path.join(root, enroll), os.path.join(root, test), "--output",
                             str(tmp_path / "e.pt"), "--nDataLoaderThread", "0"])
    stored = torch.load(tmp_path / "e.pt", weights_only=True)
    assert list(stored) == list(embeddings) == [enroll, test]  # keys: the last three path parts
    assert float(stored[enroll][0].double() @ stored[test][0].double()) == pytest.approx(pair, abs=1e-6)
    model = SpeakerModel.load(out)
    waveform = torch.from_numpy(read_audio(os.path.join(root, enroll)))
    assert model.score(waveform, os.path.join(root, test)) == pytest.approx(pair, abs=1e-6)


def test_original_layout_checkpoint_exports_and_scores_like_the_evaluator(tiny_net, tiny_wavlm, tiny_corpus, trials,
                                                                          tmp_path):
    """Original parameter names, random weights, DDP ``module.`` prefix and another AAM size (7500 classes)."""
    net = tiny_net(seed=3)
    generator = torch.Generator().manual_seed(4)
    original = {"module." + k: v + 0.01 * torch.randn(v.shape, generator=generator)
                for k, v in net.state_dict().items() if not k.startswith("__L__.")}
    original["module.__L__.weight"] = torch.randn(7500, 32)
    released = str(tmp_path / "model000000018.model")
    torch.save(original, released)
    common = ["--config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml"), *EVAL]
    trainSpeakerNet_Eval.main(common + ["--eval", "--initial_model", released, "--pretrained_model_path", tiny_wavlm,
                                        "--test_list", trials[0], "--test_path", tiny_corpus.train_path,
                                        "--save_path", str(tmp_path / "exp")])
    evaluated = evaluator_scores(str(tmp_path / "exp" / "result" / "scores_model000000018_trials.txt"))
    out = str(tmp_path / "speaker.pt")
    export_model.main(common + ["--initial_model", released, "--pretrained_model_path", tiny_wavlm, "--output", out])
    assert load_speaker_model(out).eer_threshold is None
    scores = verify.main([out, "--trials", trials[0], "--test_path", tiny_corpus.train_path, "--eval_batch_size", "4",
                          "--scores", str(tmp_path / "v.txt"), "--nDataLoaderThread", "0"])
    print(f"original layout: max |verify - evaluator| = {np.abs(scores - evaluated).max():.2e}")
    assert np.abs(scores - evaluated).max() < 1e-6


def test_evaluator_reads_a_speaker_file_without_the_pretrained_model(exported, trials, tiny_corpus, tmp_path):
    out, newest, _ = exported
    save_path = str(tmp_path / "exp")
    trainSpeakerNet_Eval.main(["--config", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml"),
                               *EVAL, "--eval", "--initial_model", out, "--test_list", trials[0], "--test_path",
                               tiny_corpus.train_path, "--save_path", save_path, "--score_format", "kaldi"])
    with open(os.path.join(save_path, "result", "scores_speaker_trials.txt")) as handle:
        lines = [line.split() for line in handle]
    assert [(e, t) for e, t, _ in lines] == [(e, t) for _, e, t in trials[1]]  # Kaldi: ENROLL TEST SCORE
    evaluated = evaluator_scores(os.path.join(os.path.dirname(os.path.dirname(newest)), "result",
                                              f"scores_{os.path.basename(newest)[:-6]}_trials.txt"))
    assert np.abs(np.array([float(s) for _, _, s in lines]) - evaluated).max() < 1e-6


def test_kaldi_ark_and_scp_round_trip_and_kaldi_score_lines(exported, trials, tiny_corpus, tmp_path):
    out, _, _ = exported
    folder = os.path.join(tiny_corpus.train_path, "id10001")
    ark = str(tmp_path / "emb.ark")
    embeddings = embed.main([out, folder, "--output", ark, "--format", "kaldi", "--nDataLoaderThread", "0"])
    read = kaldiio.load_scp(str(tmp_path / "emb.scp"))
    assert list(read) == list(embeddings) and len(read) == 4
    for key, value in embeddings.items():
        assert np.array_equal(read[key], value[0].numpy()), key
    assert {key: value for key, value in kaldiio.load_ark(ark)}.keys() == embeddings.keys()
    kaldi_trials = tmp_path / "kaldi_trials"
    kaldi_trials.write_text("".join(f"{e} {t} {'target' if label else 'nontarget'}\n" for label, e, t in trials[1]))
    scores = verify.main([out, "--trials", str(kaldi_trials), "--test_path", tiny_corpus.train_path, "--scores",
                          str(tmp_path / "k.txt"), "--score_format", "kaldi", "--nDataLoaderThread", "0"])
    lines = (tmp_path / "k.txt").read_text().splitlines()
    assert lines == [f"{e} {t} {s:.8f}" for (_, e, t), s in zip(trials[1], scores)]


def test_scoring_vectors_give_the_fused_score_or_the_crop_score_alone(exported):
    model = SpeakerModel.load(exported[0])
    crops, whole = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)), torch.randn(2, 5)
    cosines = torch.nn.functional.cosine_similarity(crops[0][:, None], crops[1][None], dim=2).double()
    crop_score = float(cosines.mean())
    fused = model.vectors(crops, whole)
    assert float(fused[0] @ fused[1]) == pytest.approx(
        (crop_score + float(torch.nn.functional.cosine_similarity(whole[0], whole[1], dim=0))) / 2, abs=1e-6)
    model.protocol = dataclasses.replace(model.protocol, whole_file=False)
    alone = model.vectors(crops, whole)
    assert float(alone[0] @ alone[1]) == pytest.approx(crop_score, abs=1e-6)


def test_errors_name_the_file_and_the_option(exported, tmp_path):
    out, _, _ = exported
    with pytest.raises(InputError, match="give two audio files, or --trials"):
        verify.main([out, "a.wav"])
    with pytest.raises(InputError, match="nothing to write"):
        export_model.main(["--initial_model", out])
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="is not a speaker model file"):
        SpeakerModel.load(str(plain))


def test_average_checkpoints_exports_the_average_the_evaluator_scores(two_epoch_run, tmp_path):
    save_path, argv, _ = two_epoch_run
    run = str(tmp_path / "run")
    shutil.copytree(save_path, run)
    out = str(tmp_path / "speaker.pt")
    export_model.main([run if item == save_path else item for item in argv] + EVAL
                      + ["--output", out, "--average_checkpoints", "2"])
    first, second = (checkpoints.read_state_dict(checkpoints.model_path(os.path.join(run, "model"), epoch))
                     for epoch in (1, 2))
    differs = False
    for key, value in load_speaker_model(out).encoder.state_dict().items():
        torch.testing.assert_close(value, (first["__S__." + key] + second["__S__." + key]) / 2)
        differs |= not torch.equal(value, second["__S__." + key])
    assert differs, "the export is the newest checkpoint, not the average"


def test_verify_warns_about_digital_silence_naming_the_files(exported, tmp_path, caplog):
    silent = [str(tmp_path / f"s/v/{name}.wav") for name in ("zeros", "quiet")]
    os.makedirs(tmp_path / "s" / "v")
    quiet = 10 ** (-65 / 20) * np.sin(np.arange(8000) / 5.0)
    for path, audio in zip(silent, (np.zeros(8000), quiet)):
        soundfile.write(path, audio.astype(np.float32), 16000, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        verify.main([exported[0], *silent, "--nDataLoaderThread", "0"])
    warned = [message for message in caplog.messages if "is digital silence" in message]
    assert warned == [f"{silent[0]} is digital silence: every sample is below -60 dBFS (peak: every sample is 0); its "
                      "embedding and scores carry no speaker information",
                      f"{silent[1]} is digital silence: every sample is below -60 dBFS (peak: -65.0 dBFS); its "
                      "embedding and scores carry no speaker information"]
