"""run_rounds.py: the whole loop on a tiny generated corpus (real scripts, 1 round, 1 epoch), interrupted
with a signal and resumed; option passing; step bookkeeping."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import rounds.steps
import run_rounds
from tests.data_factory import make_speaker_dataset

REPO = Path(run_rounds.__file__).resolve().parent
TINY = ["--rounds", "1", "--n_clusters", "4", "--n_clusters_ahc", "0", "--set", "max_epoch=1",
        "--set", "max_frames=50", "--set", "eval_frames=50", "--set", "num_eval=2", "--set", "batch_size=2",
        "--set", "nClasses=6"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """4 synthetic speakers x 2 sessions x 3 utterances at 8 kHz in SPEAKER/SESSION/UTT.wav."""
    root = tmp_path_factory.mktemp("rounds_corpus")
    make_speaker_dataset(str(root), n_speakers=4, n_sessions=2, n_utts=3, seconds=(0.8, 1.2), sample_rate=8000)
    return root


def driver(base, corpus, *extra):
    return [sys.executable, str(REPO / "run_rounds.py"), "--demo", "--data", str(corpus), "--base_path", str(base),
            *TINY, *extra]


def processes_mentioning(text):
    """Command lines of running processes that contain ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| round") or line.startswith("| LMFT")]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="checks for orphans through /proc")
