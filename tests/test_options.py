"""The option system: precedence, YAML checking, boolean parsing, round trip of the resolved config."""
import argparse

import pytest
import yaml

from utils import options


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_config():
    args = options.parse_options("t", [])
    assert args.max_frames == 200 and args.augment is True and args.eval is False
    assert args.initial_model is None and args.config is None


def test_command_line_beats_yaml_beats_default(tmp_path):
    cfg = write(tmp_path, "max_frames: 300\nbatch_size: 120\nmargin: 0.2\n")
    args = options.parse_options("t", ["--config", cfg, "--max_frames", "600"])
    assert args.max_frames == 600  # explicit command line wins over YAML (the original did the opposite)
    assert args.batch_size == 120  # YAML wins over the default 400
    assert args.max_epoch == 50  # default where neither says anything


@pytest.mark.parametrize("text,expected", [("false", False), ("False", False), ("0", False), ("no", False),
                                           ("true", True), ("True", True), ("1", True), ("yes", True)])
def test_boolean_strings(text, expected):
    assert options.parse_options("t", ["--augment", text]).augment is expected


def test_switch_alone_means_true_and_yaml_booleans(tmp_path):
    assert options.parse_options("t", ["--eval"]).eval is True
    cfg = write(tmp_path, "augment: False\ndistributed: true\n")
    args = options.parse_options("t", ["--config", cfg])
    assert args.augment is False and args.distributed is True


def test_unknown_yaml_key_names_key_and_file(tmp_path, capsys):
    cfg = write(tmp_path, "max_frames: 300\nmax_framez: 2\n")
    with pytest.raises(SystemExit):
        options.parse_options("t", ["--config", cfg])
    err = capsys.readouterr().err
    assert "max_framez" in err and cfg in err


def test_wrong_yaml_type_names_key(tmp_path, capsys):
    cfg = write(tmp_path, "batch_size: many\n")
    with pytest.raises(SystemExit):
        options.parse_options("t", ["--config", cfg])
    err = capsys.readouterr().err
    assert "batch_size" in err and cfg in err


def test_bad_boolean_in_yaml(tmp_path):
    with pytest.raises(options.ConfigError, match="augment"):
        options.load_yaml_config(write(tmp_path, "augment: maybe\n"))


def test_unknown_command_line_option_fails():
    with pytest.raises(SystemExit):
        options.parse_options("t", ["--no_such_option", "1"])


def test_published_configs_parse():
    for name, frames, margin in (("wavlm_mhfa_dlg_lc", 300, 0.2), ("wavlm_mhfa_dlg_lc_lmft", 600, 0.5)):
        args = options.parse_options("t", ["--config", f"configs/{name}.yaml"])
        assert args.max_frames == frames and args.margin == margin
        assert args.nClasses == 7500 and args.nOut == 256 and args.model == "Baseline.Spk_Encoder"


def test_resolved_config_round_trip(tmp_path):
    args = options.parse_options("t", ["--max_frames", "123", "--augment", "false"])
    out = tmp_path / "resolved.yaml"
    options.save_resolved_config(args, str(out))
    again = options.parse_options("t", ["--config", str(out)])
    for opt in options.OPTIONS:
        assert getattr(again, opt.name) == getattr(args, opt.name), opt.name
    assert yaml.safe_load(out.read_text())["max_frames"] == 123


def test_every_option_has_help():
    parser = options.build_parser("t")
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, action.dest


def test_positional_options_and_yaml_for_pseudo_labeling(tmp_path):
    from clustering.pseudo_labels import PSEUDO_LABELING_OPTIONS
    cfg = write(tmp_path, "n_clusters: 12\nn_clusters_ahc: 0\n")
    args = options.parse_options("pl", ["emb.pt", "pl.txt", "--config", cfg, "--n_clusters_ahc", "3"],
                                 PSEUDO_LABELING_OPTIONS)
    assert (args.embeddings_file, args.output_file) == ("emb.pt", "pl.txt")
    assert args.n_clusters == 12 and args.n_clusters_ahc == 3 and args.device == "auto"


@pytest.mark.parametrize("text,message", [
    ("batch_size: 4.9\n", "key 'batch_size': expected an integer, got 4.9"),
    ("max_epoch: true\n", "key 'max_epoch': expected an integer, got True"),
    ("max_frames: 200\nbatch_size: 8\nmax_frames: 300\n", "key 'max_frames' appears twice (lines 1 and 3)"),
])
def test_yaml_values_are_not_truncated_and_keys_not_repeated(tmp_path, text, message, capsys):
    with pytest.raises(SystemExit):
        options.parse_options("t", ["--config", write(tmp_path, text)])
    assert message in capsys.readouterr().err


def test_integral_yaml_floats_and_a_byte_order_mark_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffbatch_size: 5.0\n".encode("utf-8"))
    assert options.parse_options("t", ["--config", str(path)]).batch_size == 5


def test_abbreviated_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        options.parse_options("t", ["--max_ep", "1"])
    assert "unrecognized arguments: --max_ep" in capsys.readouterr().err
