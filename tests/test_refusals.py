"""Inputs refused before any work, with one line naming the option or file, and nothing left on disk.

Outputs that name an input (or another output), outputs that are folders, counts out of range, a
one-class train list, embedding keys a train list cannot hold, unreadable model files; a refused
training run leaves no folder behind.
"""
from __future__ import annotations

import os
import pickle

import pytest
import torch

import pseudo_labeling
import trainDINO
import trainSpeakerNet
import trainSpeakerNet_Eval
from dataio.embedding_store import load_embeddings
from models.wavlm_checkpoint import CheckpointFormatError, load_pretrained_wavlm
from scripts import bootstrap_embeddings, checkpoint_average, dataprep, embed, export_model, verify
from tests.conftest import TINY_CONFIG
from utils import checkpoints
from utils.atomic import check_writable
from utils.errors import InputError

DINO_TINY = os.path.join(os.path.dirname(TINY_CONFIG), "dino_tiny.yaml")


class Anything:
    """A class safe unpickling refuses."""


@pytest.fixture
def files(tmp_path):
    """A few small files that stand for the inputs of the commands: their content must survive."""
    paths = {}
    for name, content in (("trials.txt", b"1 a/b/1.wav a/b/2.wav\n"), ("list.txt", b"s a/b/1.wav\n"),
                          ("model.pt", b"model bytes"), ("emb.pt", b"embedding bytes")):
        (tmp_path / name).write_bytes(content)
        paths[name] = str(tmp_path / name)
    return paths


def contents(paths):
    return {name: open(path, "rb").read() for name, path in paths.items()}


# ----- outputs that name an input -----

def refused_commands(files, tiny_argv, tmp_path):
    """(run, message) of each command given an output that is one of its inputs."""
    model, listing, emb, trials = files["model.pt"], files["list.txt"], files["emb.pt"], files["trials.txt"]
    eval_argv = tiny_argv(str(tmp_path / "exp"), "--generate_embeddings", "--train_list", listing,
                          "--embeddings_path", listing)
    dino_argv = ["--config", DINO_TINY, "--generate_embeddings", "--train_list", listing, "--embeddings_path",
                 listing, "--initial_model", model, "--save_path", str(tmp_path / "dino")]
    return [
        (lambda: verify.main([model, "--trials", trials, "--scores", trials]),
         f"--scores {trials} is the file --trials "),
        (lambda: verify.main([model, "--trials", trials, "--scores", model]), f"--scores {model} is the file model "),
        (lambda: pseudo_labeling.run_pseudo_labeling(emb, emb), f"output_file {emb} is the file embeddings_file "),
        (lambda: embed.main([model, listing, "--output", model]), f"--output {model} is the file model "),
        (lambda: embed.main([model, listing, "--output", listing]), f"--output {listing} is the file an input "),
        (lambda: export_model.main(tiny_argv(str(tmp_path / "exp"), "--initial_model", model, "--output", model)),
         f"--output {model} is the file --initial_model "),
        (lambda: export_model.main(tiny_argv(str(tmp_path / "exp"), "--initial_model", model, "--output",
                                             str(tmp_path / "x.pt"), "--onnx", str(tmp_path / "x.pt"))),
         "--onnx .*x.pt is the file --output names: one output would overwrite the other"),
        (lambda: trainSpeakerNet_Eval.main(eval_argv), f"--embeddings_path {listing} is the file --train_list "),
        (lambda: trainDINO.main(dino_argv), f"--embeddings_path {listing} is the file --train_list "),
        (lambda: checkpoint_average.main([model, model, emb]), f"output {model} is the file checkpoint "),
        (lambda: bootstrap_embeddings.write_bootstrap_embeddings(bootstrap_embeddings.build_parser().parse_args(
            ["--train_list", listing, "--train_path", ".", "--embeddings_path", listing])),
         f"--embeddings_path {listing} is the file --train_list "),
    ]


@pytest.mark.parametrize("case", range(11))
def test_an_output_that_names_an_input_is_refused_and_the_input_kept(files, tiny_argv, tmp_path, case):
    before = contents(files)
    run, message = refused_commands(files, tiny_argv, tmp_path)[case]
    with pytest.raises(InputError, match=message):
        run()
    assert contents(files) == before
    assert sorted(os.listdir(tmp_path)) == sorted(files)


