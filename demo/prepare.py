"""Everything the demo trains and tests on, written into one work folder.

``demo_paths(work, data, held_out_every)`` names the files; ``prepare_demo(paths)`` writes them: the
corpus (FSDD joined into ``SPEAKER/SESSION/UTT.wav``, or a ``--data`` folder, linked into that layout
when it is ``SPEAKER/UTT``), the training list and the trial list (the last session of every speaker
held out, or with ``held_out_every`` every N-th speaker entirely), MUSAN-like and RIR folders, and a
random WavLM checkpoint in Microsoft's format standing in for WavLM Base+ (random transformer, a
hand-made filterbank as its frozen convolutions, see ``demo.standin``: not a pre-trained model).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from demo.corpus import (
    AUDIO_SUFFIXES,
    build_fsdd_corpus,
    link_speaker_files,
    make_trials,
    scan_corpus,
    split_by_session,
    split_by_speaker,
    write_train_list,
    write_trials,
)
from demo.noise import make_musan_like, make_rirs
from demo.standin import save_standin_checkpoint


@dataclass(frozen=True)
class DemoPaths:
    corpus: Path
    """The ``SPEAKER/SESSION/UTT`` files every step reads (train_path and test_path)."""
    source: Optional[Path]
    """The ``--data`` folder (None: the carried FSDD recordings)."""
    held_out_every: int
    """Hold out every N-th speaker for the trials; 0 holds out the last session of every speaker."""
    train_list: Path
    held_out_list: Path
    """The test files as ``SPEAKER PATH`` lines (the trial list's files, with their speakers)."""
    trials: Path
    musan: Path
    rirs: Path
    wavlm: Path
    max_trials: int = 20000
    """At most this many trials over the test files; 0: every pair."""

    def options(self) -> List[str]:
        """The trainSpeakerNet(_Eval).py options that point at these files."""
        return ["--train_path", str(self.corpus), "--test_path", str(self.corpus), "--test_list", str(self.trials),
                "--musan_path", str(self.musan), "--rir_path", str(self.rirs),
                "--pretrained_model_path", str(self.wavlm)]


def speaker_level_files(data: Path) -> bool:
    """Whether ``data`` holds ``SPEAKER/UTT`` audio files (rather than ``SPEAKER/SESSION/UTT``)."""
    return any(p.suffix.lower() in AUDIO_SUFFIXES for p in data.glob("*/*"))


def demo_paths(work: Path, data: Optional[Path] = None, held_out_every: int = 0, max_trials: int = 20000) -> DemoPaths:
    """Where the demo's inputs live under ``work``; ``data`` replaces the FSDD corpus when given."""
    corpus = work / "corpus" if data is None or speaker_level_files(data) else data
    return DemoPaths(corpus=corpus, source=data, held_out_every=held_out_every, train_list=work / "train_list.txt",
                     held_out_list=work / "held_out_list.txt", trials=work / "trials.txt", musan=work / "musan",
                     rirs=work / "rirs", wavlm=work / "wavlm_random.pt", max_trials=max_trials)


def prepare_demo(paths: DemoPaths, seed: int = 0) -> Dict[str, int]:
    """Write the demo's inputs; returns counts for the log."""
    if paths.source is None:
        build_fsdd_corpus(paths.corpus, seed=seed)
    elif paths.corpus != paths.source:
        link_speaker_files(paths.source, paths.corpus)
    relative = scan_corpus(paths.corpus)
    if paths.held_out_every:
        train, test = split_by_speaker(relative, paths.held_out_every)
    else:
        train, test = split_by_session(relative)
    write_train_list(train, paths.train_list)
    write_train_list(test, paths.held_out_list)
    trials = make_trials(test, max_trials=paths.max_trials, seed=seed)
    write_trials(trials, paths.trials)
    make_musan_like(paths.musan, seed=seed)
    make_rirs(paths.rirs, seed=seed)
    save_standin_checkpoint(paths.wavlm, seed=seed)
    counts = {"speakers": len({p.split("/")[0] for p in train + test}), "train_files": len(train),
              "test_speakers": len({p.split("/")[0] for p in test}), "test_files": len(test), "trials": len(trials),
              "target_trials": sum(t[0] for t in trials)}
    held_out = (f"{counts['test_speakers']} held-out speakers" if paths.held_out_every
                else "the last session of each speaker")
    print(f"Demo corpus {paths.corpus}: {counts['speakers']} speakers, {counts['train_files']} training and "
          f"{counts['test_files']} test utterances ({held_out}), {counts['trials']} trials "
          f"({counts['target_trials']} same-speaker)", flush=True)
    return counts
