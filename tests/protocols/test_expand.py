"""What a benchmark entry stands for and the name it is reported under (facelearn.protocols.expand_protocols):
benchmark=insightface_val (BinFolder: every standard .bin of a folder, each under its own name) and name=."""

import logging
import pickle

import pytest

from facelearn.protocols import expand_protocols
from facelearn.protocols.pairs import BinFolder, BinPairs


def write_bins(root, names):
    for n in names:
        with open(root / f"{n}.bin", "wb") as fh:
            pickle.dump(([], []), fh)


def test_present_targets_become_named_sets_and_absent_ones_are_logged(tmp_path, caplog):
    write_bins(tmp_path, ["agedb_30", "lfw", "extra"])
    with caplog.at_level(logging.INFO):
        sets = expand_protocols({"insightface_val": BinFolder(str(tmp_path))})
    assert list(sets) == ["lfw", "agedb_30"]  # the configured order; extra.bin is not a target
    assert all(isinstance(s, BinPairs) and s.name == n for n, s in sets.items())
    assert "not in" in caplog.text and "cfp_fp, cfp_ff, calfw, cplfw, vgg2_fp" in caplog.text


def test_a_folder_without_any_target_or_no_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmark val: none of lfw.bin, cfp_fp.bin is in"):
        BinFolder(str(tmp_path), targets=["lfw", "cfp_fp"]).expand("val")
    with pytest.raises(FileNotFoundError, match=r"benchmark root .*nowhere is not a folder"):
        BinFolder(str(tmp_path / "nowhere")).expand("val")


def test_a_set_configured_twice_is_refused(tmp_path):
    write_bins(tmp_path, ["lfw"])
    with pytest.raises(ValueError, match=r"its set 'lfw' is configured twice"):
        expand_protocols({"lfw": BinPairs(str(tmp_path / "lfw.bin")), "val": BinFolder(str(tmp_path))})


def test_a_given_name_is_the_reported_name(tmp_path):
    write_bins(tmp_path, ["lfw"])
    sets = expand_protocols({"bin": BinPairs(str(tmp_path / "lfw.bin"), name="mine"), "b2": BinPairs("x.bin")})
    assert list(sets) == ["mine", "b2"]


def test_monitor_and_validation_use_the_reported_names(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from facelearn.cli.validate import reported_benchmarks
    write_bins(tmp_path, ["lfw", "agedb_30"])
    GlobalHydra.instance().clear()
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("train", overrides=["benchmark=[lfw_devtest,insightface_val]", "benchmark.lfw_devtest.name=x",
                                          f"paths.dataset_dir={tmp_path}"])
    assert reported_benchmarks(cfg.benchmark) == ["x", "lfw", "agedb_30"]


def test_every_protocol_is_reported_under_its_name_or_its_key(tmp_path):
    """One rule for every benchmark family: ``name=`` replaces the config key in results, the monitor and the
    train-time check of the monitor (cli.validate.reported_benchmarks goes through expand_protocols as well)."""
    from facelearn.protocols.cfp import CFPPairs
    from facelearn.protocols.ijb import IJBTemplates
    from facelearn.protocols.oneshot import IdentificationFolder, OneShotSplit
    from facelearn.protocols.pairs import LFWPairs, SyntheticPairs
    made = {LFWPairs: dict(pairs_file="p.txt", image_root="img"), CFPPairs: dict(root=str(tmp_path)),
            BinPairs: dict(path="x.bin"), SyntheticPairs: {}, OneShotSplit: dict(source=None),
            IdentificationFolder: dict(root="r"), IJBTemplates: dict(root="r")}
    for cls, kw in made.items():
        assert list(expand_protocols({"key": cls(**kw)})) == ["key"], cls
        assert list(expand_protocols({"key": cls(**kw, name="mine")})) == ["mine"], cls


def test_the_monitor_check_uses_the_name_results_use():
    from omegaconf import OmegaConf

    from facelearn.cli.validate import reported_benchmarks
    cfg = OmegaConf.create({"oneshot": {"_target_": "facelearn.protocols.oneshot.OneShotSplit", "source": None,
                                        "name": "os1"},
                            "synthetic": {"_target_": "facelearn.protocols.pairs.SyntheticPairs"}})
    assert reported_benchmarks(cfg) == ["os1", "synthetic"]
