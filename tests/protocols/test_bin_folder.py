"""benchmark=insightface_val (BinFolder): every standard .bin of a folder, each under its own name."""

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
