"""trainSpeakerNet_Eval.py end to end on generated speakers, a tiny random WavLM and random MHFA checkpoints."""
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_factory import make_speaker_dataset

import trainSpeakerNet_Eval as cli
from dataio.audio import crop_audio, read_audio
from dataio.embedding_store import load_embeddings
from dataio.trials import TrialListError
from demo.corpus import write_trials
from models.wavlm_checkpoint import save_random_wavlm_checkpoint
from scoring import plots
from SpeakerNet import SpeakerNet
from utils import checkpoints
from utils.errors import InputError
from utils.options import parse_options
from utils.records import read_json

MODEL = ["--nOut", "16", "--head_nb", "4", "--compression_dim", "16", "--nClasses", "3",
         "--nDataLoaderThread", "0", "--device", "cpu"]
EVAL = ["--eval_frames", "30", "--num_eval", "3", "--eval_batch_size", "4"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    data = str(root / "data")
    train_list, entries = make_speaker_dataset(data, n_speakers=3, n_sessions=1, n_utts=2, seconds=(0.6, 0.9))
    wavlm = str(root / "wavlm.pt")
    save_random_wavlm_checkpoint(wavlm)
    save_path = str(root / "exp")
    base = MODEL + ["--pretrained_model_path", wavlm, "--save_path", save_path]
    args = parse_options("t", base)
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        model_file = checkpoints.model_path(os.path.join(save_path, "model"), epoch)
        checkpoints.save_weights(SpeakerNet(**vars(args)), model_file)
    rel = [r for _, r in entries]
    speaker = [label for label, _ in entries]
    pairs = [(int(speaker[i] == speaker[j]), rel[i], rel[j]) for i in range(len(rel)) for j in range(i + 1, len(rel))]
    trials = str(root / "trials.txt")
    write_trials(pairs, trials)
    unlabelled = str(root / "unlabelled.txt")
    with open(unlabelled, "w") as handle:
        handle.writelines(f"{e} {t}\n" for _, e, t in pairs[:5])
    common = base + ["--test_path", data, "--train_path", data, "--train_list", train_list]
    return dict(root=root, data=data, rel=rel, pairs=pairs, trials=trials, unlabelled=unlabelled,
                save_path=save_path, common=common, args=args)


def result_dir(setup):
    return os.path.join(setup["save_path"], "result")


def reference_scores(setup, checkpoint, pairs, eval_frames=30, num_eval=3):
    """The original's formula, file by file: mean of the crop x crop cosine matrix and the whole-file cosine."""
    net = SpeakerNet(**vars(setup["args"]))
    checkpoints.load_weights(net, checkpoint, strict_loss=False)
    encoder = net.__S__.eval()
    feats = {}
    with torch.no_grad():
        for name in setup["rel"]:
            audio = read_audio(os.path.join(setup["data"], name))
            crops = torch.from_numpy(crop_audio(audio, eval_frames, True, num_eval)).float()
            whole = torch.from_numpy(crop_audio(audio, 0, True)).float()
            feats[name] = (F.normalize(encoder(crops), dim=1), F.normalize(encoder(whole), dim=1))
    return np.array([((feats[e][0] @ feats[t][0].T).mean() + (feats[e][1] @ feats[t][1].T).mean()).item() / 2
                     for _, e, t in pairs])


def read_scores(path):
    with open(path) as handle:
        return [line.split() for line in handle]


def test_eval_writes_scores_results_and_plots(setup, capsys):
    cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["trials"], "--num_checkpoints", "2"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "| EER" in line]
    print("\n" + "\n".join(lines))
    assert len(lines) == 2 and "checkpoint model000000002" in lines[0] and "checkpoint model000000001" in lines[1]
    n, targets = len(setup["pairs"]), sum(label for label, _, _ in setup["pairs"])
    assert (n, targets) == (15, 3)
    for line in lines:
        assert f"trials {setup['trials']} ({n} trials: {targets} target, {n - targets} non-target)" in line
        assert "minDCF(p_target=0.05)" in line and "minDCF(p_target=0.01)" in line
    for epoch in (1, 2):
        tag = f"model{epoch:09d}_trials"
        rows = read_scores(os.path.join(result_dir(setup), f"scores_{tag}.txt"))
        assert [(int(r[1]), r[2], r[3]) for r in rows] == setup["pairs"]
        for kind in ("det", "hist"):
            with open(os.path.join(result_dir(setup), f"{kind}_{tag}.png"), "rb") as handle:
                assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    rows = read_scores(os.path.join(result_dir(setup), "scores_model000000002_trials.txt"))
    newest = checkpoints.model_path(os.path.join(setup["save_path"], "model"), 2)
    diff = np.abs(np.array([float(r[0]) for r in rows]) - reference_scores(setup, newest, setup["pairs"])).max()
    print(f"max |score - the original's formula, one file at a time| = {diff:.2e}")
    assert diff < 1e-5
    with open(os.path.join(result_dir(setup), "eval_results.txt")) as handle:
        saved = handle.read().splitlines()
    assert saved[-2:] == lines
    for epoch, line in zip((2, 1), lines):
        tag = f"model{epoch:09d}_trials"
        record = read_json(os.path.join(result_dir(setup), f"eval_{tag}.json"))
        assert f"| EER {record['eer']:.4f}% minDCF(p_target=0.05) {record['min_dcf']['0.05']:.5f} " \
               f"minDCF(p_target=0.01) {record['min_dcf']['0.01']:.5f} |" in line
        assert (record["n_trials"], record["n_target"], record["trial_list"]) == (n, targets, setup["trials"])
        assert record["checkpoint_path"] == checkpoints.model_path(os.path.join(setup["save_path"], "model"), epoch)
        assert record["det_plot"] == os.path.join(result_dir(setup), f"det_{tag}.png")
        assert record["scores_file"] == f"scores_{tag}.txt"


