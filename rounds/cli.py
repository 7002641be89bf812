"""The self-supervised loop in one command: pseudo-labels, fine-tuning and new embeddings, round after
round, then large-margin fine-tuning (LMFT) and evaluation (docs/method.md §1).

    python run_rounds.py --demo                       # the whole loop on real speech, on CPU, in minutes
    python run_rounds.py --base_path exp/ssl --initial_embeddings dino_vox2_embeddings.pt \\
        --set train_path=data/voxceleb2 --set test_path=data/voxceleb1 \\
        --set test_list=data/trials/voxceleb1_o_clean.txt --set musan_path=data/musan_split \\
        --set rir_path=data/simulated_rirs --set pretrained_model_path=WavLM-Base+.pt

For round k = 1..R, in ``BASE/round<k>``: pseudo_labeling.py clusters the previous embeddings (the
initial ones for round 1) into ``pseudo_labels.txt``; trainSpeakerNet.py fine-tunes the pre-trained
WavLM on them; trainSpeakerNet_Eval.py --eval measures the model; trainSpeakerNet_Eval.py
--generate_embeddings embeds every file for the next round. Then, in ``BASE/lmft``, trainSpeakerNet.py
continues the last round's newest checkpoint (--initial_model) with the LMFT config on the last
pseudo-labels, and --eval measures it. Each step is the command a user would type (they are printed,
and logged under ``BASE/logs``); a finished step leaves ``BASE/.steps/<step>.done`` and is skipped
when the driver is run again, and an interrupted training resumes from its newest checkpoint. At the
end a table of the rounds (pseudo-label NMI, clusters, training accuracy, EER, minDCF) is printed and
written to ``BASE/rounds.md``.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from clustering.pseudo_labels import PSEUDO_LABELING_OPTIONS
from demo.prepare import demo_paths, prepare_demo, speaker_level_files
from rounds.plan import REPO, Comparison, Plan, newest_checkpoint, option_pairs, options_of, training_outputs
from rounds.report import report
from rounds.steps import DriverError, FolderLock, Step, StepRunner
from training.dino import DINO_OPTIONS
from utils.atomic import check_writable
from utils.options import OPTIONS_BY_NAME, parse_options

CONFIGS = {  # (encoder, --demo): (round config, LMFT config)
    ("wavlm_mhfa", False): ("wavlm_mhfa_dlg_lc.yaml", "wavlm_mhfa_dlg_lc_lmft.yaml"),
    ("wavlm_mhfa", True): ("demo_round.yaml", "demo_lmft.yaml"),
    ("ecapa_tdnn", False): ("ecapa_tdnn_dlg_lc.yaml", "ecapa_tdnn_dlg_lc_lmft.yaml"),
    ("ecapa_tdnn", True): ("ecapa_small_round.yaml", "ecapa_small_lmft.yaml"),
}
ENCODERS = sorted({encoder for encoder, _ in CONFIGS})
DINO_CONFIGS = {False: REPO / "configs" / "dino_ecapa.yaml", True: REPO / "configs" / "dino_demo.yaml"}
DEFAULTS = {  # option: (VoxCeleb recipe, demo)
    "base_path": (None, Path("exps/demo")),
    "n_clusters": (50000, 48),  # demo: 48 merged into 8 give purer MFCC labels than 24 (NMI 0.95 vs 0.87)
    "n_clusters_ahc": (7500, 8),
    "threads": (0, 1),
}
KMEANS_PER_GROUP = 50000 / 7500
"""The recipe's k-means clusters per AHC group, used for --data when only --n_clusters_ahc is given."""
BOOTSTRAPS = {"mfcc": "MFCC-statistics", "dino": "DINO"}
PSEUDO_LABELING_OPTION_NAMES = [opt.name for opt in PSEUDO_LABELING_OPTIONS if not opt.positional]
DINO_OPTION_NAMES = [opt.name for opt in DINO_OPTIONS]
DRIVER_OPTIONS = ("config", "save_path", "train_list", "initial_model", "embeddings_path", "eval",
                  "generate_embeddings", "distributed")
