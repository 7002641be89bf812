"""bench/gpu_check.py on the CPU with --tiny: every part reports its numbers in report.json and report.md;
a part past its limit is reported as timed out and the later parts still run; the max-batch search and
the shares of the budget."""
import json
import os
import re
import subprocess
import sys

import pytest

from bench.gpu_check import PARTS, STOP_GRACE_S, part_limit, search_max_batch
from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "bench", "gpu_check.py")


def run_check(out, *options):
    command = [sys.executable, SCRIPT, "--device", "cpu", "--tiny", "--out", str(out), *options]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # several processes on a few shared cores: no oversubscription
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    with open(out / "report.json", encoding="utf-8") as handle:
        report = json.load(handle)
    return result, report, (out / "report.md").read_text(encoding="utf-8")


def numbers(value):
    """Every int or float (bools aside) inside a JSON value."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def sections(markdown):
    """report.md's part sections by title."""
    return {chunk.splitlines()[0]: chunk for chunk in markdown.split("\n## ")[1:]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp("gpu_check"), "--budget_s", "300")


def test_every_part_reports_numbers_in_json_and_markdown(full_run):
    result, report, markdown = full_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(report["parts"]) == [part.name for part in PARTS]
    by_title = sections(markdown)
    for name, entry in report["parts"].items():
        assert entry["status"] == "ok", (name, entry["error"])
        assert 0 <= entry["seconds"] <= entry["limit_s"], name
        assert numbers(entry["results"]), name
        assert f"| {entry['title']} | ok |" in markdown
        table_rows = [line for line in by_title[entry["title"]].splitlines() if line.startswith("| ")]
        assert any(re.search(r"\| -?\d", line) for line in table_rows), name


def test_each_part_measures_what_it_claims(full_run):
    _, report, _ = full_run
    parts = {name: entry["results"] for name, entry in report["parts"].items()}
    assert parts["environment"]["device"] == "cpu" and parts["environment"]["cpu_count"] >= 1

    steps = parts["train_step"]["steps"]
    assert [(row["precision"], row["phase"]) for row in steps] == [
        ("fp32", "before LC"), ("fp32", "with LC"), ("bf16", "before LC"), ("bf16", "with LC")]
    assert all(row["losses_agree"] and row["ours_utt_per_s"] > 0 and row["ratio"] > 0 for row in steps)
    assert all(row["max_abs_dloss"] < 1e-4 for row in steps if row["precision"] == "fp32")

    assert [(row["config"], row["precision"]) for row in parts["max_batch"]["max_batch"]] == [
        ("round", "fp32"), ("round", "bf16"), ("LMFT", "fp32"), ("LMFT", "bf16")]
    assert all(row["max_batch"] == 8 and row["first_failure"] is None for row in parts["max_batch"]["max_batch"])
    assert [row["batch"] for row in parts["max_batch"]["probes"]] == [2, 4, 8] * 4  # doubled up to the cap

    torchrun = parts["torchrun"]
    assert torchrun["backend"] == "gloo" and torchrun["resumed"] and torchrun["weights_agree"]
    assert torchrun["max_abs_dweight"] < 1e-6 < torchrun["max_abs_epoch2_change"]

    augment = parts["augment_on_device"]
    assert augment["same_clean_crops"] and augment["same_augmentation"] and augment["augmented_fraction"] > 0.3
    assert augment["worker_path_crops_per_s"] > 0 and augment["device_path_crops_per_s"] > 0

    pseudo = parts["pseudo_labels"]
    assert (pseudo["points"], pseudo["clusters"], pseudo["clusters_ahc"]) == (20_000, 500, 50)
    assert pseudo["nmi"] > 0.9 and pseudo["within_goal"]

    embedding = parts["embedding"]
    assert embedding["max_rel_difference"] < 1e-4 and embedding["batched_forwards"] < embedding["single_forwards"]
    assert embedding["batched_files_per_s"] > 0 and embedding["single_files_per_s"] > 0


def test_a_part_past_its_limit_is_timed_out_and_the_later_parts_still_run(tmp_path):
    result, report, markdown = run_check(tmp_path, "--budget_s", "120", "--parts", "environment", "train_step",
                                         "pseudo_labels", "--part_budget_s", "train_step=0.3")
    assert result.returncode == 1, result.stdout + result.stderr
    parts = report["parts"]
    assert list(parts) == ["environment", "train_step", "pseudo_labels"]
    assert parts["train_step"]["status"] == "timed out" and parts["train_step"]["limit_s"] == 0.3
    assert parts["train_step"]["seconds"] < 0.3 + 2 * STOP_GRACE_S
    assert parts["environment"]["status"] == parts["pseudo_labels"]["status"] == "ok"
    assert parts["pseudo_labels"]["results"]["nmi"] > 0.9
    assert f"| {parts['train_step']['title']} | timed out |" in markdown and "**timed out**" in markdown


@pytest.mark.parametrize("threshold,start,cap,resolution,largest,failure,probed", [
    (37, 2, 4096, 1000, 37, 38, [2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]),  # double, then bisect to 1
    (37, 2, 4096, 16, 36, 38, [2, 4, 8, 16, 32, 64, 48, 40, 36, 38]),  # bisect to 1/16 of the batch
    (100, 2, 8, 16, 8, None, [2, 4, 8]),  # the cap fits
    (5, 120, 4096, 16, 5, 6, [120, 60, 30, 15, 7, 3, 5, 6]),  # the start does not fit
    (0, 2, 8, 16, 0, 1, [2, 1]),  # nothing fits
])
def test_max_batch_search(threshold, start, cap, resolution, largest, failure, probed):
    search = search_max_batch(lambda batch: batch <= threshold, start, cap, resolution)
    assert (search.largest, search.first_failure) == (largest, failure)
    assert search.probes == [(batch, batch <= threshold) for batch in probed]


def test_part_limits_share_the_budget_left():
    total = sum(part.gpu_estimate_s for part in PARTS)
    assert part_limit({}, PARTS, 440.0) == pytest.approx(440.0 * PARTS[0].gpu_estimate_s / total)
    fixed = {PARTS[1].name: 40.0}
    assert part_limit(fixed, PARTS, 440.0) == pytest.approx(
        400.0 * PARTS[0].gpu_estimate_s / (total - PARTS[1].gpu_estimate_s))
    assert part_limit(fixed, PARTS[1:], 10.0) == 40.0
    assert part_limit({}, PARTS[-1:], 25.0) == pytest.approx(25.0)
    assert part_limit({}, PARTS, -5.0) == 0.0
