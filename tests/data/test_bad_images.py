"""data.on_bad_image (facelearn.data.images.BadImagePolicy): an undecodable training image stops the run naming it
(error, the default) or is replaced by the next image of its identity (skip: the same replacement on every run and
in every worker, each one logged, a limit), for the decoded cache and for streaming alike."""

import logging

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from facelearn.data.datamodule import FaceDataModule
from facelearn.data.images import BadImagePolicy
from facelearn.data.records import IdentityFolder
from facelearn.data.splits import Deep


def folder_with_a_bad_image(root, people=4, per=3):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"person_{p}").mkdir(parents=True)
        for i in range(per):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"person_{p}" / f"{i}.jpg")
    bad = root / "person_1" / "1.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 3])  # cut short: Pillow and libjpeg-turbo refuse it
    return bad


def test_replacement_is_the_next_image_of_the_same_identity():
    policy = BadImagePolicy("skip", np.array([0, 1, 0, 1, 0]), limit=1)
    assert policy.candidates(2) == [4, 0] and policy.candidates(4) == [0, 2] and policy.candidates(1) == [3]

    def decode(i):
        if i in (2, 4):
            raise ValueError(f"cannot decode image {i}")
        return np.full((3, 2, 2), i, np.uint8)
    assert policy.decode(2, decode, "x.jpg")[0, 0, 0] == 0  # 4 is bad too: the one after it
    with pytest.raises(ValueError, match=r"more than data.max_bad_images=1 .*\(the last: y.jpg\)"):
        policy.decode(4, decode, "y.jpg")
    with pytest.raises(ValueError, match=r"data.on_bad_image must be error or skip, got 'drop'"):
        BadImagePolicy("drop", np.zeros(1))


@pytest.mark.parametrize("stream", [False, True])
def test_error_names_the_image_and_skip_replaces_it(tmp_path, stream, caplog):
    bad = folder_with_a_bad_image(tmp_path / "faces")

    def module(mode):
        return FaceDataModule(train=IdentityFolder(str(tmp_path / "faces")), split=Deep(), image_size=32,
                              batch_size=4, cache_dir=str(tmp_path / "cache"), stream=stream, on_bad_image=mode)
    strict = module("error")
    if stream:
        strict.setup_train()
        i = strict.train_dataset.images.paths.index(str(bad))
        with pytest.raises(ValueError, match=r"cannot decode image .*person_1/1.jpg.*data.on_bad_image=skip"):
            strict.train_dataset[i]
    else:
        with pytest.raises(ValueError, match=r"cannot decode image .*person_1/1.jpg.*data.on_bad_image=skip"):
            strict.setup_train()
    lenient = module("skip")
    with caplog.at_level(logging.WARNING):
        lenient.setup_train()
        ds = lenient.train_dataset
        paths = ds.images.paths if stream else sorted(str(p) for p in (tmp_path / "faces").rglob("*.jpg"))
        i, j = paths.index(str(bad)), paths.index(str(bad.with_name("2.jpg")))
        image, label = ds[i]
        assert np.array_equal(np.asarray(image), np.asarray(ds[j][0])) and int(label) == int(ds[j][1])
    assert "person_1/1.jpg (image 4) replaced by image 5 of the same identity" in caplog.text
    if not stream:  # the skip run keeps its own cache: an on_bad_image=error run still stops at the image
        with pytest.raises(ValueError, match="cannot decode image"):
            module("error").setup_train()


def test_skip_as_typed(tmp_path):
    """`data=folder data.on_bad_image=skip` trains past a damaged image, saying so in the log."""
    folder_with_a_bad_image(tmp_path / "faces", people=6)
    proc = run_cli(["data=folder", f"data.train.root={tmp_path / 'faces'}", "data.image_size=32",
                    "data.batch_size=8", "data.on_bad_image=skip", "+debug=tiny", "benchmark=none", "monitor=null"],
                   tmp_path)
    assert "replaced by image" in proc.stdout + proc.stderr
