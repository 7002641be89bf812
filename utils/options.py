"""The one option system of every command: argparse + YAML.

Every option of trainSpeakerNet.py and trainSpeakerNet_Eval.py is declared once in ``OPTIONS`` below,
with the command that uses it (``use``: ``train``, ``eval`` or both); the other commands declare their
own lists with the same ``Option`` and parse them here too. A YAML file given with ``--config`` uses the
option names as keys. Precedence is *explicit command line > YAML > default*; the original let the YAML
silently override the command line. An unknown YAML key is an error naming the key and the file (the
original ignored it). Booleans accept true/false/yes/no/1/0 in any case (the original's ``type=bool``
read the string "False" as True).

A command shows only its own options in ``--help``. It also accepts, without showing them, the options
of the config it reads (trainSpeakerNet.py and trainSpeakerNet_Eval.py share one config, and
export_model.py reads it) and the original's options that nothing here uses (:data:`LEGACY_OPTIONS`).
Such an option given on the command line, and a legacy key in a YAML file, get a one-line note.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

from utils.atomic import atomic_write_text
from utils.errors import InputError
from utils.textfile import read_text_lines

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def str2bool(value: Any) -> bool:
    """Parse a boolean given on the command line or in YAML."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


def integer(value: Any) -> int:
    """An integer option: a YAML ``4.9`` is an error, not 4 (``int()`` would truncate it silently)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def optional_str(value: Any) -> Optional[str]:
    """A path-like string where an empty value or 'None' means "not given"."""
    if value is None:
        return None
    text = str(value)
    return None if text in ("", "None", "none", "null") else text


@dataclass(frozen=True)
class Option:
    name: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    group: str
    choices: Optional[Sequence[Any]] = None
    positional: bool = False  # a required argument given by position (pseudo_labeling.py's files)
    nargs: Optional[str] = None  # a positional's argparse nargs, e.g. "+" for one or more files
    use: str = "both"  # the speaker commands that read it: "train", "eval" or "both"


def _o(name: str, type_: Callable[[Any], Any], default: Any, help_: str, group: str, **kw: Any) -> Option:
    return Option(name, type_, default, help_, group, **kw)


DATA, TRAIN, OPTIM, LOSS, EVAL, IO, MODEL, RUN = (
    "data loader", "training", "optimiser", "loss", "evaluation", "load and save", "model", "run")
TRAIN_USE, EVAL_USE = "train", "eval"

T, E = {"use": TRAIN_USE}, {"use": EVAL_USE}

OPTIONS: List[Option] = [
    # data loader
    _o("max_frames", integer, 200, "training crop in 10 ms frames (crop = max_frames*160+240 samples)", DATA, **T),
    _o("batch_size", integer, 400, "utterances per step per process", DATA, **T),
    _o("max_seg_per_spk", integer, 500, "at most this many utterances per label per epoch", DATA, **T),
    _o("nDataLoaderThread", integer, 10, "DataLoader worker processes", DATA),
    _o("augment", str2bool, True, "MUSAN / RIR augmentation of the training crops", DATA, **T),
    _o("check_audio", str2bool, True,
       "read every listed file before epoch 1 and name at once all that cannot be trained on: unreadable, empty, "
       "NaN or inf, or digital silence (every sample below -60 dBFS)", DATA, **T),
    _o("augment_on_device", str2bool, False,
       "apply reverberation and noise in batch on the training device instead of in the workers", DATA, **T),
    _o("sixth_augmentation", str, "faithful",
       "the sixth augmentation type: 'faithful' = music only (original quirk), 'babble_music' = intended",
       DATA, choices=("faithful", "babble_music"), **T),
    _o("seed", integer, 20211202, "seed of the sampler and the random generators", DATA),
    # training
    _o("test_interval", integer, 1, "save a checkpoint (and step the LR) every this many epochs", TRAIN, **T),
    _o("max_epoch", integer, 50, "last training epoch", TRAIN, **T),
    _o("trainfunc", str, "aamsoftmax",
       "loss module under loss/: aamsoftmax (gate and label correction, published), aam (plain AAM-softmax)",
       TRAIN, **T),
    _o("mixedprec", str2bool, False, "bf16 autocast where the device supports it", TRAIN, **T),
    _o("distributed", str2bool, False, "join the torchrun process group (env:// rendezvous)", TRAIN),
    _o("device", str, "auto", "cpu, cuda, cuda:N or auto (cuda when available)", TRAIN),
    _o("max_nonfinite_steps", integer, 20,
       "stop training after this many steps in a row with a non-finite loss or gradient (each is skipped)", TRAIN,
       **T),
    _o("tensorboard", str2bool, False,
       "also write each epoch's figures for TensorBoard into save_path/tensorboard (needs tensorboard)", TRAIN,
       **T),
    # optimiser
    _o("optimizer", str, "adamw", "optimiser (adamw)", OPTIM, choices=("adamw",), **T),
    _o("scheduler", str, "steplr", "learning-rate scheduler (steplr, stepped once per test_interval)",
       OPTIM, choices=("steplr",), **T),
    _o("lr_decay", float, 0.9, "StepLR gamma", OPTIM, **T),
    _o("weight_decay", float, 0.01, "AdamW weight decay (torch default, as the original)", OPTIM, **T),
    _o("weight_finetuning_reg", float, 0.001, "weight of the L2 pull towards the initial (pre-trained) weights",
       OPTIM, **T),
    _o("LLRD_factor", float, 1.0, "layer-wise LR decay: layer i gets LR_Transformer*LLRD_factor**i", OPTIM, **T),
    _o("LR_Transformer", float, 2e-5,
       "learning rate of the backbone (WavLM: the transformer layers; ECAPA-TDNN: the frame-level layers)", OPTIM,
       **T),
    _o("LR_MHFA", float, 5e-3, "learning rate of the head (MHFA; ECAPA-TDNN: pooling and embedding) and the loss",
       OPTIM, **T),
    # loss
    _o("margin", float, 0.2, "AAM margin", LOSS, **T),
    _o("scale", float, 30.0, "AAM scale", LOSS, **T),
    _o("nPerSpeaker", integer, 1, "utterances per label in a batch", LOSS, **T),
    _o("nClasses", integer, 5994, "rows of the AAM weight (>= number of labels)", LOSS, **T),
    _o("gate_start_epoch", integer, 5, "first epoch whose loss gate is fitted on the previous epoch's losses", LOSS,
       **T),
    _o("lc_start_epoch", integer, 9, "first epoch with label correction", LOSS, **T),
    _o("lc_temperature", float, 0.1, "softmax temperature of label correction", LOSS, **T),
    _o("lc_confidence", float, 0.5, "minimum probability for a corrected label", LOSS, **T),
    _o("lc_fix_margin", str2bool, False,
       "put the AAM margin at the corrected label (the original keeps it at the pseudo-label)", LOSS, **T),
    # evaluation
    _o("eval", str2bool, False, "evaluate on --test_list and exit", EVAL, **E),
    _o("generate_embeddings", str2bool, False, "embed every file of --train_list into --embeddings_path", EVAL,
       **E),
    _o("embeddings_path", optional_str, None, "output of --generate_embeddings (torch.save of a dict)", EVAL, **E),
    _o("embedding_mode", str, "train",
       "--generate_embeddings: 'train' keeps dropout and layer drop on, seeded by --seed (the original's quirk), "
       "'eval' = evaluation mode", EVAL, choices=("train", "eval"), **E),
    _o("eval_frames", integer, 300, "evaluation crop in 10 ms frames; 0 uses whole files", EVAL, **E),
    _o("num_eval", integer, 15, "evaluation crops per file", EVAL, **E),
    _o("max_eval_samples", integer, 700000, "cap on the whole-file embedding's length in samples; 0 = no cap",
       EVAL, **E),
    _o("eval_batch_size", integer, 16, "files embedded per forward pass during evaluation", EVAL, **E),
    _o("threads", integer, 0, "torch CPU threads while embedding; 0 = $OMP_NUM_THREADS, else the cores the "
       "nDataLoaderThread workers leave (at least 1)", EVAL, **E),
    _o("num_checkpoints", integer, 1, "--eval: evaluate the newest N checkpoints in save_path/model", EVAL, **E),
    _o("average_checkpoints", integer, 0, "--eval: average the weights of the newest N checkpoints first", EVAL,
       **E),
    _o("score_norm", str, "none", "score normalisation: none or asnorm", EVAL, choices=("none", "asnorm"), **E),
    _o("asnorm_top_k", integer, 300, "AS-Norm: cohort size kept per file", EVAL, **E),
    _o("cohort_embeddings", optional_str, None, "AS-Norm / mean subtraction: embeddings file of the training set",
       EVAL, **E),
    _o("subtract_mean", str2bool, False, "subtract the cohort's mean embedding before cosine scoring", EVAL, **E),
    _o("plots", str2bool, True, "write the DET curve and score histograms (needs matplotlib)", EVAL, **E),
    _o("dcf_p_target", float, 0.05, "p_target of the first minDCF (the second uses 0.01)", EVAL, **E),
    _o("dcf_c_miss", float, 1.0, "cost of a missed detection", EVAL, **E),
    _o("dcf_c_fa", float, 1.0, "cost of a false alarm", EVAL, **E),
    _o("score_format", str, "original",
       "--eval scores file: 'original' = SCORE LABEL ENROLL TEST lines, 'kaldi' = ENROLL TEST SCORE lines", EVAL,
       choices=("original", "kaldi"), **E),
    # load and save
    _o("initial_model", optional_str, None, "start from this checkpoint (ours or the original's layout)", IO),
    _o("save_path", str, "exps/exp1", "folder of checkpoints, logs and results", IO),
    _o("train_list", str, "data/train_list.txt", "training list: LABEL RELATIVE_PATH per line", IO),
    _o("test_list", str, "data/test_list.txt", "trial list: LABEL ENROLL TEST (or ENROLL TEST) per line", IO, **E),
    _o("train_path", str, "data/voxceleb2", "folder the training list's paths are relative to", IO),
    _o("test_path", str, "data/voxceleb1", "folder the trial list's paths are relative to", IO, **E),
    _o("musan_path", str, "data/musan_split", "MUSAN split into 5 s pieces: {music,speech,noise}/*/*.wav", IO, **T),
    _o("rir_path", str, "data/simulated_rirs", "simulated RIRs: */*/*.wav", IO, **T),
    # model
    _o("model", str, "Baseline.Spk_Encoder",
       "encoder: wavlm_mhfa (= Baseline.Spk_Encoder, published), hubert_mhfa, wav2vec2_mhfa (docs/backbones.md), "
       "ecapa_tdnn, or the dotted path of your module",
       MODEL),
    _o("pretrained_model_path", optional_str, None,
       "initial weights: a WavLM (Microsoft .pt, Hugging Face folder, or a known name downloaded on first use: "
       "wavlm-base-plus, wavlm-large, microsoft/wavlm-base-plus, microsoft/wavlm-large); for hubert_mhfa and "
       "wav2vec2_mhfa a fairseq .pt, a Hugging Face folder or a known name (docs/backbones.md); for ecapa_tdnn a "
       "trainDINO.py checkpoint (its teacher), or none for random weights", MODEL),
    _o("model_cache", optional_str, None,
       "folder of downloaded pre-trained models (default $XDG_CACHE_HOME/wavlm_ssl_sv or ~/.cache/wavlm_ssl_sv)",
       MODEL),
    _o("trust_checkpoint", str2bool, False,
       "unpickle a pre-trained checkpoint that safe loading refuses (it could run code: only files you trust)",
       MODEL),
    _o("nOut", integer, 192, "speaker embedding size", MODEL),
    _o("head_nb", integer, 64, "MHFA encoders: MHFA attention heads", MODEL),
    _o("compression_dim", integer, 128, "MHFA encoders: MHFA compressed key / value size", MODEL),
    _o("channels", integer, 1024, "ecapa_tdnn: channels C (blocks of C, aggregation of 3C); a multiple of 8", MODEL),
    _o("n_mels", integer, 80, "ecapa_tdnn: log mel bands of the filterbank", MODEL),
    _o("mean_norm", str2bool, True, "ecapa_tdnn: subtract each log mel band's mean over the utterance", MODEL),
]

LEGACY_OPTIONS: List[Option] = [
    _o("port", str, "7888", "the original's master port: torchrun's --master_port sets it", RUN),
    _o("lr", float, 0.001, "the original's single learning rate: LR_MHFA and LR_Transformer set them", OPTIM),
    _o("hard_prob", float, 0.5, "the original's hard-negative probability, which aamsoftmax never used", LOSS),
    _o("hard_rank", integer, 10, "the original's hard-negative rank, which aamsoftmax never used", LOSS),
    _o("log_input", str2bool, False, "the original's log of filterbank input, which WavLM has none of", MODEL),
    _o("encoder_type", str, "SAP", "the original's pooling name, which MHFA replaces", MODEL),
]
"""Options of the original's scripts that nothing here reads: accepted (with a note) so that its configs and
command lines still work, and shown by no ``--help``."""

TRAIN_OPTIONS = [o for o in OPTIONS if o.use != EVAL_USE]
EVAL_OPTIONS = [o for o in OPTIONS if o.use != TRAIN_USE]


def config_options(own: Sequence[Option]) -> List[Option]:
    """What a command that reads the speaker config accepts besides ``own``: the config's other options (the
    training and evaluation commands share one config) and the original's unused ones."""
    names = {o.name for o in own}
    return [o for o in OPTIONS if o.name not in names] + LEGACY_OPTIONS

