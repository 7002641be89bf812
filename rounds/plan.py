"""What the driver runs: the rounds' steps, resolved from the command line into a :class:`Plan`.

For round k = 1..R, in ``BASE/round<k>``: pseudo-labels from the previous embeddings (the initial ones
for round 1), fine-tuning from the encoder's initial weights, evaluation and, before the next round, new
embeddings of every training file. Then LMFT in ``BASE/lmft`` from the last round's newest checkpoint.
With a :class:`Comparison`, the stages of the paper's comparison come after: the bootstrap embeddings
and an LDA fitted on round 1's pseudo-labels scored on the held-out trials (``BASE/baselines``), one
plain round without the loss gate and label correction (``BASE/plain``), and the supervised control,
the same round and LMFT on the true labels (``BASE/supervised``, ``BASE/supervised_lmft``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from rounds.steps import Step
from utils import checkpoints
from utils.options import EVAL_OPTIONS, LEGACY_OPTIONS, TRAIN_OPTIONS, Option

REPO = Path(__file__).resolve().parent.parent
"""The project's root, where the entry points live."""

LDA_DIM = 64
"""Output size of the comparison's LDA baseline (as in the issue that asked for it; at most labels - 1)."""


def option_pairs(options: Sequence[str]) -> List[Tuple[str, str]]:
    """``(KEY, VALUE)`` of each ``--KEY VALUE`` in ``options`` (the driver builds them in pairs)."""
    return [(options[i][2:], options[i + 1]) for i in range(0, len(options) - 1, 2)]


def options_of(options: Sequence[str], command_options: Sequence[Option]) -> List[str]:
    """The ``--KEY VALUE`` pairs of ``options`` that a command with ``command_options`` reads."""
    known = {option.name for option in command_options}
    return [item for key, value in option_pairs(options) if key in known for item in (f"--{key}", value)]


def newest_checkpoint(folder: Path) -> Path:
    """The newest checkpoint of ``folder/model`` (a placeholder path while there is none, as in a dry run)."""
    newest = checkpoints.newest_checkpoint(str(folder / "model"))
    return Path(newest[1]) if newest else folder / "model" / "<newest checkpoint>"


def training_outputs(save_path: Path) -> List[Path]:
    """What a training run writes into ``save_path``: removed when it is redone on changed inputs."""
    return [save_path / name for name in ("model", "loss_vals", "result", "tensorboard", "config.yaml")]


@dataclass
class Comparison:
    """The inputs of the comparison stages: the training files with their true speakers (``LABEL PATH``),
    the held-out files (``LABEL PATH``, the trial list's files) and the bootstrap's own embeddings."""

    labelled_list: Path
    held_out_list: Path
    train_path: str
    bootstrap: str
    dino_command: Optional[List[str]] = None
    """trainDINO.py's command (training options), when the bootstrap is DINO."""


