"""Real LFW (../shared/data/lfw): protocol counts from its README; skipped when ../shared is absent."""

import numpy as np

from facelearn.protocols.pairs import LFWPairs, parse_pairs_file
from facelearn.data.records import IdentityFolder
from facelearn.data.splits import Deep, Shallow, check_disjoint, exclude_identities


def test_view1_protocol_counts(lfw_root):
    test = LFWPairs(str(lfw_root / "pairsDevTest.txt"), str(lfw_root / "lfw-deepfunneled"))
    _, issame, folds = parse_pairs_file(str(lfw_root / "pairsDevTest.txt"))
    assert len(issame) == 1000 and issame.sum() == 500
    assert np.bincount(folds).tolist() == [100] * 10  # 50 matched + 50 mismatched per fold
    rec = IdentityFolder(str(lfw_root / "lfw-deepfunneled")).load(64)
    assert len(rec) == 13233 and len(rec.identity_set) == 5749
    train = exclude_identities(rec, test.identities())
    check_disjoint(train.identity_set, test.identities(), "lfw_devtest")
    deep = Deep()(train)
    # 4,785: LFW holds one person under two names (Sung_Hong_Choi, in pairsDevTest, and Choi_Sung-hong)
    assert (len(deep.identity_set), len(deep)) == (4785, 10487)
    shallow = Shallow(2, seed=0)(train)
    assert (len(shallow.identity_set), len(shallow)) == (1261, 2522)
    assert len(Deep(min_images_per_identity=2)(train)) == 6963


def test_view2_pairs_have_ten_disjoint_folds(lfw_root):
    pairs, issame, folds = parse_pairs_file(str(lfw_root / "pairs.txt"))
    assert len(pairs) == 6000 and np.bincount(folds).tolist() == [600] * 10
    people = [{p[0] for p, f in zip(pairs, folds) if f == k} | {p[2] for p, f in zip(pairs, folds) if f == k}
              for k in range(10)]
    assert all(not (people[a] & people[b]) for a in range(10) for b in range(a + 1, 10))
