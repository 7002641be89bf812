"""Embed audio files with a speaker model file, as the evaluator embeds them.

    python scripts/embed.py speaker.pt a.wav some/folder list.txt --output embeddings.pt
    python scripts/embed.py speaker.pt data/voxceleb1 --output emb.ark --format kaldi     # emb.ark + emb.scp

Inputs are audio files, folders (every .wav / .flac / .ogg file under them, sorted) and lists
(``.txt`` / ``.lst``: one path per line, or ``LABEL PATH`` as a train list, relative to ``--root``). Each
file's embedding is its scoring vector (docs/method.md §7: ``[mean of the normalised crop embeddings,
normalised whole-file embedding] / sqrt(2)``, 2·nOut values), so the dot product of two of them is the
evaluator's trial score. ``--format pt`` writes the project's embeddings file (a dict keyed by the
last three path parts, dataio/embedding_store.py); ``--format kaldi`` a Kaldi archive and its index.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from dataio.embedding_store import kaldi_scp_path, keyed_paths, save_embeddings, save_embeddings_kaldi
from scoring.speaker_model import SpeakerModel
from utils.atomic import check_distinct, check_writable
from utils.cli import run_cli
from utils.device import resolve_device, set_torch_threads
from utils.errors import InputError
from utils.options import IO, OPTIONS_BY_NAME, RUN, Option, check_at_least, optional_str, parse_options
from utils.textfile import read_text_lines

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
LIST_EXTENSIONS = (".txt", ".lst")

RUN_OPTIONS = [  # shared with scripts/verify.py
    dataclasses.replace(OPTIONS_BY_NAME["device"], group=RUN),
    dataclasses.replace(OPTIONS_BY_NAME["eval_batch_size"], help="files embedded per forward pass", group=RUN),
    dataclasses.replace(OPTIONS_BY_NAME["nDataLoaderThread"], default=2, group=RUN),
    OPTIONS_BY_NAME["threads"],
]
RUN_COUNTS = {"eval_batch_size": 1, "nDataLoaderThread": 0, "threads": 0}


def start_run(args: argparse.Namespace) -> None:
    """Check the run options (shared with scripts/verify.py) and set torch's threads for them."""
    check_at_least(args, RUN_COUNTS)
    set_torch_threads(args.threads, args.nDataLoaderThread)


EMBED_OPTIONS = [
    Option("model", str, None, "speaker model file (scripts/export_model.py)", IO, positional=True),
    Option("inputs", str, None, "audio files, folders of audio files, or lists of files (.txt, .lst)", IO,
           positional=True, nargs="+"),
    Option("output", optional_str, None, "file to write: embeddings.pt, or the .ark with --format kaldi", IO),
    Option("format", str, "pt", "pt: the project's embeddings file; kaldi: ark + scp (through kaldiio)", IO,
           choices=("pt", "kaldi")),
    Option("root", str, ".", "folder the relative paths of a list are relative to", IO),
    *RUN_OPTIONS,
]


def list_paths(path: str, root: str) -> List[str]:
    """The files a list names: one path (or ``LABEL PATH``) per line, relative to ``root``."""
    paths = []
    for number, line in enumerate(read_text_lines(path, "file list"), start=1):
        fields = line.split()
        if len(fields) > 2:
            raise InputError(f"{path}:{number}: expected 'PATH' or 'LABEL PATH', got {len(fields)} fields")
        if fields:
            paths.append(os.path.join(root, fields[-1]))
    return paths


def audio_paths(inputs: Sequence[str], root: str) -> List[str]:
    """Every file the inputs name, in order, each missing one an error naming it."""
    paths: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item) for name in names
                           if name.lower().endswith(AUDIO_EXTENSIONS))
            if not found:
                raise InputError(f"folder {item} holds no {'/'.join(AUDIO_EXTENSIONS)} file")
            paths += found
        elif item.lower().endswith(LIST_EXTENSIONS):
            paths += list_paths(item, root)
        else:
            paths.append(item)
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise InputError(f"{len(missing)} input file(s) do not exist: {', '.join(missing[:5])}")
    return paths


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    args = parse_options("Embed audio files with a speaker model file.", argv, EMBED_OPTIONS, accepted=())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    start_run(args)
    if not args.output:
        raise InputError("--output is required (embeddings.pt, or an .ark file with --format kaldi)")
    outputs = [("--output", args.output)]
    if args.format == "kaldi":
        outputs.append(("--output's index", kaldi_scp_path(args.output)))
    check_distinct(outputs, [("model", args.model), ("--config", args.config),
                             *(("an input", item) for item in args.inputs)])
    for name, path in outputs:
        check_writable(path, name)
    paths = audio_paths(args.inputs, args.root)
    check_distinct(outputs, [("an input", path) for path in paths])  # the files of the folders and lists
    keyed = keyed_paths(paths)
    model = SpeakerModel.load(args.model, resolve_device(args.device))
    vectors = model.embed_files(list(keyed.values()), args.eval_batch_size, args.nDataLoaderThread)
    embeddings = {key: vectors[i:i + 1].float() for i, key in enumerate(keyed)}
    if args.format == "kaldi":
        scp = save_embeddings_kaldi(embeddings, args.output)
        print(f"Wrote {len(embeddings)} embeddings of size {vectors.shape[1]} to {args.output} and {scp}", flush=True)
    else:
        save_embeddings(embeddings, args.output)
        print(f"Wrote {len(embeddings)} embeddings of size {vectors.shape[1]} to {args.output}", flush=True)
    return embeddings


if __name__ == "__main__":
    run_cli(main)
