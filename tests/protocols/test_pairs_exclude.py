"""LFWPairs(exclude_people=...): pairs with a listed person are dropped (View-2 of the people not trained on)."""

import numpy as np
import pytest
from PIL import Image

from facelearn.protocols.pairs import LFWPairs

PEOPLE = ["Ann_A", "Bob_B", "Cid_C", "Dee_D"]
# 2 folds x (2 matched + 2 mismatched)
PAIRS = """2\t2
Ann_A\t1\t2
Bob_B\t1\t2
Ann_A\t1\tCid_C\t1
Bob_B\t2\tDee_D\t1
Cid_C\t1\t2
Dee_D\t1\t2
Cid_C\t2\tDee_D\t2
Bob_B\t1\tCid_C\t2
"""


@pytest.fixture()
def tiny_lfw(tmp_path):
    rng = np.random.default_rng(0)
    for name in PEOPLE:
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in (1, 2):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "img" / name / f"{name}_{i:04d}.jpg")
    (tmp_path / "pairs.txt").write_text(PAIRS)
    return tmp_path


def test_exclude_people_drops_every_pair_with_a_listed_person(tiny_lfw, caplog):
    (tiny_lfw / "trained.txt").write_text("# trained on\nbob b\n\n")   # names compared like identity_key
    full = LFWPairs(str(tiny_lfw / "pairs.txt"), str(tiny_lfw / "img")).load(16)
    caplog.set_level("INFO")
    kept = LFWPairs(str(tiny_lfw / "pairs.txt"), str(tiny_lfw / "img"),
                    exclude_people=str(tiny_lfw / "trained.txt"))
    assert kept.identities() == {"Ann_A", "Cid_C", "Dee_D"}
    s = kept.load(16)
    assert "drops 3 of 8 pairs (kept: 3 matched, 2 mismatched)" in caplog.text
    assert s.issame.tolist() == [True, False, True, True, False] and s.folds.tolist() == [0, 0, 1, 1, 1]
    assert len(full.pairs) == 8 and len(s.images) == 6     # Bob's two images are not decoded


def test_exclude_people_errors_name_the_option(tiny_lfw):
    with pytest.raises(FileNotFoundError, match="exclude_people: .*nope.txt does not exist"):
        LFWPairs(str(tiny_lfw / "pairs.txt"), str(tiny_lfw / "img"), exclude_people=str(tiny_lfw / "nope.txt"))
    (tiny_lfw / "all.txt").write_text("\n".join(PEOPLE) + "\n")
    with pytest.raises(ValueError, match="leaves no matched pair"):
        LFWPairs(str(tiny_lfw / "pairs.txt"), str(tiny_lfw / "img"), exclude_people=str(tiny_lfw / "all.txt")).load(16)
