"""What the driver runs: the rounds' steps, resolved from the command line into a :class:`Plan`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from rounds.steps import Step
from utils import checkpoints
from utils.options import EVAL_OPTIONS, LEGACY_OPTIONS, TRAIN_OPTIONS, Option

REPO = Path(__file__).resolve().parent.parent
"""The project's root, where the entry points live."""


def option_pairs(options: Sequence[str]) -> List[Tuple[str, str]]:
    """``(KEY, VALUE)`` of each ``--KEY VALUE`` in ``options`` (the driver builds them in pairs)."""
    return [(options[i][2:], options[i + 1]) for i in range(0, len(options) - 1, 2)]


def options_of(options: Sequence[str], command_options: Sequence[Option]) -> List[str]:
    """The ``--KEY VALUE`` pairs of ``options`` that a command with ``command_options`` reads."""
    known = {option.name for option in command_options}
    return [item for key, value in option_pairs(options) if key in known for item in (f"--{key}", value)]


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

    def train_command(self, config: Path, train_list: Path, save_path: Path,
                      initial_model: Optional[str] = None) -> List[str]:
        initial = ["--initial_model", initial_model] if initial_model else []
        return [*self.processes("trainSpeakerNet.py"), "--config", str(config), "--train_list", str(train_list),
                "--save_path", str(save_path), *initial, *options_of(self.options, [*TRAIN_OPTIONS, *LEGACY_OPTIONS])]

    def eval_command(self, config: Path, save_path: Path) -> List[str]:
        return [*self.processes("trainSpeakerNet_Eval.py"), "--config", str(config), "--eval", "--save_path",
                str(save_path), *options_of(self.options, [*EVAL_OPTIONS, *LEGACY_OPTIONS])]

    def embed_command(self, k: int) -> List[str]:
        return [*self.processes("trainSpeakerNet_Eval.py"), "--config", str(self.round_config),
                "--generate_embeddings", "--train_list", str(self.pseudo_labels(k)), "--save_path",
                str(self.round_dir(k)), "--embeddings_path", str(self.embeddings(k)),
                *options_of(self.options, [*EVAL_OPTIONS, *LEGACY_OPTIONS])]

    def pseudo_label_command(self, k: int) -> List[str]:
        return [*self.script("pseudo_labeling.py"), str(self.embeddings(k - 1)), str(self.pseudo_labels(k)),
                "--n_clusters", str(self.n_clusters), "--n_clusters_ahc", str(self.n_clusters_ahc), *self.pl_options]

    def last_round_checkpoint(self) -> str:
        newest = checkpoints.newest_checkpoint(str(self.round_dir(self.rounds) / "model"))
        return newest[1] if newest else f"<newest checkpoint of {self.round_dir(self.rounds) / 'model'}>"

    def steps(self) -> List[Step]:
        steps: List[Step] = []
        for k in range(1, self.rounds + 1):
            steps += [
                Step(f"round{k}.pseudo_labels", f"round {k}: pseudo-labels", lambda k=k: self.pseudo_label_command(k)),
                Step(f"round{k}.train", f"round {k}: fine-tuning",
                     lambda k=k: self.train_command(self.round_config, self.pseudo_labels(k), self.round_dir(k))),
                Step(f"round{k}.eval", f"round {k}: evaluation",
                     lambda k=k: self.eval_command(self.round_config, self.round_dir(k))),
            ]
            if k < self.rounds:
                steps.append(Step(f"round{k}.embeddings", f"round {k}: embeddings for round {k + 1}",
                                  lambda k=k: self.embed_command(k)))
        steps += [
            Step("lmft.train", "LMFT: large-margin fine-tuning", lambda: self.train_command(
                self.lmft_config, self.pseudo_labels(self.rounds), self.lmft_dir, self.last_round_checkpoint())),
            Step("lmft.eval", "LMFT: evaluation", lambda: self.eval_command(self.lmft_config, self.lmft_dir)),
        ]
        return steps