def test_a_link_to_an_input_is_the_input(files, tmp_path):
    os.symlink(files["trials.txt"], tmp_path / "link.txt")
    os.link(files["trials.txt"], tmp_path / "hard.txt")
    for alias in ("link.txt", "hard.txt"):
        with pytest.raises(InputError, match=f"--scores .*{alias} is the file --trials names"):
            verify.main([files["model.pt"], "--trials", files["trials.txt"], "--scores", str(tmp_path / alias)])


# ----- outputs that are folders; check_writable leaves nothing -----

def folder_outputs(files, tiny_argv, tmp_path, folder):
    model, listing = files["model.pt"], files["list.txt"]
    return [
        (lambda: verify.main([model, "--trials", files["trials.txt"], "--scores", folder]), "--scores"),
        (lambda: embed.main([model, listing, "--output", folder]), "--output"),
        (lambda: export_model.main(tiny_argv(str(tmp_path / "exp"), "--initial_model", model, "--onnx", folder)),
         "--onnx"),
        (lambda: pseudo_labeling.run_pseudo_labeling(files["emb.pt"], folder), "pseudo-label list"),
        (lambda: trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), "--generate_embeddings",
                                                     "--embeddings_path", folder)), "--embeddings_path"),
        (lambda: checkpoint_average.main([folder, model]), "output"),
        (lambda: dataprep.cmd_train_list(dataprep.build_parser().parse_args(
            ["train_list", "--root", str(tmp_path), "--output", folder])), "--output"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_a_folder_given_as_an_output_file_is_refused_before_the_work(files, tiny_argv, tmp_path, case):
    folder = str(tmp_path / "out")
    os.mkdir(folder)
    run, what = folder_outputs(files, tiny_argv, tmp_path, folder)[case]
    with pytest.raises(InputError, match=f"cannot write {what} {folder}: it is a folder; give a file name"):
        run()
    assert os.listdir(folder) == []


def test_check_writable_leaves_no_folder_behind(tmp_path):
    check_writable(tmp_path / "a" / "b" / "out.txt")
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "out.txt")


def test_check_writable_makes_no_folder_that_another_process_could_see_vanish(tmp_path, monkeypatch):
    """Every process of a torchrun group checks its outputs: a folder one of them made for its probe and then
    removed vanished under another one's probe ("No such file or directory"). No folder is made at all."""
    def refuse(*args, **kwargs):
        raise AssertionError("check_writable made a folder")

    monkeypatch.setattr(os, "mkdir", refuse)
    monkeypatch.setattr(os, "makedirs", refuse)
    check_writable(tmp_path / "run" / "result" / "eval_results.txt")
    assert os.listdir(tmp_path) == []


# ----- counts -----

@pytest.mark.parametrize("command, option, value, lowest", [
    ("verify", "--eval_batch_size", "0", 1), ("verify", "--nDataLoaderThread", "-1", 0),
    ("embed", "--eval_batch_size", "0", 1), ("embed", "--nDataLoaderThread", "-1", 0), ("embed", "--threads", "-1", 0),
    ("export", "--average_checkpoints", "-1", 0), ("eval", "--nDataLoaderThread", "-1", 0),
    ("train", "--max_epoch", "0", 1), ("train", "--nDataLoaderThread", "-1", 0),
])
def test_counts_out_of_range_name_the_option(files, tiny_argv, tmp_path, command, option, value, lowest):
    model = files["model.pt"]
    run = {"verify": lambda: verify.main([model, model, model, option, value]),
           "embed": lambda: embed.main([model, model, "--output", str(tmp_path / "e.pt"), option, value]),
           "export": lambda: export_model.main(tiny_argv(str(tmp_path / "exp"), "--output", str(tmp_path / "s.pt"),
                                                         option, value)),
           "eval": lambda: trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), "--eval", option, value)),
           "train": lambda: trainSpeakerNet.main(tiny_argv(str(tmp_path / "exp"), option, value))}[command]
    with pytest.raises(InputError, match=f"^{option} must be at least {lowest}, got {value}$"):
        run()
    assert not os.path.exists(tmp_path / "exp") and not os.path.exists(tmp_path / "s.pt")


# ----- training: one class; no folders left by a refused run -----

