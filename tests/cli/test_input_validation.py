"""Bad benchmark and list input stops with an error naming the file, line and what was expected (issue 11, item 3)."""

import pickle

import numpy as np
import pytest
from PIL import Image

from facelearn.protocols.pairs import LFWPairs, PairSet, load_bin_pairs
from facelearn.data.records import ImageList


def img(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def test_pair_set_needs_both_classes():
    images = np.zeros((2, 3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="bench: needs matched and mismatched pairs, got 0 matched and 0"):
        PairSet("bench", images, np.zeros((0, 2), np.int64), np.zeros(0, bool), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="got 1 matched and 0 mismatched"):
        PairSet("bench", images, np.array([[0, 1]]), np.array([True]), np.array([0]))


def test_pairs_file_zero_pairs_self_pair_and_escaping_names(tmp_path):
    root = tmp_path / "imgs"
    for name in ("A", "B"):
        for i in (1, 2):
            img(root / name / f"{name}_{i:04d}.jpg", i)
    f = tmp_path / "pairs.txt"
    f.write_text("0\n")
    with pytest.raises(ValueError, match="needs matched and mismatched pairs"):
        LFWPairs(str(f), str(root)).load(8)
    f.write_text("1\nA 1 1\nA 1 B 1\n")
    with pytest.raises(ValueError, match=r"pairs.txt:2: a pair of an image with itself"):
        LFWPairs(str(f), str(root)).load(8)
    f.write_text("1\nA 1 2\n../x 1 B 1\n")
    with pytest.raises(ValueError, match=r"pairs.txt:3: '../x' is not a person's folder name"):
        LFWPairs(str(f), str(root)).load(8)


def test_bin_with_empty_lists(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(pickle.dumps(([], [])))
    with pytest.raises(ValueError, match="needs matched and mismatched pairs"):
        load_bin_pairs(str(path), 8)


@pytest.mark.parametrize("lines,match", [
    (["a/1.jpg 0", "/etc/hostname 1"], r"list.txt:2: '/etc/hostname' is not a path inside the data root"),
    (["a/1.jpg 0", "../outside.jpg 1"], r"list.txt:2: '../outside.jpg' is not a path inside"),
    (["a/1.jpg 0", "a/2.jpg -1"], r"list.txt:2: label '-1' is negative"),
    (["a/1.jpg 0", "a/2.jpg abc"], r"integer labels \(first on line 1\) and name labels \(first on line 2\)"),
    (["a/1.jpg 0", "a/1.jpg 1"], r"list.txt:2: image 'a/1.jpg' is listed under label '0' and '1' \(first on line 1\)"),
    (["a/1.jpg 0", "a/./1.jpg 0"], r"list.txt:2: image 'a/./1.jpg' is listed again \(first on line 1\)"),
])
def test_list_file_entries_are_checked(tmp_path, lines, match):
    root = tmp_path / "root"
    img(root / "a" / "1.jpg")
    img(root / "a" / "2.jpg", 1)
    img(tmp_path / "outside.jpg", 2)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        ImageList(str(root), str(lst)).load(8)


def test_good_list_file_still_loads(tmp_path):
    root = tmp_path / "root"
    img(root / "a" / "1.jpg")
    img(root / "a" / "2.jpg", 1)
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\na/1.jpg alice\n\na/2.jpg bob\n")
    rec = ImageList(str(root), str(lst)).load(8)
    assert rec.identities.tolist() == ["alice", "bob"]


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=abc", "data.batch_size='abc': expected an integer"),  # the signature check
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: expected an integer >= 1"),
    ("trainer.precision=bf16-true", "trainer.precision=bf16-true is not supported on trainer.accelerator=cpu"),
    ("optimizer.lr=0", "optimizer.lr=0: expected a number > 0"),
    ("benchmark=none", "monitor=bench/synthetic/accuracy names benchmark 'synthetic', which is not configured"),
])
def test_config_errors_name_the_option_before_training(override, message):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from facelearn.cli.validate import validate_train_config
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="facelearn.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+experiment=conventional_shallow", override])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_train_config(cfg)


