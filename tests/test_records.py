"""Run records (JSON lines, JSON results, step markers) and progress lines for log files."""
import io
import json
import math

import pytest

from utils.errors import InputError
from utils.progress import LineProgress
from utils.records import EpochLog, read_json, read_records, write_json
from utils.steps import StepMarkers


def test_records_round_trip_and_non_finite_values_become_null(tmp_path):
    path = tmp_path / "result" / "metrics.jsonl"
    log = EpochLog(path)
    log.log({"epoch": 1, "loss": 2.5, "lr": (1e-3, 2e-5)})
    log.log({"epoch": 2, "loss": math.nan, "gate_threshold": math.inf})
    assert read_records(path) == [{"epoch": 1, "loss": 2.5, "lr": [1e-3, 2e-5]},
                                  {"epoch": 2, "loss": None, "gate_threshold": None}]
    write_json(tmp_path / "eval.json", {"eer": 1.25, "min_dcf": {0.05: 0.1}})
    assert read_json(tmp_path / "eval.json") == {"eer": 1.25, "min_dcf": {"0.05": 0.1}}


def test_unreadable_records_name_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:2: not a JSON record"):
        read_records(path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_epoch_log_mirrors_numbers_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = EpochLog(tmp_path / "metrics.jsonl", str(tmp_path / "tb"))
    for epoch, loss in ((1, 3.0), (2, 2.0)):
        log.log({"epoch": epoch, "loss": loss, "accuracy": 10.0 * epoch, "note": "text is not a scalar"})
    log.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/accuracy", "train/loss"]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 3.0), (2, 2.0)]
    assert len(read_records(tmp_path / "metrics.jsonl")) == 2


def test_step_markers_record_only_finished_steps(tmp_path):
    markers = StepMarkers(tmp_path / ".steps")
    assert markers.finished("a") is None
    with pytest.raises(RuntimeError):
        markers.run("a", lambda: (_ for _ in ()).throw(RuntimeError("step failed")))
    assert markers.finished("a") is None and not (tmp_path / ".steps" / "a.done").exists()
    record = markers.run("a", lambda: {"files": 3}, command=["x", "y"])
    assert markers.finished("a") == record
    assert record["files"] == 3 and record["command"] == ["x", "y"] and record["seconds"] >= 0
    assert json.loads((tmp_path / ".steps" / "a.done").read_text())["finished"] == record["finished"]


def test_line_progress_writes_whole_lines_at_intervals_and_at_the_end(monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 40.0, 50.0, 70.0])
    monkeypatch.setattr("utils.progress.time.perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = LineProgress(total=4, desc="Epoch 1", unit="step", interval=30.0, stream=stream)
    for _ in range(4):
        progress.set_postfix(loss="1.5")
        progress.update()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["Epoch 1: 2/4 step (50%) in 31 s, 0.1 step/s, loss=1.5",
                     "Epoch 1: 4/4 step (100%) in 70 s, 0.1 step/s, loss=1.5"]
    assert "\r" not in stream.getvalue()
