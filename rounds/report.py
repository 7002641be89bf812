"""The round table: what each stage's records say (pseudo-label summary, last training epoch, newest evaluation,
and with the comparison the wall time of its steps)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clustering.pseudo_labels import summary_path
from rounds.plan import Plan
from training.run import METRICS_FILE
from utils.atomic import atomic_write_text
from utils.records import read_json, read_records
from utils.steps import StepMarkers


@dataclass
class StageResult:
    stage: str
    pseudo_labels: str
    nmi: Optional[float] = None
    purity: Optional[float] = None
    clusters: Optional[int] = None
    accuracy: Optional[float] = None
    eer: Optional[float] = None
    min_dcf: Dict[str, float] = field(default_factory=dict)
    det_plot: Optional[str] = None
    seconds: Optional[float] = None


def newest(paths: Sequence[Path]) -> Optional[Path]:
    """The most recently written of ``paths``, or None."""
    return max(paths, key=lambda path: path.stat().st_mtime, default=None)


def stage_result(stage: str, pseudo_labels: Optional[Path], described: str, save_path: Path) -> StageResult:
    """What one stage's records say: the pseudo-labels' summary, the last training epoch, the newest evaluation."""
    result = StageResult(stage, described)
    summary = Path(summary_path(pseudo_labels)) if pseudo_labels is not None else None
    if summary is not None and summary.is_file():
        record = read_json(summary)
        result.nmi, result.purity, result.clusters = record["nmi"], record["purity"], record["n_clusters_nonempty"]
    epochs = save_path / "result" / METRICS_FILE
    if epochs.is_file():
        records = read_records(epochs)
        result.accuracy = records[-1]["accuracy"] if records else None
    evaluation = newest(list((save_path / "result").glob("eval_*.json")))
    if evaluation is not None:
        record = read_json(evaluation)
        result.eer, result.min_dcf, result.det_plot = record["eer"], record["min_dcf"], record["det_plot"]
    return result


@dataclass(frozen=True)
class Stage:
    """A row of the table: its records' places and the steps whose time it sums."""

    name: str
    source: str
    pseudo_labels: Optional[Path]
    save_path: Path
    steps: Sequence[str]


def stages(plan: Plan, initial_description: str) -> List[Stage]:
    """The rows: (with the comparison, the baselines and the plain round,) the rounds, LMFT (and the control)."""
    rows: List[Stage] = []
    comparison = plan.comparison
    if comparison is not None:
        boot = comparison.bootstrap
        rows.append(Stage("MFCC statistics", "MFCC statistics", plan.mfcc_pseudo_labels(comparison),
                          plan.baselines_dir / "mfcc",
                          ["bootstrap.mfcc", "baselines.mfcc_train", "baselines.mfcc_pseudo_labels",
                           "baselines.mfcc_held_out", "baselines.mfcc.eval"]))
        if boot != "mfcc":
            rows.append(Stage(initial_description, f"{initial_description} embeddings", plan.pseudo_labels(1),
                              plan.baselines_dir / boot, ["bootstrap.dino_train", "bootstrap.dino_embed",
                                                          "baselines.dino_held_out", f"baselines.{boot}.eval"]))
        rows.append(Stage(f"{initial_description} + LDA", "LDA on round 1 pseudo-labels", None,
                          plan.baselines_dir / f"{boot}_lda", [f"baselines.{boot}_lda.eval"]))
        rows.append(Stage("plain round", f"{initial_description} embeddings", plan.pseudo_labels(1),
                          plan.base / "plain", ["plain.train", "plain.eval"]))
    for k in range(1, plan.rounds + 1):
        source = initial_description if k == 1 else f"round {k - 1} model"
        rows.append(Stage(f"round {k}", f"{source} embeddings", plan.pseudo_labels(k), plan.round_dir(k),
                          [f"round{k}.{step}" for step in ("pseudo_labels", "train", "eval", "embeddings")]))
    rows.append(Stage("LMFT", f"round {plan.rounds} pseudo-labels", plan.pseudo_labels(plan.rounds), plan.lmft_dir,
                      ["lmft.train", "lmft.eval"]))
    if comparison is not None:
        rows.append(Stage("supervised", "true speakers", None, plan.base / "supervised",
                          ["supervised.train", "supervised.eval"]))
        rows.append(Stage("supervised LMFT", "true speakers", None, plan.base / "supervised_lmft",
                          ["supervised_lmft.train", "supervised_lmft.eval"]))
    return rows


def collect_results(plan: Plan, initial_description: str) -> List[StageResult]:
    markers = StepMarkers(plan.base / ".steps")
    results = []
    for stage in stages(plan, initial_description):
        result = stage_result(stage.name, stage.pseudo_labels, stage.source, stage.save_path)
        if plan.comparison is not None:
            done = [markers.finished(step) for step in stage.steps]
            result.seconds = sum(record["seconds"] for record in done if record) if any(done) else None
        results.append(result)
    return results


def format_table(results: Sequence[StageResult]) -> str:
    p_targets = sorted({p for r in results for p in r.min_dcf}, key=float, reverse=True)

    def number(value: Optional[float], digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    timed = any(r.seconds is not None for r in results)
    header = ["stage", "pseudo-labels from", "NMI", "purity", "clusters", "train acc (%)", "EER (%)",
              *[f"minDCF ({p})" for p in p_targets], *(["time (min)"] if timed else [])]
    rows = [[r.stage, r.pseudo_labels, number(r.nmi, 3), number(r.purity, 3),
             "–" if r.clusters is None else str(r.clusters), number(r.accuracy, 1), number(r.eer, 2),
             *[number(r.min_dcf.get(p), 3) for p in p_targets],
             *([number(None if r.seconds is None else r.seconds / 60, 1)] if timed else [])] for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(plan: Plan, initial_description: str, trial_list: str) -> str:
    """The round table with its context; written to BASE/rounds.md."""
    results = collect_results(plan, initial_description)
    det = next((r.det_plot for r in reversed(results) if r.det_plot), None)
    by_stage = {r.stage: r for r in results}
    gap = []
    if plan.comparison is not None and by_stage["LMFT"].eer and by_stage["supervised LMFT"].eer:
        gap = [f"Gap to the supervised control: LMFT EER / supervised LMFT EER = "
               f"{by_stage['LMFT'].eer / by_stage['supervised LMFT'].eer:.2f}x (the paper's: 0.99 / 0.94 = 1.05x).",
               "Time: wall time of the stage's steps on this machine."]
    text = "\n".join([
        f"# Rounds in {plan.base}",
        "",
        format_table(results),
        "",
        f"NMI and purity: pseudo-labels against the true speaker (first part of each file key); "
        f"k-means {plan.n_clusters}" + (f", Ward AHC {plan.n_clusters_ahc}" if plan.n_clusters_ahc else "") + ".",
        "Train acc: last epoch's top-1 accuracy on the pseudo-labels. EER / minDCF: trial list "
        f"{trial_list} (chance: EER 50 %, minDCF 1).",
        *gap,
        f"DET plot: {det}" if det else "DET plot: –",
        "",
    ])
    atomic_write_text(plan.base / "rounds.md", text)
    return text