OPTIONS_BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}



class ConfigError(InputError):
    """A configuration file or value that cannot be used; the message names the file and key."""


def build_parser(description: str, options: Sequence[Option] = OPTIONS,
                 accepted: Sequence[Option] = ()) -> argparse.ArgumentParser:
    """An argparse parser whose defaults are all suppressed, so explicit options can be told apart.

    ``accepted`` options parse like the others but are left out of ``--help``.
    """
    parser = argparse.ArgumentParser(
        description=description,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,  # a typo such as --max_ep must not silently match --max_epoch
    )
    parser.add_argument("--config", type=str, metavar="YAML", help="YAML file of option values (command line wins)")
    groups: Dict[str, argparse._ArgumentGroup] = {}
    shown = {opt.name for opt in options}
    for opt in [*options, *accepted]:
        hidden = opt.name not in shown
        group = parser if hidden else groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        if opt.positional:
            group.add_argument(opt.name, type=opt.type, help=opt.help, nargs=opt.nargs)
            continue
        help_text = argparse.SUPPRESS if hidden else opt.help + ("" if opt.default is None else
                                                                 f" (default: {opt.default})")
        if opt.type is str2bool:
            # "--eval" alone means true, as the original's store_true; "--augment false" now means false.
            group.add_argument(f"--{opt.name}", nargs="?", const=True, type=str2bool, help=help_text,
                               metavar="BOOL")
        else:
            metavar = "{" + ",".join(map(str, opt.choices)) + "}" if opt.choices else opt.type.__name__.upper()
            group.add_argument(f"--{opt.name}", type=opt.type, choices=opt.choices, help=help_text,
                               metavar=metavar.replace("OPTIONAL_STR", "STR").replace("INTEGER", "INT"))
    return parser


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice (plain YAML keeps the last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml_config(path: str, options: Optional[Sequence[Option]] = None) -> Dict[str, Any]:
    """Read a YAML config, checking every key against ``options`` (default: the speaker options and the legacy
    ones) and converting every value to its type."""
    options = [*OPTIONS, *LEGACY_OPTIONS] if options is None else options
    text = "\n".join(read_text_lines(path, "config file"))
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path!r} must be a mapping of option: value, got {type(raw).__name__}")
    by_name = {o.name: o for o in options}
    values: Dict[str, Any] = {}
    for key, value in raw.items():
        opt = by_name.get(key)
        if opt is None:
            close = [n for n in by_name if n.lower() == str(key).lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config file {path!r}: unknown key {key!r}{hint}")
        values[key] = convert_value(opt, value, source=f"config file {path!r}")
    return values


def convert_value(opt: Option, value: Any, source: str) -> Any:
    """Convert ``value`` to ``opt``'s type, or raise a ConfigError naming ``source`` and the key."""
    try:
        converted = opt.type(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{source}: key {opt.name!r}: {exc}") from exc
    if opt.choices is not None and converted not in opt.choices:
        raise ConfigError(f"{source}: key {opt.name!r} must be one of {list(opt.choices)}, got {value!r}")
    return converted


def parse_options(description: str, argv: Optional[Sequence[str]] = None, options: Sequence[Option] = OPTIONS,
                  accepted: Optional[Sequence[Option]] = None) -> argparse.Namespace:
    """Parse ``argv`` with precedence explicit command line > YAML (``--config``) > default.

    ``options`` are the command's own; ``accepted`` ones are read too (every option gets a value) but not
    shown, and each given one gets a note on standard error (a YAML key only when it is a legacy one).
    By default the whole speaker option list accepts the legacy options, and any other list nothing more.
    """
    if accepted is None:
        accepted = LEGACY_OPTIONS if options is OPTIONS else ()
    parser = build_parser(description, options, accepted)
    explicit = vars(parser.parse_args(argv))
    config_path = explicit.pop("config", None)
    every = [*options, *accepted]
    resolved = {o.name: o.default for o in every}
    from_yaml: Dict[str, Any] = {}
    if config_path is not None:
        try:
            from_yaml = load_yaml_config(config_path, every)
        except ConfigError as exc:
            parser.error(str(exc))
    resolved.update(from_yaml)
    resolved.update(explicit)
    resolved["config"] = config_path
    for opt in accepted:
        if opt.name in explicit or (opt.name in from_yaml and opt in LEGACY_OPTIONS):
            where = f"--{opt.name}" if opt.name in explicit else f"key {opt.name!r} of {config_path}"
            reason = opt.help if opt in LEGACY_OPTIONS else f"{parser.prog} does not use it"
            print(f"{parser.prog}: note: {where} is ignored ({reason})", file=sys.stderr, flush=True)
    return argparse.Namespace(**resolved)


def check_at_least(args: argparse.Namespace, lowest: Mapping[str, float]) -> None:
    """Refuse an option below its lowest usable value (``lowest``: option name -> value), naming the option."""
    for name, low in lowest.items():
        if getattr(args, name) < low:
            raise InputError(f"--{name} must be at least {low}, got {getattr(args, name)}")


def save_resolved_config(args: argparse.Namespace, path: str, options: Sequence[Option] = OPTIONS) -> None:
    """Write every option's resolved value as YAML that ``--config`` reads back unchanged."""
    values = {o.name: getattr(args, o.name) for o in options if hasattr(args, o.name)}
    atomic_write_text(path, yaml.safe_dump(values, sort_keys=False))