def test_unlabelled_list_gives_scores_only(setup, capsys):
    name = os.path.join(result_dir(setup), "scores_model000000002_unlabelled.txt")
    cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["unlabelled"], "--plots", "true"])
    out = capsys.readouterr().out
    assert "5 trials, no labels: scores only" in out and "EER" not in out
    rows = read_scores(name)
    assert [(r[1], r[2]) for r in rows] == [(e, t) for _, e, t in setup["pairs"][:5]]
    assert not os.path.exists(name.replace("scores_", "det_").replace(".txt", ".png"))


def test_missing_trial_file_is_named_before_any_model_work(setup, tmp_path):
    bad = tmp_path / "bad.txt"
    e, t = setup["pairs"][0][1:]
    bad.write_text(f"1 {e} {t}\n\n0 {e} id99999/nope/00001.wav\n")
    argv = setup["common"] + ["--eval", "--test_list", str(bad), "--pretrained_model_path", str(tmp_path / "absent.pt")]
    with pytest.raises(TrialListError) as error:
        cli.main(argv)
    assert f"{bad}:3" in str(error.value) and "id99999/nope/00001.wav" in str(error.value)
    bad.write_text(f"1 {e} {t}\n2 {e} {t}\n")
    with pytest.raises(TrialListError, match=f"{bad}:2: label must be 1"):
        cli.main(argv)


def test_generate_embeddings_feeds_pseudo_labeling(setup, tmp_path):
    import pseudo_labeling

    out = str(tmp_path / "emb.pt")
    cli.main(setup["common"] + ["--generate_embeddings", "--embeddings_path", out, "--eval_batch_size", "4",
                                "--embedding_mode", "eval"])
    stored = torch.load(out, weights_only=True)
    assert list(stored) == setup["rel"]  # keys: the last three path parts, in train-list order
    assert all(v.shape == (1, 16) and v.dtype == torch.float32 for v in stored.values())
    keys, matrix = load_embeddings(out)
    net = SpeakerNet(**vars(setup["args"]))
    newest = checkpoints.model_path(os.path.join(setup["save_path"], "model"), 2)
    checkpoints.load_weights(net, newest, strict_loss=False)
    with torch.no_grad():
        alone = net.__S__.eval()(torch.from_numpy(read_audio(os.path.join(setup["data"], keys[0])))[None])
    assert torch.allclose(matrix[0], alone[0], rtol=1e-4, atol=1e-6)
    labels = str(tmp_path / "pl.txt")
    status = pseudo_labeling.main([out, labels, "--n_clusters", "4", "--n_clusters_ahc", "3", "--device", "cpu"])
    assert status == 0
    with open(labels) as handle:
        assert [line.split()[1] for line in handle] == setup["rel"]


