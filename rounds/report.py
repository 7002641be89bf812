"""The round table: what each stage's records say (pseudo-label summary, last training epoch, newest evaluation)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clustering.pseudo_labels import summary_path
from rounds.plan import Plan
from training.run import METRICS_FILE
from utils.atomic import atomic_write_text
from utils.records import read_json, read_records


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


def newest(paths: Sequence[Path]) -> Optional[Path]:
    """The most recently written of ``paths``, or None."""
    return max(paths, key=lambda path: path.stat().st_mtime, default=None)


def stage_result(stage: str, pseudo_labels: Path, described: str, save_path: Path) -> StageResult:
    """What one stage's records say: the pseudo-labels' summary, the last training epoch, the newest evaluation."""
    result = StageResult(stage, described)
    summary = Path(summary_path(pseudo_labels))
    if summary.is_file():
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


def collect_results(plan: Plan, initial_description: str) -> List[StageResult]:
    results = []
    for k in range(1, plan.rounds + 1):
        source = initial_description if k == 1 else f"round {k - 1} model"
        results.append(stage_result(f"round {k}", plan.pseudo_labels(k), f"{source} embeddings", plan.round_dir(k)))
    results.append(stage_result("LMFT", plan.pseudo_labels(plan.rounds), f"round {plan.rounds} pseudo-labels",
                                plan.lmft_dir))
    return results


def format_table(results: Sequence[StageResult]) -> str:
    p_targets = sorted({p for r in results for p in r.min_dcf}, key=float, reverse=True)

    def number(value: Optional[float], digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    header = ["stage", "pseudo-labels from", "NMI", "purity", "clusters", "train acc (%)", "EER (%)",
              *[f"minDCF ({p})" for p in p_targets]]
    rows = [[r.stage, r.pseudo_labels, number(r.nmi, 3), number(r.purity, 3),
             "–" if r.clusters is None else str(r.clusters), number(r.accuracy, 1), number(r.eer, 2),
             *[number(r.min_dcf.get(p), 3) for p in p_targets]] for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(plan: Plan, initial_description: str, trial_list: str) -> str:
    """The round table with its context; written to BASE/rounds.md."""
    results = collect_results(plan, initial_description)
    det = next((r.det_plot for r in reversed(results) if r.det_plot), None)
    text = "\n".join([
        f"# Rounds in {plan.base}",
        "",
        format_table(results),
        "",
        f"NMI and purity: pseudo-labels against the true speaker (first part of each file key); "
        f"k-means {plan.n_clusters}" + (f", Ward AHC {plan.n_clusters_ahc}" if plan.n_clusters_ahc else "") + ".",
        "Train acc: last epoch's top-1 accuracy on the pseudo-labels. EER / minDCF: trial list "
        f"{trial_list} (chance: EER 50 %, minDCF 1).",
        f"DET plot: {det}" if det else "DET plot: –",
        "",
    ])
    atomic_write_text(plan.base / "rounds.md", text)
    return text
