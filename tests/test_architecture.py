"""The layout's promises: the original's public names import from their old module paths, and no
module imports from a layer above its own."""
from __future__ import annotations

import ast
import importlib
import inspect
import os
from typing import Dict, Set

import pytest

from tests.conftest import REPO_ROOT

# Each package may import itself and the packages listed (the layers below it); nothing imports the
# root modules (entry points and the original-named facades) except other root modules, bench and tests.
ALLOWED: Dict[str, Set[str]] = {
    "utils": set(),
    "dataio": {"utils"},
    "models": {"utils"},
    "loss": {"utils"},
    "clustering": {"utils", "dataio"},
    "scoring": {"utils", "dataio", "models"},
    "training": {"utils", "dataio", "models", "loss"},
    "demo": {"utils", "dataio", "models"},
    "scripts": {"utils", "dataio", "models", "loss", "clustering", "scoring", "training"},
    "rounds": {"utils", "dataio", "models", "loss", "clustering", "scoring", "training", "demo"},
}
ROOT_MODULES = {name[:-3] for name in os.listdir(REPO_ROOT) if name.endswith(".py")}
FIRST_PARTY = set(ALLOWED) | ROOT_MODULES | {"bench", "tests"}

# docs/method.md §9: module path -> {name: parameter names its signature starts with}
PUBLIC_INTERFACE = {
    "tuneThreshold": {"tuneThresholdfromScore": ["scores", "labels", "target_fa", "target_fr"],
                      "ComputeErrorRates": ["scores", "labels"],
                      "ComputeMinDcf": ["fnrs", "fprs", "thresholds", "p_target", "c_miss", "c_fa"]},
    "DatasetLoader": {"loadWAV": ["filename", "max_frames", "evalmode", "num_eval"],
                      "AugmentWAV": ["musan_path", "rir_path", "max_frames"],
                      "train_dataset_loader": ["train_list", "augment", "musan_path", "rir_path", "max_frames",
                                               "train_path"],
                      "train_dataset_sampler": ["data_source", "nPerSpeaker", "max_seg_per_spk", "batch_size",
                                                "distributed", "seed"],
                      "test_dataset_loader": ["test_list", "test_path", "eval_frames", "num_eval"]},
    "loss.aamsoftmax": {"LossFunction": ["nOut", "nClasses", "margin", "scale", "easy_margin"]},
    "loss": {"LGL_threshold_update_gmm": ["loss_vals_path"]},
    "models.Baseline.Spk_Encoder": {"MainModel": []},
    "SpeakerNet": {"SpeakerNet": [], "ModelTrainer": ["speaker_model"]},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_INTERFACE))
def test_public_names_import_from_the_original_paths(module_name):
    module = importlib.import_module(module_name)
    for name, leading in PUBLIC_INTERFACE[module_name].items():
        value = getattr(module, name)
        parameters = list(inspect.signature(value).parameters)
        assert parameters[:len(leading)] == leading, (module_name, name, parameters)


def test_sampler_and_loss_keep_their_original_methods():
    import DatasetLoader
    import loss.aamsoftmax

    assert callable(DatasetLoader.train_dataset_sampler.set_epoch)
    assert list(inspect.signature(loss.aamsoftmax.LossFunction.forward).parameters) == [
        "self", "x", "x_clean", "label", "epoch"]


def imported_first_party(path: str) -> Set[str]:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & FIRST_PARTY


def test_no_module_imports_from_a_layer_above_it():
    violations = []
    for package, allowed in ALLOWED.items():
        for folder, _, files in os.walk(os.path.join(REPO_ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    above = imported_first_party(path) - allowed - {package}
                    violations += [f"{os.path.relpath(path, REPO_ROOT)} imports {sorted(above)}"] if above else []
    assert not violations, "\n".join(violations)


def test_the_root_holds_entry_points_and_the_original_modules_only():
    assert ROOT_MODULES <= {"trainSpeakerNet", "trainSpeakerNet_Eval", "pseudo_labeling", "run_rounds", "trainDINO",
                            "SpeakerNet", "DatasetLoader", "tuneThreshold"}
