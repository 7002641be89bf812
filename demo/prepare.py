"""Everything the demo trains and tests on, written into one work folder.

``demo_paths(work, corpus)`` names the files; ``prepare_demo(paths)`` writes them: the corpus (FSDD
joined into ``SPEAKER/SESSION/UTT.wav`` unless another corpus folder is given), the training list of
the training sessions, the trial list of the held-out sessions, MUSAN-like and RIR folders, and a
random WavLM checkpoint in Microsoft's format standing in for WavLM Base+ (random transformer, a
hand-made filterbank as its frozen convolutions, see ``demo.standin``: not a pre-trained model).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from demo.corpus import build_fsdd_corpus, make_trials, scan_corpus, split_by_session, write_train_list, write_trials
from demo.noise import make_musan_like, make_rirs
from demo.standin import save_standin_checkpoint


@dataclass(frozen=True)
class DemoPaths:
    corpus: Path
    from_fsdd: bool
    train_list: Path
    trials: Path
    musan: Path
    rirs: Path
    wavlm: Path

    def options(self) -> List[str]:
        """The trainSpeakerNet(_Eval).py options that point at these files."""
        return ["--train_path", str(self.corpus), "--test_path", str(self.corpus), "--test_list", str(self.trials),
                "--musan_path", str(self.musan), "--rir_path", str(self.rirs),
                "--pretrained_model_path", str(self.wavlm)]


def demo_paths(work: Path, corpus: Optional[Path] = None) -> DemoPaths:
    """Where the demo's inputs live under ``work``; ``corpus`` replaces the FSDD corpus when given."""
    return DemoPaths(corpus=corpus if corpus is not None else work / "corpus", from_fsdd=corpus is None,
                     train_list=work / "train_list.txt", trials=work / "trials.txt", musan=work / "musan",
                     rirs=work / "rirs", wavlm=work / "wavlm_random.pt")


def prepare_demo(paths: DemoPaths, max_trials: int = 20000, seed: int = 0) -> Dict[str, int]:
    """Write the demo's inputs; returns counts for the log."""
    if paths.from_fsdd:
        build_fsdd_corpus(paths.corpus, seed=seed)
    train, test = split_by_session(scan_corpus(paths.corpus))
    write_train_list(train, paths.train_list)
    trials = make_trials(test, max_trials=max_trials, seed=seed)
    write_trials(trials, paths.trials)
    make_musan_like(paths.musan, seed=seed)
    make_rirs(paths.rirs, seed=seed)
    save_standin_checkpoint(paths.wavlm, seed=seed)
    counts = {"speakers": len({p.split("/")[0] for p in train + test}), "train_files": len(train),
              "test_files": len(test), "trials": len(trials), "target_trials": sum(t[0] for t in trials)}
    print(f"Demo corpus {paths.corpus}: {counts['speakers']} speakers, {counts['train_files']} training and "
          f"{counts['test_files']} test utterances, {counts['trials']} trials ({counts['target_trials']} "
          "same-speaker)", flush=True)
    return counts
