"""pseudo_labeling.py end to end on generated embeddings: output format and order, reports, bad input."""
import json
import logging
import os

import pytest
import torch

from pseudo_labeling import main, run_pseudo_labeling


def speaker_embeddings(n_speakers=4, videos=3, files=8, dim=16, seed=0):
    """Keys idXXXXX/videoV/0000F.wav in a shuffled order; each speaker is a tight blob."""
    g = torch.Generator().manual_seed(seed)
    centres = 20.0 * torch.randn(n_speakers, dim, generator=g)
    keys = [f"id{10000 + s:05d}/video{v}/{f + 1:05d}.wav"
            for s in range(n_speakers) for v in range(videos) for f in range(files)]
    order = torch.randperm(len(keys), generator=g).tolist()
    return {keys[i]: (centres[int(keys[i][2:7]) - 10000] + torch.randn(dim, generator=g)).reshape(1, dim)
            for i in order}


def read_list(path):
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n").split(" ") for line in handle]


def test_cli_writes_one_label_per_key_in_input_order_and_reports_nmi(tmp_path, caplog):
    embeddings = speaker_embeddings()
    torch.save(embeddings, tmp_path / "emb.pt")
    out = tmp_path / "lists" / "pl.txt"
    with caplog.at_level(logging.INFO):
        status = main([str(tmp_path / "emb.pt"), str(out), "--n_clusters", "12", "--n_clusters_ahc", "4",
                       "--device", "cpu"])
    assert status == 0
    rows = read_list(out)
    assert [key for _, key in rows] == list(embeddings)
    labels = [int(label) for label, _ in rows]
    assert sorted(set(labels)) == [0, 1, 2, 3]
    # well separated speakers: every speaker gets exactly one pseudo-label, and vice versa
    by_speaker = {}
    for label, key in zip(labels, embeddings):
        by_speaker.setdefault(key.split("/")[0], set()).add(label)
    assert all(len(group) == 1 for group in by_speaker.values())
    assert len(set.union(*by_speaker.values())) == 4
    assert "NMI: 1.0000, purity: 1.0000" in caplog.text
    assert "k-means iteration 1/300" in caplog.text
    assert sorted(os.listdir(out.parent)) == ["pl.summary.json", "pl.txt"]
    summary = json.loads((out.parent / "pl.summary.json").read_text())
    assert summary["nmi"] == summary["purity"] == 1.0 and summary["n_clusters_nonempty"] == 4
    assert summary["n_files"] == len(embeddings) and summary["output_file"] == str(out)
    assert set(summary["timings"]) == {"load", "kmeans", "ahc", "report", "write", "total"}


def test_summary_without_ahc_and_with_keys_without_speakers(tmp_path):
    embeddings = speaker_embeddings(n_speakers=3, videos=2, files=5)
    torch.save(embeddings, tmp_path / "emb.pt")
    summary = run_pseudo_labeling(str(tmp_path / "emb.pt"), str(tmp_path / "pl.txt"), n_clusters=6,
                                  n_clusters_ahc=0, device="cpu", init="k-means++-subsample")
    labels = [int(label) for label, _ in read_list(tmp_path / "pl.txt")]
    assert max(labels) < 6 and summary["n_clusters_nonempty"] == len(set(labels)) == 6
    assert summary["nmi"] == summary["nmi_kmeans"] and 0.5 < summary["nmi"] < 1.0
    assert summary["purity"] == 1.0 and summary["n_files"] == 30 and summary["dim"] == 16
    assert {"load", "kmeans", "report", "write", "total"} <= set(summary["timings"])
    assert "ahc" not in summary["timings"]

    plain = {f"utt{i}": value for i, value in enumerate(embeddings.values())}
    torch.save(plain, tmp_path / "plain.pt")
    summary = run_pseudo_labeling(str(tmp_path / "plain.pt"), str(tmp_path / "pl2.txt"), n_clusters=6,
                                  n_clusters_ahc=3, device="cpu")
    assert summary["nmi"] is None and summary["purity"] is None and summary["n_clusters_nonempty"] == 3
    assert [key for _, key in read_list(tmp_path / "pl2.txt")] == list(plain)


def bad_files():
    good = speaker_embeddings(n_speakers=2, videos=1, files=5)
    first = next(iter(good))
    yield "empty", {}, [], "empty dict"
    yield "dims", {**good, "id99999/v/1.wav": torch.ones(1, 15)}, [], "key 'id99999/v/1.wav' has dimension 15"
    yield "nan", {**good, first: torch.full((1, 16), float("nan"))}, [], f"key '{first}' holds NaN"
    yield "two_rows", {**good, "id99999/v/2.wav": torch.ones(2, 16)}, [], "key 'id99999/v/2.wav': shape (2, 16)"
    yield "too_many", good, ["--n_clusters", "11"], "--n_clusters 11 must be between 1 and the number of embeddings"
    yield "ahc_above", good, ["--n_clusters", "4", "--n_clusters_ahc", "5"], "--n_clusters_ahc 5 must be between 0"
    yield "init", good, ["--n_clusters", "4", "--init", "random"], "--init: invalid choice: 'random'"
    yield "memory", good, ["--n_clusters", "4", "--n_clusters_ahc", "2", "--max_memory_gb", "1e-6"], "needs about"


@pytest.mark.parametrize("name, content, options, message", list(bad_files()), ids=[b[0] for b in bad_files()])
def test_bad_input_is_an_error_and_leaves_no_output(tmp_path, capsys, name, content, options, message):
    torch.save(content, tmp_path / "emb.pt")
    out = tmp_path / "pl.txt"
    status = main([str(tmp_path / "emb.pt"), str(out), "--device", "cpu", *options])
    assert status != 0
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["emb.pt"]


def test_missing_embeddings_file_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pt"), str(tmp_path / "pl.txt")]) != 0
    assert "nope.pt" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_auto_init_is_the_subsample_kmeanspp_on_cpu(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    torch.save(speaker_embeddings(n_speakers=3, videos=2, files=5), tmp_path / "emb.pt")
    run_pseudo_labeling(str(tmp_path / "emb.pt"), str(tmp_path / "pl.txt"), n_clusters=6, n_clusters_ahc=3,
                        device="cpu")
    assert "initialisation (k-means++-subsample)" in caplog.text
