"""Datasets, splits, identity exclusion, pair sets and every bad-input error."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from facelearn.data.datamodule import FaceDataModule
from facelearn.data.images import FaceCrop, decode_image, decode_images
from facelearn.protocols.pairs import BinPairs, LFWPairs, SyntheticPairs, parse_pairs_file
from facelearn.data.records import IdentityFolder, ImageList
from facelearn.data.splits import Deep, Shallow, check_disjoint, exclude_identities
from facelearn.data.synthetic import SyntheticFaces
from facelearn.data.transforms import BatchAugment, normalize


def write_image(path: Path, seed: int, mode: str = "RGB", size: int = 40, fmt: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)
    return arr


@pytest.fixture
def folder(tmp_path) -> Path:
    """root/<person>/<person>_NNNN.png: 5 people with 1, 2, 3, 4, 2 images (LFW naming)."""
    root = tmp_path / "faces"
    for p, n in zip(["ann", "bob", "cat", "dan", "eve"], [1, 2, 3, 4, 2]):
        for i in range(1, n + 1):
            write_image(root / p / f"{p}_{i:04d}.png", seed=hash((p, i)) % 1000)
    return root


def test_identity_folder_and_splits(folder):
    rec = IdentityFolder(str(folder)).load(32)
    assert len(rec) == 12 and rec.identity_set == {"ann", "bob", "cat", "dan", "eve"}
    shallow = Shallow(2, seed=0)
    s = shallow(rec)
    assert len(s) == 8 and sorted(np.unique(s.identities, return_counts=True)[1]) == [2, 2, 2, 2]
    assert shallow.stats == {"identities": 4, "images": 8, "dropped_identities": 1}
    assert s.paths == Shallow(2, seed=0)(rec).paths  # seeded choice
    assert len(Deep()(rec)) == 12 and len(Deep(min_images_per_identity=3)(rec)) == 7


def test_shallow_split_with_a_maximum_is_disjoint_from_the_deep_rest(folder):
    """people with 2-3 images give 2 each (bob, cat, eve); dan (4) goes to the deep split of >= 4; ann (1) to none"""
    rec = IdentityFolder(str(folder)).load(32)
    shallow = Shallow(2, seed=0, max_images_per_identity=3)
    s = shallow(rec)
    assert s.identity_set == {"bob", "cat", "eve"} and len(s) == 6
    assert shallow.stats == {"identities": 3, "images": 6, "dropped_identities": 2}
    deep = Deep(min_images_per_identity=4)(rec)
    assert deep.identity_set == {"dan"} and not s.identity_set & deep.identity_set
    assert Shallow(2, seed=0, max_images_per_identity=None)(rec).paths == Shallow(2, seed=0)(rec).paths
    with pytest.raises(ValueError, match="max_images_per_identity=1 must be >= split.images_per_identity=2"):
        Shallow(2, max_images_per_identity=1)


def test_exclusion_and_disjoint_check(folder):
    rec = IdentityFolder(str(folder)).load(32)
    kept = exclude_identities(rec, {"cat", "zed"})
    assert "cat" not in kept.identity_set and len(kept) == 9
    with pytest.raises(ValueError, match="both the training data and benchmark 'lfw'.*cat"):
        check_disjoint(rec.identity_set, {"cat"}, "lfw")


def test_image_list(folder, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("# comment\nbob/bob_0001.png 7\n\ncat/cat_0002.png 9\n")
    rec = ImageList(str(folder), str(lst)).load(32)
    assert rec.identities.tolist() == ["7", "9"]


def test_bad_list_line_names_file_and_line(folder, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("bob/bob_0001.png 7\nthis line has three\n")
    with pytest.raises(ValueError, match=r"train.txt:2: expected 'relative/path label'"):
        ImageList(str(folder), str(lst)).load(32)
    lst.write_text("bob/bob_0009.png 7\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt:1: image .*bob_0009.png does not exist"):
        ImageList(str(folder), str(lst)).load(32)


def test_empty_folder_errors(tmp_path):
    (tmp_path / "empty" / "person").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        IdentityFolder(str(tmp_path / "empty")).load(32)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        IdentityFolder(str(tmp_path / "missing")).load(32)


def test_stray_file_is_reported_not_skipped(folder):
    (folder / "ann" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not images.*notes.txt"):
        IdentityFolder(str(folder)).load(32)
    assert len(IdentityFolder(str(folder), ignore_other_files=True).load(32)) == 12


def test_truncated_and_unreadable_images(tmp_path):
    good = tmp_path / "a.jpg"
    write_image(good, 0, size=64, fmt="JPEG")
    data = good.read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode image .*truncated.jpg"):
        decode_image(bad, FaceCrop(32))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot decode image .*junk.png"):
        decode_images([str(junk)], FaceCrop(32))


def test_color_modes_become_rgb_and_center_crop(tmp_path):
    for mode in ["L", "RGBA", "P"]:
        write_image(tmp_path / f"{mode}.png", 1, mode=mode)
        out = decode_image(tmp_path / f"{mode}.png", FaceCrop(16))
        assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    # centre crop keeps the middle: a 40px image whose centre 20px are white.
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[10:30, 10:30] = 255
    Image.fromarray(arr).save(tmp_path / "c.png")
    assert decode_image(tmp_path / "c.png", FaceCrop(10, center_crop=20)).min() == 255


def test_decode_cache_roundtrip(folder, tmp_path):
    paths = [str(p) for p in sorted(folder.rglob("*.png"))]
    a = decode_images(paths, FaceCrop(24), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    b = decode_images(paths, FaceCrop(24), tmp_path / "cache")
    assert np.array_equal(a, b)


def test_synthetic_is_deterministic_with_families():
    a = SyntheticFaces(num_identities=8, images_per_identity=[2, 4], seed=3).load(32)
    b = SyntheticFaces(num_identities=8, images_per_identity=[2, 4], seed=3).load(32)
    c = SyntheticFaces(num_identities=8, images_per_identity=[2, 4], seed=4).load(32)
    assert np.array_equal(a.images, b.images) and a.identities.tolist() == b.identities.tolist()
    assert not a.identity_set & c.identity_set  # another seed = other people
    counts = np.unique(a.identities, return_counts=True)[1]
    assert counts.min() >= 2 and counts.max() <= 4
    # Look-alikes: templates within a family correlate more than across families.
    t = SyntheticFaces(num_identities=64, family_size=4, family_similarity=0.8, seed=0).templates(32)
    t = torch.nn.functional.normalize((t - t.mean(0)).flatten(1), dim=1)
    sim = t @ t.T
    fam = torch.arange(64) // 4
    same = (fam[:, None] == fam[None]) & ~torch.eye(64, dtype=bool)
    assert sim[same].mean() > sim[fam[:, None] != fam[None]].mean() + 0.3


def test_synthetic_pairs_are_held_out_and_balanced():
    ps = SyntheticPairs(num_identities=20, num_pairs=50, seed=99).load(32)
    assert ps.issame.sum() == 50 and (~ps.issame).sum() == 50
    assert not ps.identities & SyntheticFaces(num_identities=20, seed=0).load(32).identity_set
    assert set(np.unique(ps.folds)) == set(range(10))


def write_lfw_like(tmp_path: Path, view1: bool = True) -> tuple[Path, Path]:
    root = tmp_path / "lfw"
    people = {f"P{i}": 3 for i in range(6)}
    for p, n in people.items():
        for i in range(1, n + 1):
            write_image(root / p / f"{p}_{i:04d}.png", seed=hash((p, i)) % 997)
    lines = ["3"] + [f"P{i} 1 {2 + i % 2}" for i in range(3)] + [f"P{i} 1 P{i + 3} 2" for i in range(3)]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs


def test_pairs_file_parsing_and_errors(tmp_path):
    root, pairs = write_lfw_like(tmp_path)
    parsed, issame, folds = parse_pairs_file(str(pairs))
    assert parsed[0] == ("P0", 1, "P0", 2) and parsed[3] == ("P0", 1, "P3", 2)
    assert issame.tolist() == [True] * 3 + [False] * 3
    bad = tmp_path / "bad.txt"
    bad.write_text("2\nP0 1 2\nP1 x 2\nP0 1 P3 2\nP1 1 P4 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: expected 'name i j' \(matched\)"):
        parse_pairs_file(str(bad))
    bad.write_text("3\nP0 1 2\n")
    with pytest.raises(ValueError, match="announces 6 pairs, the file has 1"):
        parse_pairs_file(str(bad))
    missing = tmp_path / "missing.txt"
    missing.write_text("1\nP0 1 9\nP0 1 P3 2\n")
    with pytest.raises(FileNotFoundError, match=r"missing.txt:2: image .*P0_0009.png does not exist"):
        LFWPairs(str(missing), str(root), extension="png").load(32)


def test_view2_folds_follow_the_file(tmp_path):
    lines = ["2 1", "A 1 2", "A 1 B 1", "C 1 2", "C 1 D 1"]
    f = tmp_path / "p.txt"
    f.write_text("\n".join(lines))
    _, issame, folds = parse_pairs_file(str(f))
    assert folds.tolist() == [0, 0, 1, 1] and issame.tolist() == [True, False, True, False]


def test_bin_equals_folder_plus_pairs(tmp_path):
    """A .bin made from the same image files (in pairs.txt order, as insightface builds lfw.bin) scores exactly
    like the folder + a View-2 pairs file (10 folds)."""
    from omegaconf import OmegaConf
    from facelearn.eval.embedding import evaluate_set
    from facelearn.methods.conventional import ConventionalModule
    from facelearn.nn.backbones import SmallFaceNet
    from facelearn.nn.heads import CosFace

    root, _ = write_lfw_like(tmp_path)
    combos = [(1, 2), (1, 3), (2, 3)]
    lines = ["10 1"]
    for k in range(10):
        a, b = combos[k % 3]
        lines += [f"P{k % 6} {a} {b}", f"P{k % 6} {a} P{(k + 1) % 6} {b}"]
    pairs = tmp_path / "pairs10.txt"
    pairs.write_text("\n".join(lines) + "\n")
    parsed, issame, folds = parse_pairs_file(str(pairs))
    assert folds.tolist() == np.repeat(np.arange(10), 2).tolist()
    bins = []
    for n1, i1, n2, i2 in parsed:
        bins += [(root / n1 / f"{n1}_{i1:04d}.png").read_bytes(), (root / n2 / f"{n2}_{i2:04d}.png").read_bytes()]
    with open(tmp_path / "set.bin", "wb") as fh:
        pickle.dump((bins, issame.tolist()), fh, protocol=4)
    torch.manual_seed(0)
    module = ConventionalModule(SmallFaceNet(embedding_size=16, image_size=32, widths=(4, 8, 8, 8)),
                                CosFace(16, 4), optimizer=None).eval()
    from_folder = LFWPairs(str(pairs), str(root), extension="png").load(32)
    from_bin = BinPairs(str(tmp_path / "set.bin")).load(32)
    assert len(from_bin.images) == 40 and len(from_folder.images) < 40  # the folder set de-duplicates images
    a = evaluate_set(module, from_folder, fars=(0.5,))
    b = evaluate_set(module, from_bin, fars=(0.5,))
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6, nan_ok=True), k
    (tmp_path / "broken.bin").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not an insightface .bin"):
        BinPairs(str(tmp_path / "broken.bin")).load(32)


def test_datamodule_exclusion(tmp_path):
    root, _ = write_lfw_like(tmp_path)
    pairs = tmp_path / "few.txt"
    pairs.write_text("1\nP0 1 2\nP0 1 P1 2\n")
    spec = {"lfw": LFWPairs(str(pairs), str(root), extension="png")}
    dm = FaceDataModule(train=IdentityFolder(str(root)), split=Deep(), benchmarks=spec, image_size=32,
                        batch_size=2, cache_dir=str(tmp_path / "cache"))
    dm.setup_train()  # training side only (what facelearn.evaluate uses): exclusions applied, nothing decoded
    assert dm.num_classes == 4 and dm.benchmark_sets == {}
    dm.setup("fit")
    assert dm.num_classes == 4 and "P0" not in dm.train_dataset.class_names
    assert dm.benchmark_sets["lfw"].images.shape[1:] == (3, 32, 32)
    dm2 = FaceDataModule(train=IdentityFolder(str(root)), split=Deep(), benchmarks=spec, image_size=32,
                         batch_size=2, exclude_benchmark_identities=False)
    with pytest.raises(ValueError, match="both the training data and benchmark 'lfw'"):
        dm2.setup("fit")


def test_batch_augment_and_normalize():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    assert normalize(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]
    flipped = BatchAugment(flip_prob=1.0)(x)
    assert torch.equal(flipped, normalize(x).flip(3))
    same = BatchAugment(flip_prob=0.0, crop_padding=0)(x)
    assert torch.equal(same, normalize(x))
    cropped = BatchAugment(flip_prob=0.0, crop_padding=2)(x)
    assert cropped.shape == (2, 3, 4, 4)


def test_jpeg_fast_path_gives_pillows_pixels(tmp_path):
    """open_rgb decodes JPEGs with simplejpeg: the same pixels as Pillow for RGB, grayscale and progressive files
    (and LFW's and CFP's own when ../shared is there); CMYK and non-JPEG files go to Pillow; a truncated JPEG is
    still an error naming the file."""
    import glob

    from facelearn.data import images as images_mod
    from facelearn.data.images import open_rgb
    assert images_mod._simplejpeg is not None
    rng = np.random.default_rng(0)
    files = []
    for name, mode, kw in (("rgb", "RGB", {}), ("gray", "L", {}), ("prog", "RGB", {"progressive": True}),
                           ("cmyk", "CMYK", {})):
        shape = (37, 29) if mode == "L" else (37, 29, len(mode))
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(tmp_path / f"{name}.jpg", **kw)
        files.append(tmp_path / f"{name}.jpg")
    files += sorted(glob.glob(str(ROOT.parent / "shared" / "data" / "lfw" / "lfw-deepfunneled" / "A*" / "*.jpg")))[:40]
    for f in files:
        with Image.open(f) as im:
            assert np.array_equal(np.asarray(open_rgb(f)), np.asarray(im.convert("RGB"))), f
    assert images_mod._jpeg_fast((tmp_path / "cmyk.jpg").read_bytes()) is None  # Pillow's CMYK conversion decides
    data = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot decode image .*cut.jpg"):
        open_rgb(tmp_path / "cut.jpg")