def test_missing_backbone_weights_are_named_before_the_data(tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from facelearn.cli.validate import validate_train_config
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="facelearn.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["backbone=iresnet18",
                                                      f"backbone.weights={tmp_path / 'backbone.pth'}"])
    with pytest.raises(FileNotFoundError, match=r"backbone.weights: .*backbone.pth does not exist"):
        validate_train_config(cfg)


def test_resume_from_a_non_checkpoint_is_named(tmp_path):
    from facelearn.cli.validate import check_checkpoint_file
    bad = tmp_path / "notes.ckpt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=f"ckpt_path: {bad} is not a loadable facelearn checkpoint"):
        check_checkpoint_file(str(bad))
    import torch
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="is not a facelearn checkpoint"):
        check_checkpoint_file(str(tmp_path / "other.ckpt"))


def test_corrupt_cache_file_is_named_and_rebuilt(tmp_path, caplog):
    import logging

    from facelearn.data.images import FaceCrop, decode_images
    paths = []
    for i in range(3):
        img(tmp_path / "imgs" / f"{i}.jpg", i)
        paths.append(str(tmp_path / "imgs" / f"{i}.jpg"))
    cache = tmp_path / "cache"
    first = decode_images(paths, FaceCrop(8), cache)
    (cache_file,) = cache.glob("*.npy")
    cache_file.write_bytes(cache_file.read_bytes()[:20])  # truncated: "EOF: reading array header"
    with caplog.at_level(logging.WARNING):
        again = decode_images(paths, FaceCrop(8), cache)
    assert str(cache_file) in caplog.text and "rebuilding" in caplog.text
    assert np.array_equal(first, again)
    assert np.array_equal(np.load(cache_file), first)  # the rebuilt cache is good


def test_hostile_bin_is_refused_without_running_code(tmp_path):
    from conftest import FilePayload
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"x", b"y"], [FilePayload(marker)])))
    with pytest.raises(ValueError, match=r"evil.bin: not an insightface .bin .*refusing to load io.open"):
        load_bin_pairs(str(path), 8)
    assert not marker.exists()


@pytest.mark.parametrize("flags", [[True, False], np.array([True, False]), [np.bool_(True), np.bool_(False)]])
def test_bin_flags_as_bools_or_numpy_load(tmp_path, flags):
    import io
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    path = tmp_path / "ok.bin"
    path.write_bytes(pickle.dumps(([buf.getvalue()] * 4, flags), protocol=4))
    ps = load_bin_pairs(str(path), 8)
    assert ps.issame.tolist() == [True, False]


def test_doppelganger_sampler_without_mining_is_refused():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from facelearn.cli.validate import validate_train_config
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="facelearn.conf", version_base="1.3"):
        bad = compose(config_name="train", overrides=["data/sampler=doppelganger"])
        good = compose(config_name="train", overrides=["+experiment=dm_joint"])
    with pytest.raises(ValueError, match="data/sampler=doppelganger needs callbacks.doppelganger"):
        validate_train_config(bad)
    validate_train_config(good)


def test_bin_is_decoded_with_threads_and_cached(tmp_path, monkeypatch):
    """A .bin decodes with the thread pool to the same pixels as one thread, is cached under cache_dir (the
    second load does not unpickle it), and a changed file is decoded again."""
    import io
    from facelearn.protocols import pairs as pairs_mod
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, format="JPEG")
        blobs.append(buf.getvalue())
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(pickle.dumps((blobs, [True, False, True, False]), protocol=4))
    one = load_bin_pairs(str(path), 16, threads=1)
    four = load_bin_pairs(str(path), 16, cache_dir=str(tmp_path / "cache"), threads=4)
    np.testing.assert_array_equal(one.images, four.images)
    assert len(list((tmp_path / "cache").glob("bin-*.npz"))) == 1

    def no_unpickling(*a, **k):
        raise AssertionError("the cached .bin was unpickled again")
    monkeypatch.setattr(pairs_mod, "_BinUnpickler", no_unpickling)
    cached = load_bin_pairs(str(path), 16, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(cached.images, one.images)
    assert cached.issame.tolist() == [True, False, True, False]
    monkeypatch.undo()
    path.write_bytes(pickle.dumps((blobs[:4], [False, True]), protocol=4))  # another file: another key
    assert load_bin_pairs(str(path), 16, cache_dir=str(tmp_path / "cache")).issame.tolist() == [False, True]