def test_generate_embeddings_in_train_mode_is_stochastic_but_reproducible(setup, tmp_path):
    """The original's quirk (docs/method.md §10): dropout and layer drop on, drawn from a generator seeded by --seed."""
    runs = {}
    for name, extra in (("train", []), ("again", []), ("eval", ["--embedding_mode", "eval"])):
        out = str(tmp_path / f"{name}.pt")
        cli.main(setup["common"] + ["--generate_embeddings", "--embeddings_path", out, *extra])
        runs[name] = load_embeddings(out)[1]
    assert torch.equal(runs["train"], runs["again"])
    difference = (runs["train"] - runs["eval"]).abs().max() / runs["eval"].abs().max()
    print(f"train vs eval mode embeddings: max relative difference {difference:.3f}")
    assert difference > 1e-3


def test_generate_embeddings_without_weights_is_a_clear_error(setup, tmp_path):
    argv = setup["common"] + ["--generate_embeddings", "--embeddings_path", str(tmp_path / "e.pt"),
                              "--save_path", str(tmp_path / "empty")]
    with pytest.raises(InputError, match="give --initial_model or train"):
        cli.main(argv)


def test_average_checkpoints_evaluates_the_mean_of_the_weights(setup, capsys):
    cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["trials"], "--average_checkpoints", "2",
                                       "--plots", "false"])
    assert "checkpoint average_model000000001-model000000002 |" in capsys.readouterr().out
    model_dir = os.path.join(setup["save_path"], "model")
    averaged = checkpoints.read_state_dict(os.path.join(model_dir, "average_model000000001-model000000002.model"))
    first, second = (checkpoints.read_state_dict(checkpoints.model_path(model_dir, e)) for e in (1, 2))
    key = "__S__.backend.pooling_fc.weight"
    assert torch.allclose(averaged[key], (first[key] + second[key]) / 2)


def test_asnorm_and_mean_subtraction_with_a_cohort(setup, tmp_path, capsys):
    cohort = str(tmp_path / "cohort.pt")
    cli.main(setup["common"] + ["--generate_embeddings", "--embeddings_path", cohort])
    capsys.readouterr()
    cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["trials"], "--score_norm", "asnorm",
                                       "--asnorm_top_k", "3", "--cohort_embeddings", cohort, "--subtract_mean",
                                       "--plots", "false"])
    out = capsys.readouterr().out
    assert f"score norm mean of {cohort} subtracted, AS-norm top 3 of {cohort}" in out
    rows = read_scores(os.path.join(result_dir(setup), "scores_model000000002_trials.txt"))
    scores = np.array([float(r[0]) for r in rows])
    # AS-normalised scores are z-scores: no longer within [-1, 1] cosine-like range for every trial.
    assert np.abs(scores).max() > 1.0
    with pytest.raises(InputError, match="asnorm_top_k 50 must lie between 2 and the cohort size 6"):
        cli.main(setup["common"] + ["--eval", "--test_list", setup["trials"], "--score_norm", "asnorm",
                                    "--asnorm_top_k", "50", "--cohort_embeddings", cohort])


def test_original_layout_checkpoint_as_initial_model(setup, tmp_path, capsys):
    """A DDP-prefixed checkpoint with another AAM size (nClasses 7500) evaluates like ours."""
    ours = checkpoints.read_state_dict(checkpoints.model_path(os.path.join(setup["save_path"], "model"), 2))
    original = {"module." + key: value for key, value in ours.items() if not key.startswith("__L__.")}
    original["module.__L__.weight"] = torch.randn(7500, 16)
    released = str(tmp_path / "wavlm_mhfa_dlg_lc_lmft.model")
    torch.save(original, released)
    cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["unlabelled"], "--initial_model", released])
    assert "checkpoint wavlm_mhfa_dlg_lc_lmft |" in capsys.readouterr().out
    cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["unlabelled"]])
    scores = {name: read_scores(os.path.join(result_dir(setup), f"scores_{name}_unlabelled.txt"))
              for name in ("wavlm_mhfa_dlg_lc_lmft", "model000000002")}
    assert scores["wavlm_mhfa_dlg_lc_lmft"] == scores["model000000002"]


def test_det_plot_titles_name_the_run_and_the_checkpoint(setup, tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(plots, "plot_det", lambda scores, labels, path, title, p_targets: titles.append(title))
    for run in ("round1", "round2"):
        shutil.copytree(os.path.join(setup["save_path"], "model"), tmp_path / run / "model")
        cli.main(setup["common"] + EVAL + ["--eval", "--test_list", setup["trials"], "--save_path",
                                           str(tmp_path / run)])
    assert titles == ["round1: model000000002 on trials", "round2: model000000002 on trials"]
