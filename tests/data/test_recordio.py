"""RecordIO (insightface .rec/.idx) without MXNet: the byte format by hand, packing a folder, identical decoding,
training from a .rec through the CLI."""

import struct

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from facelearn.data.images import FaceCrop
from facelearn.data.recordio import (MAGIC, RecordIOReader, RecordIOSource, RecordIOWriter, pack, pack_payload,
                                     unpack_payload)
from facelearn.data.records import IdentityFolder


def test_record_bytes_by_hand(tmp_path):
    rec = tmp_path / "t.rec"
    with RecordIOWriter(rec) as w:
        w.write(0, pack_payload([3.0, 5.0], b""))     # header record: 2 float labels
        w.write(1, pack_payload(7.0, b"abcde", 1))    # image record: class 7, 5 bytes of "image"
    raw = rec.read_bytes()
    # record 0: magic, length 24 + 8, IRHeader(flag=2, label 0, id 0, id2 0), labels 3.0 5.0 (no padding: 32 bytes)
    assert struct.unpack_from("<II", raw, 0) == (MAGIC, 32)
    assert struct.unpack_from("<IfQQ", raw, 8) == (2, 0.0, 0, 0)
    assert struct.unpack_from("<2f", raw, 32) == (3.0, 5.0)
    # record 1 at byte 40: length 29 = 24 + 5, padded to 32
    assert struct.unpack_from("<II", raw, 40) == (MAGIC, 29) and len(raw) == 40 + 8 + 32
    assert (tmp_path / "t.idx").read_text() == "0\t0\n1\t40\n"
    r = RecordIOReader(rec)
    assert r.labels(0).tolist() == [3.0, 5.0] and r.labels(1).tolist() == [7.0]
    labels, data = unpack_payload(r.read(1))
    assert labels.tolist() == [7.0] and data == b"abcde"


def _faces(root, people=4, per=3, size=40):
    rng = np.random.default_rng(0)
    for p in range(people):
        for i in range(per):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            (root / f"person_{p}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / f"person_{p}" / f"{i}.jpg", quality=90)
    return root


def test_pack_layout_and_identical_decoding(tmp_path):
    folder = _faces(tmp_path / "faces")
    n, c = pack(IdentityFolder(str(folder)).load(0), tmp_path / "train.rec")
    assert (n, c) == (12, 4)
    r = RecordIOReader(tmp_path / "train.rec")
    assert r.labels(0).tolist() == [13.0, 17.0]                      # insightface header: identity records 13..16
    assert [r.labels(k).tolist() for k in range(13, 17)] == [[1, 4], [4, 7], [7, 10], [10, 13]]
    keys, classes = r.image_keys_and_classes()
    assert keys.tolist() == list(range(1, 13)) and classes.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert (tmp_path / "train.names").read_text().split() == [f"person_{p}" for p in range(4)]
    from_rec = RecordIOSource(str(tmp_path / "train.rec"), center_crop=32).load(24)
    from_dir = IdentityFolder(str(folder), center_crop=32).load(24)
    assert from_rec.identities.tolist() == from_dir.identities.tolist()
    crop = FaceCrop(24, 32)
    assert np.array_equal(from_rec.decode(crop, str(tmp_path / "cache")), from_dir.decode(crop))  # same pixels
    assert np.array_equal(from_rec.decode(crop, str(tmp_path / "cache")), from_dir.decode(crop))  # cached


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="RecordIO file not found"):
        RecordIOReader(tmp_path / "missing.rec")
    (tmp_path / "x.rec").write_bytes(b"\0" * 64)
    with pytest.raises(FileNotFoundError, match="its index .*x.idx is missing"):
        RecordIOReader(tmp_path / "x.rec")
    (tmp_path / "x.idx").write_text("0\t8\n1 oops\n")
    with pytest.raises(ValueError, match=r"x.idx:2: expected 'key<TAB>offset'"):
        RecordIOReader(tmp_path / "x.rec")
    (tmp_path / "x.idx").write_text("0\t8\n")
    with pytest.raises(ValueError, match="has no RecordIO magic"):
        RecordIOReader(tmp_path / "x.rec").read(0)


def test_pack_cli_then_train_from_rec(tmp_path):
    folder = _faces(tmp_path / "faces", people=24, per=3, size=32)
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "facelearn.pack", str(folder), str(tmp_path / "data" / "train.rec")],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert "72 images of 24 identities" in out
    run_cli(["data=rec", f"data.train.path={tmp_path / 'data' / 'train.rec'}", "data.image_size=32",
             "data.batch_size=16", "backbone.widths=[8,16,32,64]", "backbone.embedding_size=32",
             "benchmark=none", "monitor=train/loss", "trainer.max_epochs=2"], tmp_path)
    run_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    assert "RecordIOSource" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_reader_is_safe_from_threads(tmp_path):
    """decode_images reads with a thread pool: concurrent reads of one reader must not interleave seek and read."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    blobs = [rng.integers(0, 255, int(rng.integers(10, 3000)), dtype=np.uint8).tobytes() for _ in range(300)]
    with RecordIOWriter(tmp_path / "t.rec") as w:
        for k, b in enumerate(blobs):
            w.write(k, pack_payload(float(k), b, k))
    r = RecordIOReader(tmp_path / "t.rec")
    keys = list(range(300)) * 4
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(r.image, keys))
    assert all(g == blobs[k] for g, k in zip(got, keys))


def test_pack_verify_lists_every_bad_record(tmp_path):
    """`facelearn.pack --verify` as typed: a clean set passes; a record whose image bytes are cut short, one whose
    image is not an image, and an .idx offset past the end of the file are each listed, and the exit status is 1."""
    import subprocess
    import sys
    folder = _faces(tmp_path / "faces", people=4, per=3, size=32)
    rec = tmp_path / "train.rec"
    pack(IdentityFolder(str(folder)).load(0), rec)

    def verify():
        return subprocess.run([sys.executable, "-m", "facelearn.pack", "--verify", str(rec)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)
    ok = verify()
    assert ok.returncode == 0 and "12 image records decoded" in ok.stdout and ", 0 bad" in ok.stdout
    reader = RecordIOReader(rec)
    raw = bytearray(rec.read_bytes())
    for key, junk in ((3, b"\x00" * 200), (7, b"not an image at all" * 10)):
        start = reader.offsets[key] + 8 + 24  # past the RecordIO and image-record headers
        raw[start:start + len(junk)] = junk
    reader.close()
    rec.write_bytes(bytes(raw))
    with open(rec.with_suffix(".idx"), "a") as fh:
        fh.write(f"99\t{len(raw) + 1000}\n")
    bad = verify()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert ", 3 bad" in bad.stdout
    assert "record 99: offset" in bad.stdout and "past the end" in bad.stdout
    assert "record 3 (class " in bad.stdout and "record 7 (class " in bad.stdout and "cannot decode image" in bad.stdout