"""Options each step gets from the driver; ``--set`` cannot change them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[0].split()),
        epilog="Defaults in brackets are [VoxCeleb recipe | --demo].", allow_abbrev=False)
    parser.add_argument("--demo", action="store_true",
                        help="run the embedded demo: FSDD speech (6 speakers) with generated backgrounds, generated "
                             "noise and RIRs for augmentation, a tiny WavLM stand-in (random transformer, "
                             "filterbank front end), MFCC-statistics initial embeddings; needs nothing else")
    parser.add_argument("--data", type=Path,
                        help="with --demo: use this folder of SPEAKER/SESSION/UTT or SPEAKER/UTT audio files (wav, "
                             "flac), as they are, instead of FSDD; give --n_clusters_ahc (about the number of "
                             "speakers) and usually --held_out_every")
    parser.add_argument("--held_out_every", type=int, default=0,
                        help="with --demo: hold out every N-th speaker (all its files) for the trials, so that "
                             "verification is on speakers training never saw; 0 holds out the last session of every "
                             "speaker instead [- | 0]")
    parser.add_argument("--encoder", choices=ENCODERS, default="wavlm_mhfa",
                        help="the encoder the rounds train: wavlm_mhfa (the published system) or ecapa_tdnn, which "
                             "starts from the DINO teacher with --bootstrap dino; picks the round and LMFT configs "
                             "[wavlm_mhfa]")
    parser.add_argument("--compare", action="store_true",
                        help="with --demo: add the paper's comparison on the held-out speakers: MFCC statistics, the "
                             "bootstrap and an LDA on its pseudo-labels scored as they are, one plain round (no loss "
                             "gate, no label correction), and the supervised control (the same round and LMFT on "
                             "the true speakers); the table gets each stage's wall time")
    parser.add_argument("--trials", type=int, default=20000, dest="max_trials", metavar="N",
                        help="with --demo: at most this many trials over the held-out files, half same-speaker where "
                             "possible; 0 = every pair [- | 20000]")
    parser.add_argument("--bootstrap", choices=sorted(BOOTSTRAPS), default="mfcc",
                        help="how round 1's embeddings are made when --initial_embeddings is not given: mfcc = MFCC "
                             "statistics (scripts/bootstrap_embeddings.py), dino = train a DINO model on the "
                             "unlabelled training files (trainDINO.py) and embed them with it [mfcc | mfcc]")
    parser.add_argument("--dino_config", type=Path,
                        help="YAML of the DINO bootstrap [configs/dino_ecapa.yaml | configs/dino_demo.yaml]")
    parser.add_argument("--train_list", type=Path,
                        help="the recipe's unlabelled training list (LABEL PATH; labels unused), read by the "
                             "bootstrap when --initial_embeddings is not given [- | the demo's]")
    parser.add_argument("--base_path", type=Path,
                        help="folder of the run: round<k>/, lmft/, logs/, rounds.md [required | exps/demo]")
    parser.add_argument("--rounds", type=int, default=2, help="pseudo-labelling rounds before LMFT [2 | 2]")
    parser.add_argument("--round_config", type=Path,
                        help="YAML of each round's training [configs/wavlm_mhfa_dlg_lc.yaml | configs/demo_round.yaml; "
                             "ecapa_tdnn: configs/ecapa_tdnn_dlg_lc.yaml | configs/ecapa_small_round.yaml]")
    parser.add_argument("--lmft_config", type=Path,
                        help="YAML of LMFT [configs/wavlm_mhfa_dlg_lc_lmft.yaml | configs/demo_lmft.yaml; "
                             "ecapa_tdnn: configs/ecapa_tdnn_dlg_lc_lmft.yaml | configs/ecapa_small_lmft.yaml]")
    parser.add_argument("--initial_embeddings", type=Path,
                        help="embeddings file clustered in round 1, e.g. the authors' DINO embeddings of VoxCeleb2 "
                             "[made by --bootstrap | made by --bootstrap]")
    parser.add_argument("--n_clusters", type=int,
                        help="k-means clusters [50000 | 48; with --data: 50000/7500 x --n_clusters_ahc]")
    parser.add_argument("--n_clusters_ahc", type=int,
                        help="Ward AHC groups of the centroids, i.e. pseudo-labels; 0 skips AHC "
                             "[7500 | 8; with --data: required]")
    parser.add_argument("--nproc_per_node", type=int, default=1,
                        help="processes (GPUs) on this machine; >1 launches training, evaluation and embedding "
                             "through torch.distributed.run with --distributed [1]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="option passed to every trainSpeakerNet.py / trainSpeakerNet_Eval.py call, e.g. "
                             "--set train_path=data/voxceleb2 (repeatable; beats the YAML)")
    parser.add_argument("--pl_set", dest="pl_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="option passed to every pseudo_labeling.py call, e.g. --pl_set device=cuda")
    parser.add_argument("--dino_set", dest="dino_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="option passed to the trainDINO.py calls of --bootstrap dino, e.g. "
                             "--dino_set max_epoch=40")
    parser.add_argument("--threads", type=int,
                        help="OMP/MKL threads of each step's process; 0 keeps the environment's [0 | 1] (the "
                             "demo's tensors are small: one thread each is fastest, and on a busy machine several "
                             "threads per process made its evaluation 80 times slower)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the steps [this one]")
    parser.add_argument("--dry_run", action="store_true", help="print the steps' commands without running them")
    return parser


def parse_overrides(pairs: Sequence[str], known: Sequence[str], flag: str, forbidden: Sequence[str] = ()) -> List[str]:
    """``KEY=VALUE`` strings to ``--KEY VALUE`` arguments, checking each key."""
    arguments: List[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise DriverError(f"{flag} {pair!r}: expected KEY=VALUE")
        if key in forbidden:
            raise DriverError(f"{flag} {key}: the driver sets --{key} for each step itself")
        if key not in known:
            raise DriverError(f"{flag} {key}: unknown option (known: {', '.join(sorted(known))})")
        arguments += [f"--{key}", value]
    return arguments


def resolve_config(config: Path, options: List[str]) -> argparse.Namespace:
    """The options a step will see (YAML + overrides), parsed now so that mistakes surface before any work."""
    if not config.is_file():
        raise DriverError(f"config {config} does not exist")
    return parse_options(f"options of {config}", ["--config", str(config), *options])


def check_inputs(plan: Plan, demo: bool) -> str:
    """Check what can be checked before the first step; returns the trial list the table reports on."""
    labels = plan.n_clusters_ahc or plan.n_clusters
    if plan.rounds < 1:
        raise DriverError(f"--rounds must be at least 1, got {plan.rounds}")
    if plan.n_clusters_ahc > plan.n_clusters:
        raise DriverError(f"--n_clusters_ahc {plan.n_clusters_ahc} exceeds --n_clusters {plan.n_clusters}")
    resolved = None
    for config in (plan.round_config, plan.lmft_config):
        resolved = resolve_config(config, plan.options)
        if resolved.nClasses < labels:
            raise DriverError(f"{config}: nClasses {resolved.nClasses} is below the {labels} pseudo-labels of "
                              f"each round: --set nClasses={labels} (or fewer clusters)")
        if not demo:
            for name in ("train_path", "test_path", "test_list", "pretrained_model_path"):
                value = getattr(resolved, name)
                if value is None or not os.path.exists(value):
                    raise DriverError(f"{config}: {name} {value!r} does not exist: give it with --set {name}=PATH")
    if not demo and not plan.initial_embeddings.is_file():
        raise DriverError(f"--initial_embeddings {plan.initial_embeddings} does not exist")
    return resolved.test_list


def child_environment(threads: int) -> Dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def bootstrap_steps(args: argparse.Namespace, base: Path, train_list: Path, train_options: List[str],
                    dino_options: List[str]) -> Tuple[List[Step], Optional[List[str]]]:
    """The steps that make round 1's embeddings (``args.initial_embeddings``) from the unlabelled ``train_list``,
    and for a DINO bootstrap its trainDINO.py command (which other steps reuse to embed with the teacher).

    ``train_options``: the ``--KEY VALUE`` options of the training steps, of which DINO gets those it has
    (paths, device, ...); ``dino_options``: its own (--dino_set).
    """
    train_path = option_value(train_options, "train_path")
    if args.bootstrap == "mfcc":
        return [Step("bootstrap.mfcc", "initial embeddings: MFCC statistics", lambda: [
            args.python, str(REPO / "scripts" / "bootstrap_embeddings.py"), "--train_list", str(train_list),
            "--train_path", train_path, "--embeddings_path", str(args.initial_embeddings)],
            inputs=lambda: [train_list], outputs=[args.initial_embeddings])], None
    config = str((args.dino_config or DINO_CONFIGS[args.demo]).resolve())
    shared = [*options_of(train_options, DINO_OPTIONS), *dino_options]
    dino = [args.python, str(REPO / "trainDINO.py"), "--config", config, "--save_path", str(base / "dino"), *shared]
    train = [*dino, "--train_list", str(train_list)]
    return [Step("bootstrap.dino_train", "initial embeddings: DINO training", lambda: train,
                 inputs=lambda: [train_list], outputs=training_outputs(base / "dino")),
            Step("bootstrap.dino_embed", "initial embeddings: DINO embeddings", lambda: [
                *train, "--generate_embeddings", "--embeddings_path", str(args.initial_embeddings)],
                inputs=lambda: [newest_checkpoint(base / "dino")], outputs=[args.initial_embeddings])], dino


def option_value(options: Sequence[str], name: str) -> str:
    """The value of the last ``--name VALUE`` in ``options``."""
    values = [value for key, value in option_pairs(options) if key == name]
    if not values:
        raise DriverError(f"--{name} is needed: give it with --set {name}=PATH")
    return values[-1]


def build(args: argparse.Namespace) -> Tuple[Plan, List[Step], str]:
    """(plan, steps before the rounds, description of the initial embeddings)."""
    mode = 1 if args.demo else 0
    if args.demo and args.data is not None:
        if args.n_clusters_ahc is None:
            raise DriverError("--data needs --n_clusters_ahc: about the number of speakers you expect among the "
                              "training files (the pseudo-labels; the recipe uses 7500 for VoxCeleb2's 5994)")
        if args.n_clusters is None:
            args.n_clusters = max(args.n_clusters_ahc, round(KMEANS_PER_GROUP * args.n_clusters_ahc))
    for name, values in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, values[mode])
    if (args.data is not None or args.held_out_every or args.compare) and not args.demo:
        raise DriverError("--data, --held_out_every and --compare go with --demo (the VoxCeleb recipe takes its paths "
                          "from --set)")
    if args.demo and args.data is not None and not args.held_out_every and speaker_level_files(args.data):
        raise DriverError(f"--held_out_every 0 holds out the last session of every speaker, but {args.data} holds "
                          "SPEAKER/UTT files (one session per speaker): hold out whole speakers with "
                          "--held_out_every N (e.g. 5)")
    if args.base_path is None:
        raise DriverError("--base_path is required (or run --demo)")
    round_config, lmft_config = (REPO / "configs" / name for name in CONFIGS[args.encoder, args.demo])
    base = args.base_path.resolve()
    overrides = parse_overrides(args.overrides, list(OPTIONS_BY_NAME), "--set", DRIVER_OPTIONS)
    pl_overrides = parse_overrides(args.pl_overrides, PSEUDO_LABELING_OPTION_NAMES, "--pl_set",
                                   ("n_clusters", "n_clusters_ahc"))
    dino_overrides = parse_overrides(args.dino_overrides, DINO_OPTION_NAMES, "--dino_set", DRIVER_OPTIONS)
    prelude: List[Step] = []
    options = overrides
    train_list = args.train_list
    comparison = None
    if args.demo:
        paths = demo_paths(base / "data", args.data.resolve() if args.data else None, args.held_out_every,
                           args.max_trials)
        options = paths.options() + overrides
        train_list = paths.train_list
        prelude.append(Step("demo.data", "demo data", action=lambda: prepare_demo(paths)))
        if args.compare:
            comparison = Comparison(labelled_list=paths.train_list, held_out_list=paths.held_out_list,
                                    train_path=str(paths.corpus), bootstrap=args.bootstrap)
    initial_description = "initial"
    dino_run: Optional[Path] = None
    if args.initial_embeddings is None:
        if train_list is None:
            raise DriverError("give --initial_embeddings (e.g. the authors' DINO embeddings of VoxCeleb2), or "
                              "--train_list to make them with --bootstrap dino|mfcc")
        args.initial_embeddings = base / "initial_embeddings.pt"
        initial_description = BOOTSTRAPS[args.bootstrap]
        bootstrap, dino_command = bootstrap_steps(args, base, train_list, options, dino_overrides)
        prelude += bootstrap
        if dino_command is not None:
            dino_run = base / "dino"
            if comparison is not None:
                comparison.dino_command = dino_command
    elif args.compare:
        raise DriverError("--compare scores the bootstrap's embeddings of the held-out files: let the driver make "
                          "them (--bootstrap) instead of giving --initial_embeddings")
    plan = Plan(base=base, rounds=args.rounds, round_config=(args.round_config or round_config).resolve(),
                lmft_config=(args.lmft_config or lmft_config).resolve(),
                initial_embeddings=args.initial_embeddings.resolve(), n_clusters=args.n_clusters,
                n_clusters_ahc=args.n_clusters_ahc, nproc_per_node=args.nproc_per_node, python=args.python,
                options=options, pl_options=pl_overrides, comparison=comparison)
    if args.encoder == "ecapa_tdnn" and dino_run is not None and "--pretrained_model_path" not in overrides:
        plan.initial_weights = lambda: newest_checkpoint(dino_run)  # the DINO teacher, once it is trained
    if args.demo and "--nClasses" not in overrides:
        plan.options += classes_for_labels(plan)
    return plan, prelude, initial_description


def classes_for_labels(plan: Plan) -> List[str]:
    """``--nClasses LABELS`` when a config's AAM has fewer rows than the pseudo-labels (a --data corpus with
    more speakers than the demo's), else nothing: the configured rows are kept."""
    labels = plan.n_clusters_ahc or plan.n_clusters
    rows = min(resolve_config(config, plan.options).nClasses for config in (plan.round_config, plan.lmft_config))
    return ["--nClasses", str(labels)] if rows < labels else []


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        plan, prelude, initial_description = build(args)
        trial_list = check_inputs(plan, args.demo)
        if not args.dry_run:
            check_writable(plan.base / "rounds.md", "run folder (--base_path)")
            lock = FolderLock(plan.base)  # noqa: F841 (held until the driver exits)
        runner = StepRunner(plan.base, child_environment(args.threads), args.dry_run)
        steps = prelude + plan.steps()
        print(f"run_rounds: {len(steps)} steps in {plan.base} ({plan.rounds} round(s) + LMFT); "
              f"logs in {plan.base / 'logs'}", flush=True)
        runner.run_all(steps)
    except DriverError as err:
        print(f"run_rounds: error: {err}", file=sys.stderr, flush=True)
        return 1
    if not args.dry_run:
        print("\n" + report(plan, initial_description, trial_list), flush=True)
        print(f"(written to {plan.base / 'rounds.md'}; total {time.time() - runner.started:.0f} s)", flush=True)
    return 0