@dataclass
class Plan:
    """What the driver runs, resolved from the command line."""

    base: Path
    rounds: int
    round_config: Path
    lmft_config: Path
    initial_embeddings: Path
    n_clusters: int
    n_clusters_ahc: int
    nproc_per_node: int
    python: str
    options: List[str]
    """``--KEY VALUE`` for the training / evaluation calls (demo paths, then the user's --set); each call gets
    those of its own options."""
    pl_options: List[str] = field(default_factory=list)
    initial_weights: Optional[Callable[[], Path]] = None
    """The file the encoder starts from, known only once an earlier step made it (the DINO teacher of the
    bootstrap, for ECAPA-TDNN); None: the configs' ``pretrained_model_path``."""
    comparison: Optional[Comparison] = None

    def round_dir(self, k: int) -> Path:
        return self.base / f"round{k}"

    @property
    def lmft_dir(self) -> Path:
        return self.base / "lmft"

    def pseudo_labels(self, k: int) -> Path:
        return self.round_dir(k) / "pseudo_labels.txt"

    def embeddings(self, k: int) -> Path:
        """Embeddings clustered in round k + 1 (round 0: the initial ones)."""
        return self.initial_embeddings if k == 0 else self.round_dir(k) / "embeddings.pt"

    def script(self, name: str) -> List[str]:
        return [self.python, str(REPO / name)]

    def processes(self, name: str) -> List[str]:
        """``name`` in ``nproc_per_node`` processes through torchrun (with --distributed), or in this one."""
        if self.nproc_per_node == 1:
            return self.script(name)
        return [self.python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc_per_node}",
                str(REPO / name), "--distributed", "true"]

    def train_command(self, config: Path, train_list: Path, save_path: Path, initial_model: Optional[Path] = None,
                      *extra: str) -> List[str]:
        initial = ["--initial_model", str(initial_model)] if initial_model else []
        weights = ["--pretrained_model_path", str(self.initial_weights())] if self.initial_weights else []
        return [*self.processes("trainSpeakerNet.py"), "--config", str(config), "--train_list", str(train_list),
                "--save_path", str(save_path), *initial, *options_of(self.options, [*TRAIN_OPTIONS, *LEGACY_OPTIONS]),
                *weights, *extra]  # after the options: the demo's paths name its WavLM stand-in

    def eval_command(self, config: Path, save_path: Path) -> List[str]:
        return [*self.processes("trainSpeakerNet_Eval.py"), "--config", str(config), "--eval", "--save_path",
                str(save_path), *options_of(self.options, [*EVAL_OPTIONS, *LEGACY_OPTIONS])]

    def embed_command(self, k: int) -> List[str]:
        return [*self.processes("trainSpeakerNet_Eval.py"), "--config", str(self.round_config),
                "--generate_embeddings", "--train_list", str(self.pseudo_labels(k)), "--save_path",
                str(self.round_dir(k)), "--embeddings_path", str(self.embeddings(k)),
                *options_of(self.options, [*EVAL_OPTIONS, *LEGACY_OPTIONS])]

    def pseudo_label_command(self, embeddings: Path, output: Path) -> List[str]:
        return [*self.script("pseudo_labeling.py"), str(embeddings), str(output), "--n_clusters",
                str(self.n_clusters), "--n_clusters_ahc", str(self.n_clusters_ahc), *self.pl_options]

    def training_steps(self, name: str, title: str, config: Path, train_list: Path, save_path: Path,
                       initial_model: Optional[Callable[[], Path]] = None, *extra: str) -> List[Step]:
        """Train on ``train_list`` into ``save_path`` (from ``initial_model()`` when given), then evaluate."""
        start = initial_model or (lambda: None)

        def weights() -> List[Path]:
            return [p for p in (start(), self.initial_weights() if self.initial_weights else None) if p]

        return [
            Step(f"{name}.train", f"{title}: training",
                 lambda: self.train_command(config, train_list, save_path, start(), *extra),
                 inputs=lambda: [train_list, *weights()], outputs=training_outputs(save_path)),
            Step(f"{name}.eval", f"{title}: evaluation", lambda: self.eval_command(config, save_path),
                 inputs=lambda: [newest_checkpoint(save_path)]),
        ]

    def steps(self) -> List[Step]:
        steps: List[Step] = []
        for k in range(1, self.rounds + 1):
            steps.append(Step(f"round{k}.pseudo_labels", f"round {k}: pseudo-labels",
                              lambda k=k: self.pseudo_label_command(self.embeddings(k - 1), self.pseudo_labels(k)),
                              inputs=lambda k=k: [self.embeddings(k - 1)], outputs=[self.pseudo_labels(k)]))
            steps += self.training_steps(f"round{k}", f"round {k}", self.round_config, self.pseudo_labels(k),
                                         self.round_dir(k))
            if k < self.rounds:
                steps.append(Step(f"round{k}.embeddings", f"round {k}: embeddings for round {k + 1}",
                                  lambda k=k: self.embed_command(k), inputs=lambda k=k: [
                                      newest_checkpoint(self.round_dir(k)), self.pseudo_labels(k)],
                                  outputs=[self.embeddings(k)]))
        steps += self.training_steps("lmft", "LMFT", self.lmft_config, self.pseudo_labels(self.rounds),
                                     self.lmft_dir, lambda: newest_checkpoint(self.round_dir(self.rounds)))
        if self.comparison is not None:
            steps += self.comparison_steps(self.comparison)
        return steps

    # --- the paper's comparison --------------------------------------------------------------------

    @property
    def baselines_dir(self) -> Path:
        return self.base / "baselines"

    def mfcc_pseudo_labels(self, comparison: Comparison) -> Path:
        """The pseudo-labels of the MFCC statistics: round 1's with the MFCC bootstrap, else the baseline's own."""
        if comparison.bootstrap == "mfcc":
            return self.pseudo_labels(1)
        return self.baselines_dir / "mfcc_pseudo_labels.txt"

    def score_command(self, embeddings: Path, save_path: Path, name: str, *extra: str) -> List[str]:
        trial_list = dict(option_pairs(self.options))["test_list"]
        return [*self.script("scripts/score_embeddings.py"), str(embeddings), "--trials", trial_list,
                "--save_path", str(save_path), "--name", name, *extra]

    def comparison_steps(self, comparison: Comparison) -> List[Step]:
        """Baselines scored on the held-out trials, one plain round, and the supervised control."""
        baselines = self.baselines_dir
        mfcc_train = self.initial_embeddings if comparison.bootstrap == "mfcc" else baselines / "mfcc_train.pt"
        mfcc_labels = self.mfcc_pseudo_labels(comparison)

        def mfcc(source: Path, output: Path) -> List[str]:
            return [*self.script("scripts/bootstrap_embeddings.py"), "--train_list", str(source), "--train_path",
                    comparison.train_path, "--embeddings_path", str(output)]

        steps: List[Step] = []
        if comparison.bootstrap != "mfcc":
            steps += [
                Step("baselines.mfcc_train", "baseline: MFCC statistics of the training files",
                     lambda: mfcc(comparison.labelled_list, mfcc_train), inputs=lambda: [comparison.labelled_list],
                     outputs=[mfcc_train]),
                Step("baselines.mfcc_pseudo_labels", "baseline: pseudo-labels of the MFCC statistics",
                     lambda: self.pseudo_label_command(mfcc_train, mfcc_labels), inputs=lambda: [mfcc_train],
                     outputs=[mfcc_labels]),
            ]
        held_out = {name: baselines / f"{name}_held_out.pt" for name in ("mfcc", comparison.bootstrap)}
        steps.append(Step("baselines.mfcc_held_out", "baseline: MFCC statistics of the held-out files",
                          lambda: mfcc(comparison.held_out_list, held_out["mfcc"]),
                          inputs=lambda: [comparison.held_out_list], outputs=[held_out["mfcc"]]))
        if comparison.dino_command is not None:
            steps.append(Step("baselines.dino_held_out", "baseline: DINO embeddings of the held-out files",
                              lambda: [*comparison.dino_command, "--generate_embeddings", "--train_list",
                                       str(comparison.held_out_list), "--embeddings_path", str(held_out["dino"])],
                              inputs=lambda: [comparison.held_out_list, self.initial_embeddings],
                              outputs=[held_out["dino"]]))
        lda_inputs = [self.initial_embeddings, self.pseudo_labels(1)]
        lda = ("--lda_embeddings", str(lda_inputs[0]), "--lda_labels", str(lda_inputs[1]),
               "--lda_dim", str(min(LDA_DIM, max(1, self.n_clusters_ahc - 1))))
        scored = {"mfcc": (held_out["mfcc"], (), []),  # name: (held-out embeddings, options, other inputs)
                  comparison.bootstrap: (held_out[comparison.bootstrap], (), []),
                  f"{comparison.bootstrap}_lda": (held_out[comparison.bootstrap], lda, lda_inputs)}
        for name, (embeddings, extra, inputs) in scored.items():
            steps.append(Step(f"baselines.{name}.eval", f"baseline: {name} scored on the held-out trials",
                              lambda name=name, embeddings=embeddings, extra=extra: self.score_command(
                                  embeddings, baselines / name, name, *extra),
                              inputs=lambda embeddings=embeddings, inputs=inputs: [embeddings, *inputs],
                              outputs=[baselines / name]))
        steps += self.training_steps("plain", "plain round", self.round_config, self.pseudo_labels(1),
                                     self.base / "plain", None, "--trainfunc", "aam")
        steps += self.training_steps("supervised", "supervised control", self.round_config, comparison.labelled_list,
                                     self.base / "supervised")
        steps += self.training_steps("supervised_lmft", "supervised control: LMFT", self.lmft_config,
                                     comparison.labelled_list, self.base / "supervised_lmft",
                                     lambda: newest_checkpoint(self.base / "supervised"))
        return steps