def test_a_one_label_train_list_is_refused_before_training(tiny_argv, tiny_corpus, tmp_path):
    label = tiny_corpus.entries[0][0]
    listing = tmp_path / "one.txt"
    listing.write_text("".join(f"{label} {rel}\n" for speaker, rel in tiny_corpus.entries if speaker == label))
    save_path = tmp_path / "exp"
    with pytest.raises(InputError, match=f"every line has the label '{label}'; training needs at least 2 classes"):
        trainSpeakerNet.main(tiny_argv(str(save_path), "--train_list", str(listing), "--batch_size", "1"))
    assert not save_path.exists()


@pytest.mark.parametrize("trainer", ["speaker", "dino"])
def test_a_run_refused_for_its_inputs_leaves_no_folder(tiny_argv, tiny_corpus, tmp_path, trainer):
    save_path = tmp_path / "exp"
    missing = str(tmp_path / "missing.txt")
    if trainer == "speaker":
        run = lambda: trainSpeakerNet.main(tiny_argv(str(save_path), "--train_list", missing))  # noqa: E731
    else:
        run = lambda: trainDINO.main(["--config", DINO_TINY, "--train_list", missing, "--save_path",  # noqa: E731
                                      str(save_path)])
    with pytest.raises(InputError, match="missing.txt"):
        run()
    assert os.listdir(tmp_path) == []


def test_an_evaluation_without_checkpoint_leaves_no_result_folder(tiny_argv, tiny_corpus, tmp_path):
    trials = tmp_path / "trials.txt"
    label, first = tiny_corpus.entries[0]
    other = next(rel for speaker, rel in tiny_corpus.entries if speaker != label)
    trials.write_text(f"1 {first} {tiny_corpus.entries[1][1]}\n0 {first} {other}\n")
    with pytest.raises(InputError, match="no checkpoint to use"):
        trainSpeakerNet_Eval.main(tiny_argv(str(tmp_path / "exp"), "--eval", "--test_list", str(trials),
                                            "--test_path", tiny_corpus.train_path))
    assert sorted(os.listdir(tmp_path)) == ["trials.txt"]


# ----- pseudo-labels: keys a train list cannot hold -----

def test_an_embedding_key_with_a_space_is_refused_before_clustering(tmp_path):
    keys = [f"id{i % 2}/v/{i}.wav" for i in range(6)] + ["id0/v/my file.wav"]
    torch.save({key: torch.randn(1, 4) for key in keys}, tmp_path / "emb.pt")
    with pytest.raises(InputError, match="key 'id0/v/my file.wav' is empty or holds whitespace, which a train "
                                         "list line cannot hold"):
        pseudo_labeling.run_pseudo_labeling(str(tmp_path / "emb.pt"), str(tmp_path / "pl.txt"), n_clusters=2,
                                            n_clusters_ahc=0, device="cpu")
    assert os.listdir(tmp_path) == ["emb.pt"]


# ----- unreadable model and embeddings files: one line saying what is wrong -----

def test_a_model_file_with_objects_is_refused_in_one_line(tmp_path):
    for name, zipped in (("zip.pt", True), ("legacy.pt", False)):
        path = str(tmp_path / name)
        torch.save({"cfg": {}, "model": {}, "x": Anything()}, path, _use_new_zipfile_serialization=zipped)
        for load, kind in ((checkpoints.read_state_dict, checkpoints.CheckpointError),
                           (load_pretrained_wavlm, CheckpointFormatError)):
            with pytest.raises(kind) as error:
                load(path)
            message = str(error.value)
            assert "\n" not in message and "\x1b" not in message, message
            assert f"'{path}' holds objects other than tensors and plain containers (such as " \
                   f"{__name__}.Anything), so safe loading refuses it" in message


def test_an_empty_or_foreign_embeddings_file_says_what_is_wrong(tmp_path):
    empty, text = tmp_path / "empty.pt", tmp_path / "text.pt"
    empty.write_bytes(b"")
    text.write_bytes(pickle.dumps("a string") + b"\n")
    with pytest.raises(InputError, match=r"embeddings file '.*empty.pt' is unreadable: empty, truncated or not a "
                                         r"PyTorch file \(it holds 0 bytes\)$"):
        load_embeddings(empty)
    with pytest.raises(InputError) as error:
        load_embeddings(text)
    assert str(error.value).startswith(f"embeddings file '{text}' is unreadable: empty, truncated or not a PyTorch "
                                       "file (") and "()" not in str(error.value) and "\n" not in str(error.value)
