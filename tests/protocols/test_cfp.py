"""CFP: landmark crops by hand, protocol parsing on a tiny fixture, bad input, the real set and its LFW overlap."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from facelearn.protocols.cfp import CFPPairs, landmark_box
from facelearn.data.records import IdentityFolder
from facelearn.data.splits import check_disjoint, exclude_identities, identity_key

CFP_ROOT = Path(os.environ.get("FACELEARN_CFP", ROOT.parent / "shared" / "data" / "cfp"))


def test_landmark_box_by_hand():
    pts = np.zeros((30, 2))
    pts[:, 0] = np.linspace(10, 30, 30)  # annotated half from x=10 to x=30
    pts[:, 1] = np.linspace(20, 60, 30)
    pts[8] = (30, 60)                    # chin on the midline
    # frontal: mirrored about x=30 -> x in [10, 50], y in [20, 60]: centre (30, 40), side 40 * 1.5
    assert landmark_box(pts, True, 1.5) == pytest.approx((0, 10, 60, 70))
    # profile: the box of the points as they are: x [10, 30], y [20, 60] -> centre (20, 40), side 40 * 1.25
    assert landmark_box(pts, False, 1.25) == pytest.approx((-5, 15, 45, 65))


def test_identity_key_treats_spaces_and_underscores_alike():
    assert identity_key("Aaron Rodgers") == identity_key("Aaron_Rodgers") == identity_key("aaron  rodgers")
    assert identity_key("Jean-Claude Van Damme") == identity_key("Jean_Claude_Van_Damme")
    assert identity_key("Aaron Rodgers") != identity_key("Aaron Rodger")
    assert identity_key("Ziyi Zhang") == identity_key("Zhang_Ziyi")  # CFP and LFW order the parts differently
    with pytest.raises(ValueError, match="1 identities are in both"):
        check_disjoint({"Aaron_Rodgers", "Zed"}, {"Aaron Rodgers"}, "cfp_fp")


def make_fixture(root: Path, people: int = 2) -> Path:
    """A CFP-layout folder: `people` people, 2 frontal + 1 profile each, 1 fold of FF and FP pairs."""
    (root / "Data").mkdir(parents=True)
    (root / "Data" / "list_name.txt").write_text("".join(f"Person {k}\n" for k in range(1, people + 1)))
    flist, plist = [], []
    rng = np.random.default_rng(0)
    for k in range(1, people + 1):
        for view, n in (("frontal", 2), ("profile", 1)):
            for i in range(1, n + 1):
                img = root / "Data" / "Images" / f"{k:03d}" / view / f"{i:02d}.jpg"
                img.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (60, 50, 3), dtype=np.uint8)).save(img)
                fid = root / "Data" / "Fiducials" / f"{k:03d}" / view / f"{i:02d}.txt"
                fid.parent.mkdir(parents=True, exist_ok=True)
                fid.write_text("".join(f"{10 + j},{10 + j}\n" for j in range(30)))
                (flist if view == "frontal" else plist).append(f"../Data/Images/{k:03d}/{view}/{i:02d}.jpg")
    proto = root / "Protocol"
    proto.mkdir()
    (proto / "Pair_list_F.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(flist, 1)))
    (proto / "Pair_list_P.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(plist, 1)))
    for k in range(1, 11):
        for split, same, diff in (("FF", "1,2\n3,4\n", "1,3\n2,4\n"), ("FP", "1,1\n3,2\n", "1,2\n4,1\n")):
            d = proto / "Split" / split / f"{k:02d}"
            d.mkdir(parents=True)
            (d / "same.txt").write_text(same)
            (d / "diff.txt").write_text(diff)
    return root


def test_fixture_protocols(tmp_path):
    root = make_fixture(tmp_path / "cfp")
    ff = CFPPairs(str(root), "FF").load(16)
    assert len(ff.pairs) == 40 and ff.issame.sum() == 20 and np.bincount(ff.folds).tolist() == [4] * 10
    assert len(ff.images) == 4 and ff.identities == {"Person 1", "Person 2"}
    fp = CFPPairs(str(root), "FP").load(16)
    assert len(fp.images) == 5  # frontal 1, 3, 4 and profile 1, 2 are used
    # FP pair (1,1): frontal 1 of person 1 vs profile 1 of person 1 -> same
    assert fp.issame[0] and not fp.issame[2]


def test_bad_input_is_named(tmp_path):
    root = make_fixture(tmp_path / "cfp")
    with pytest.raises(ValueError, match="protocol must be one of"):
        CFPPairs(str(root), "PP")
    (root / "Protocol" / "Split" / "FF" / "03" / "same.txt").write_text("1,3\n")
    with pytest.raises(ValueError, match=r"fold 3: pair 1,3 is listed as same but names different people"):
        CFPPairs(str(root), "FF").load(16)
    (root / "Protocol" / "Split" / "FF" / "03" / "same.txt").write_text("1;2\n")
    with pytest.raises(ValueError, match=r"03/same.txt:1: expected 'i,j'"):
        CFPPairs(str(root), "FF").load(16)
    (root / "Protocol" / "Split" / "FF" / "03" / "same.txt").write_text("1,9\n")
    with pytest.raises(ValueError, match="index out of range"):
        CFPPairs(str(root), "FF").load(16)
    (root / "Protocol" / "Pair_list_F.txt").write_text("1 ../../../etc/hostname\n")
    with pytest.raises(ValueError, match="outside the CFP root"):
        CFPPairs(str(root), "FF").load(16)
    with pytest.raises(FileNotFoundError, match="FACELEARN_CFP"):
        CFPPairs(str(tmp_path / "nowhere"), "FP").load(16)


@pytest.fixture(scope="module")
def cfp_root():
    if not (CFP_ROOT / "Protocol" / "Pair_list_F.txt").is_file():
        pytest.skip(f"CFP not found at {CFP_ROOT} (../shared absent)")
    return CFP_ROOT


@pytest.mark.parametrize("protocol,n_images", [("FF", 5000), ("FP", None)])
def test_real_cfp_protocol_counts(cfp_root, protocol, tmp_path, n_images):
    ps = CFPPairs(str(cfp_root), protocol).load(16, str(tmp_path))
    assert len(ps.pairs) == 7000 and ps.issame.sum() == 3500
    assert np.bincount(ps.folds).tolist() == [700] * 10
    assert len(ps.identities) == 500
    if n_images:
        assert len(ps.images) <= n_images
    else:  # FP: every pair is one frontal and one profile image
        assert len(ps.images) > 5000 - 1 - 2000


def test_cfp_lfw_overlap_is_177_and_excluded(cfp_root, lfw_root):
    """172 people match with spaces = underscores (the data README's count); 4 more differ only in case
    ("Lebron James" / "LeBron_James", "Leonardo Dicaprio", "John Mcenroe", "Queen Elizabeth Ii") and one in the
    order of the name's parts ("Ziyi Zhang" / "Zhang_Ziyi"): 177 in all."""
    cfp_names = CFPPairs(str(cfp_root), "FP").identities()
    lfw_people = {p.name for p in (lfw_root / "lfw-deepfunneled").iterdir() if p.is_dir()}
    assert len({n.replace(" ", "_") for n in cfp_names} & lfw_people) == 172
    assert len({identity_key(n) for n in cfp_names} & {identity_key(n) for n in lfw_people}) == 177
    # The hard check catches the raw overlap; exclusion removes exactly those people.
    with pytest.raises(ValueError, match="177 identities are in both"):
        check_disjoint(lfw_people, cfp_names, "cfp_fp")
    records = IdentityFolder(str(lfw_root / "lfw-deepfunneled")).load(64)
    kept = exclude_identities(records, cfp_names)
    assert len(records.identity_set) - len(kept.identity_set) == 177
    check_disjoint(kept.identity_set, cfp_names, "cfp_fp")