def test_loop_interrupted_resumed_and_skipped(tmp_path, corpus):
    base = tmp_path / "run"
    # 1. Start the loop and kill it with SIGTERM while round 1 trains.
    first = subprocess.Popen(driver(base, corpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not (base / "logs" / "round1.train.log").exists():
        assert first.poll() is None and time.time() < deadline, "the driver never reached round 1's training"
        time.sleep(0.2)
    time.sleep(1.0)
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=90)
    assert first.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert not processes_mentioning(str(base)), "a step outlived the driver"
    done = sorted(p.name for p in (base / ".steps").iterdir())
    assert done == ["bootstrap.mfcc.done", "demo.data.done", "round1.pseudo_labels.done"]

    # 2. Run the same command again: finished steps are skipped, the rest runs, the table is filled.
    second = subprocess.run(driver(base, corpus), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count(" skip ") == 3 and "==== round 1: training ====" in second.stdout
    rows = table_rows((base / "rounds.md").read_text())
    assert [row.split("|")[1].strip() for row in rows] == ["round 1", "LMFT"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        nmi, purity, clusters, accuracy, eer = (float(c) for c in cells[2:7])
        assert 0.0 <= nmi <= 1.0 and 0.0 < purity <= 1.0 and clusters == 4
        assert 0.0 <= accuracy <= 100.0 and 0.0 <= eer <= 100.0
        assert all(0.0 <= float(c) <= 1.5 for c in cells[7:])  # minDCF at 0.05 and 0.01
    assert re.search(r"DET plot: .*lmft/result/det_.*\.png", second.stdout)
    assert (base / "lmft" / "result" / "eval_results.txt").is_file()
    # The table is the stages' JSON records, rounded.
    for row, stage in zip(rows, ("round1", "lmft")):
        cells = [c.strip() for c in row.split("|")[1:-1]]
        summary = json.loads((base / "round1" / "pseudo_labels.summary.json").read_text())
        metrics = (base / stage / "result" / "train_metrics.jsonl").read_text()
        epochs = [json.loads(line) for line in metrics.splitlines()]
        evaluation = json.loads(next((base / stage / "result").glob("eval_*.json")).read_text())
        assert cells[2:7] == [f"{summary['nmi']:.3f}", f"{summary['purity']:.3f}", str(summary["n_clusters_nonempty"]),
                              f"{epochs[-1]['accuracy']:.1f}", f"{evaluation['eer']:.2f}"]
        assert cells[7:] == [f"{evaluation['min_dcf'][p]:.3f}" for p in ("0.05", "0.01")]
        assert [record["epoch"] for record in epochs] == [1] and evaluation["n_trials"] > 0

    # The overrides reached every training run; LMFT started from round 1's newest checkpoint.
    for stage in ("round1", "lmft"):
        resolved = yaml.safe_load((base / stage / "config.yaml").read_text())
        assert resolved["max_epoch"] == 1 and resolved["batch_size"] == 2 and resolved["nClasses"] == 6
    lmft_command = (base / "logs" / "lmft.train.log").read_text()
    assert f"--initial_model {base / 'round1' / 'model' / 'model000000001.model'}" in lmft_command

    # 3. A third run has nothing left to do and prints the same table.
    third = subprocess.run(driver(base, corpus), capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and third.stdout.count(" skip ") == 7 and "====" not in third.stdout
    assert table_rows(third.stdout) == rows


def test_dry_run_commands(tmp_path, capsys):
    embeddings = tmp_path / "emb.pt"
    embeddings.write_bytes(b"")
    for name in ("voxceleb2", "voxceleb1"):
        (tmp_path / name).mkdir()
    for name in ("trials.txt", "wavlm.pt"):
        (tmp_path / name).write_text("")
    code = run_rounds.main([
        "--base_path", str(tmp_path / "exp"), "--initial_embeddings", str(embeddings), "--rounds", "2",
        "--nproc_per_node", "2", "--dry_run", "--set", f"train_path={tmp_path / 'voxceleb2'}",
        "--set", f"test_path={tmp_path / 'voxceleb1'}", "--set", f"test_list={tmp_path / 'trials.txt'}",
        "--set", f"pretrained_model_path={tmp_path / 'wavlm.pt'}", "--set", "max_epoch=3", "--pl_set", "device=cpu"])
    out = capsys.readouterr().out
    assert code == 0
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    assert len(commands) == 9  # 2 x (pseudo-labels, train, eval) + 1 embeddings + LMFT train and eval
    trainings = [c for c in commands if "trainSpeakerNet.py" in c]
    assert len(trainings) == 3 and len([c for c in commands if "trainSpeakerNet_Eval.py" in c]) == 4
    assert all("-m torch.distributed.run --standalone --nproc_per_node=2" in c and "--distributed true" in c
               for c in commands if "trainSpeakerNet" in c)
    assert all("--max_epoch 3" in c for c in trainings)  # each command gets the overrides it reads
    assert not any("--max_epoch" in c for c in commands if "trainSpeakerNet_Eval.py" in c)
    assert all("--device cpu" in c and "--n_clusters 50000 --n_clusters_ahc 7500" in c
               for c in commands if "pseudo_labeling.py" in c)
    assert f"{tmp_path / 'exp' / 'round1' / 'embeddings.pt'} {tmp_path / 'exp' / 'round2' / 'pseudo_labels.txt'}" in out
    assert "wavlm_mhfa_dlg_lc_lmft.yaml --train_list " + str(tmp_path / "exp" / "round2" / "pseudo_labels.txt") in out
    assert not (tmp_path / "exp" / ".steps").exists()


def test_main_command_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_rounds.main(["--demo", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert f"11 steps in {tmp_path / 'exps' / 'demo'} (2 round(s) + LMFT)" in out
    assert "--n_clusters 48 --n_clusters_ahc 8" in out and "configs/demo_lmft.yaml" in out


@pytest.mark.parametrize("argv,message", [
    (["--set", "max_epochs=3"], "--set max_epochs: unknown option"),
    (["--set", "save_path=x"], "--set save_path: the driver sets --save_path"),
    (["--set", "max_epoch"], "expected KEY=VALUE"),
    (["--pl_set", "n_clusters=5"], "--pl_set n_clusters: the driver sets"),
    (["--n_clusters", "40", "--n_clusters_ahc", "30", "--set", "nClasses=24"], "nClasses 24 is below the 30"),
    (["--n_clusters", "4", "--n_clusters_ahc", "8"], "--n_clusters_ahc 8 exceeds --n_clusters 4"),
])
def test_bad_options_are_named_before_any_work(tmp_path, capsys, argv, message):
    assert run_rounds.main(["--demo", "--base_path", str(tmp_path / "b"), *argv]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_missing_inputs_of_the_recipe(tmp_path, capsys):
    assert run_rounds.main(["--base_path", str(tmp_path), "--initial_embeddings", "x.pt"]) == 1
    assert "train_path 'data/voxceleb2' does not exist: give it with --set train_path=PATH" in capsys.readouterr().err
    assert run_rounds.main(["--initial_embeddings", "x.pt"]) == 1
    assert "--base_path is required" in capsys.readouterr().err


def test_failed_step_leaves_no_marker_and_reruns(tmp_path, capsys):
    runner = rounds.steps.StepRunner(tmp_path, dict(os.environ))
    flag = tmp_path / "flag"
    script = f"import os, sys; print('attempt'); sys.exit(0 if os.path.exists({str(flag)!r}) else 3)"
    step = rounds.steps.Step("demo.step", "a step", lambda: [sys.executable, "-c", script])
    with pytest.raises(rounds.steps.DriverError, match=r"exit status 3.*logs/demo.step.log"):
        runner.run(step, "[1/1]")
    assert runner.markers.finished("demo.step") is None
    flag.write_text("")
    runner.run(step, "[1/1]")
    runner.run(step, "[1/1]")
    out = capsys.readouterr().out
    assert out.splitlines().count("attempt") == 2 and "skip a step" in out
    assert (tmp_path / "logs" / "demo.step.log").read_text().splitlines().count("attempt") == 2


def test_held_out_speakers_data_needs_cluster_counts_and_gets_enough_classes(tmp_path, capsys):
    data = tmp_path / "speakers"
    for speaker in range(6):
        for utt in range(3):
            path = data / f"spk{speaker}" / f"{utt}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")  # a dry run reads no audio
    base = ["--demo", "--data", str(data), "--held_out_every", "3", "--base_path", str(tmp_path / "run"), "--dry_run"]
    assert run_rounds.main(base) == 1
    assert "--data needs --n_clusters_ahc" in capsys.readouterr().err
    assert run_rounds.main([*base, "--n_clusters_ahc", "30", "--bootstrap", "dino"]) == 0
    out = capsys.readouterr().out
    assert "--n_clusters 200 --n_clusters_ahc 30" in out and "--nClasses 30" in out
    assert "trainDINO.py --config" in out and "configs/dino_demo.yaml" in out
    assert f"--generate_embeddings --embeddings_path {tmp_path / 'run' / 'initial_embeddings.pt'}" in out


def test_a_step_whose_input_or_output_changed_is_redone(tmp_path, corpus):
    """The MFCC loop, then the DINO loop in the same folder: the pseudo-labels, training and evaluation are redone
    on the DINO embeddings (their inputs changed), and the table reports them (before: skipped as done). Then the
    MFCC loop again: its bootstrap is redone, as DINO rewrote its output."""
    base = tmp_path / "run"
    first = subprocess.run(driver(base, corpus), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(driver(base, corpus, "--bootstrap", "dino", "--dino_config", str(REPO / "configs" /
                                   "dino_tiny.yaml"), "--dino_set", "max_epoch=1"),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert re.search(r"redo round 1: pseudo-labels: its input .*initial_embeddings.pt changed", second.stdout)
    assert "redo round 1: training" in second.stdout and "redo LMFT: training" in second.stdout
    rows = table_rows((base / "rounds.md").read_text())
    assert rows[0].split("|")[2].strip() == "DINO embeddings"
    summary = json.loads((base / "round1" / "pseudo_labels.summary.json").read_text())
    assert summary["dim"] == 16  # clustered the DINO embeddings (configs/dino_tiny.yaml: nOut 16), not the MFCC's 40
    assert (base / "round1" / "pseudo_labels.txt").stat().st_mtime > (base / "initial_embeddings.pt").stat().st_mtime
    metrics = base / "round1" / "result" / "train_metrics.jsonl"
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [record["epoch"] for record in epochs] == [1]  # trained afresh, not resumed from the MFCC run

    # Back to MFCC: its bootstrap step is unchanged, but DINO rewrote the embeddings it made (before: every step
    # was skipped and the table showed the DINO figures under "MFCC-statistics embeddings").
    third = subprocess.run(driver(base, corpus), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert re.search(r"redo initial embeddings: MFCC statistics: its output .*initial_embeddings.pt was rewritten",
                     third.stdout)
    assert "redo round 1: training" in third.stdout
    assert table_rows((base / "rounds.md").read_text())[0].split("|")[2].strip() == "MFCC-statistics embeddings"
    assert json.loads((base / "round1" / "pseudo_labels.summary.json").read_text())["dim"] == 40


def test_a_second_driver_in_the_same_folder_stops_at_once(tmp_path, corpus):
    base = tmp_path / "run"
    first = subprocess.Popen(driver(base, corpus), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (base / ".lock").is_file() or not (base / ".lock").read_text().strip():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        started = time.time()
        second = subprocess.run(driver(base, corpus), capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and time.time() - started < 30
        assert f"another run_rounds.py (process {first.pid}) is running in {base}" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=90)


def test_held_out_every_zero_on_speaker_level_files_is_refused(tmp_path, capsys):
    data = tmp_path / "speakers"
    for speaker in range(3):
        (data / f"spk{speaker}").mkdir(parents=True)
        (data / f"spk{speaker}" / "0.flac").write_bytes(b"")
    assert run_rounds.main(["--demo", "--data", str(data), "--n_clusters_ahc", "3", "--base_path",
                            str(tmp_path / "run")]) == 1
    assert "holds SPEAKER/UTT files (one session per speaker): hold out whole speakers with --held_out_every N" \
        in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_compare_plans_the_baselines_the_plain_round_and_the_supervised_control(tmp_path, capsys):
    data = tmp_path / "speakers"
    for speaker in range(6):
        (data / f"spk{speaker}").mkdir(parents=True)
        (data / f"spk{speaker}" / "0.flac").write_bytes(b"")
    assert run_rounds.main(["--demo", "--data", str(data), "--held_out_every", "3", "--n_clusters_ahc", "4",
                            "--encoder", "ecapa_tdnn", "--bootstrap", "dino", "--compare", "--rounds", "2",
                            "--base_path", str(tmp_path / "run"), "--dry_run"]) == 0
    commands = [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    rounds = [c for c in commands if "trainSpeakerNet.py" in c]
    assert all("configs/ecapa_small" in c and c.split("--pretrained_model_path ")[-1].startswith(
        f"'{tmp_path}/run/dino/model/") for c in rounds)  # the last one wins: the DINO teacher
    assert sum("--trainfunc aam" in c for c in rounds) == 1  # the plain round
    assert sum(f"--train_list {tmp_path}/run/data/train_list.txt" in c for c in rounds) == 2  # supervised + LMFT
    assert sum("scripts/score_embeddings.py" in c for c in commands) == 3
    assert any("--lda_labels" in c and "round1/pseudo_labels.txt" in c for c in commands)
