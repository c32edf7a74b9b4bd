"""Property-based fuzzing of every file format facelearn reads (issue 25): valid files are truncated, bit-flipped,
given inflated counts / offsets or wrong types, and each parser must either read them or raise a clear error
(ValueError / FileNotFoundError / KeyError) that names the file, within the time bound, never another kind of
exception, a hang or an unbounded allocation. The fast slice runs in `make test` (FUZZ_EXAMPLES examples per
format); `FUZZ_EXAMPLES=2000 pytest tests/fuzz` is the long run."""

import functools
import io
import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facelearn.data.recordio import RecordIOSource, pack, verify_rec
from facelearn.data.records import IdentityFolder, ImageList
from facelearn.protocols.ijb import read_meta, read_search_meta
from facelearn.protocols.pairs import load_bin_pairs, parse_pairs_file

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=5000, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CLEAR = (ValueError, FileNotFoundError, KeyError)


def _jpeg(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def mutate(data: bytes, how: str, pos: float, value: int) -> bytes:
    """``truncate`` at, ``flip`` the byte at, ``insert`` a byte at, or ``zero`` 8 bytes from a relative position."""
    if not data:
        return data
    i = min(int(pos * len(data)), len(data) - 1)
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ (1 + value % 255)]) + data[i + 1:]
    if how == "insert":
        return data[:i] + bytes([value % 256]) + data[i:]
    return data[:i] + b"\xff" * 8 + data[i + 8:]  # a run of 0xff: inflated counts, lengths and offsets


MUTATION = st.tuples(st.sampled_from(["truncate", "flip", "insert", "inflate"]), st.floats(0, 1), st.integers(0, 10**6))
NUMBER = st.sampled_from(["-1", "0", "2147483648", "99999999999999999999", "1e9", "nan", "x", "", "..", "/etc"])


def clear_or_read(fn, path) -> None:
    name = os.path.basename(str(path))
    try:
        fn()
    except CLEAR as e:
        assert name in str(e) or os.path.dirname(str(path)) in str(e), f"{type(e).__name__} without the file: {e}"


@functools.lru_cache(maxsize=1)
def valid_rec() -> dict[str, bytes]:
    """A packed 3-person set's .rec / .idx / .names bytes (built once per process)."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-rec-"))
    for p in range(3):
        (root / "faces" / f"person_{p}").mkdir(parents=True)
        for i in range(2):
            (root / "faces" / f"person_{p}" / f"{i}.jpg").write_bytes(_jpeg(10 * p + i))
    pack(IdentityFolder(str(root / "faces")).load(0), root / "train.rec")
    return {s: (root / f"train{s}").read_bytes() for s in (".rec", ".idx", ".names")}


@FUZZ
@given(which=st.sampled_from([".rec", ".idx"]), m=MUTATION)
def test_recordio(tmp_path, which, m):
    for suffix, data in valid_rec().items():
        (tmp_path / f"train{suffix}").write_bytes(mutate(data, *m) if suffix == which else data)
    rec = tmp_path / "train.rec"
    clear_or_read(lambda: RecordIOSource(str(rec)).load(0), rec if which == ".rec" else rec.with_suffix(".idx"))
    clear_or_read(lambda: verify_rec(rec, workers=1), rec if which == ".rec" else rec.with_suffix(".idx"))


@FUZZ
@given(m=MUTATION)
def test_bin(tmp_path, m):
    data = pickle.dumps(([_jpeg(i) for i in range(4)], [True, False]), protocol=4)
    path = tmp_path / "lfw.bin"
    path.write_bytes(mutate(data, *m))
    clear_or_read(lambda: load_bin_pairs(str(path), 8), path)


@FUZZ
@given(obj=st.sampled_from([None, 1, "x", b"x", [], {}, ([],), ([b"x"], "ab"), ([1, 2], [True]),
                            ([b"x", b"y"], [2]), (["a", "b"], [True]), ((b"x",) * 2, (True,)), ([b"", b""], [True])]))
def test_bin_wrong_types(tmp_path, obj):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(CLEAR, match="odd.bin"):
        load_bin_pairs(str(path), 8)


PAIRS = "2 2\nA 1 2\nB 1 2\nA 1 B 1\nB 2 A 2\nA 2 3\nB 1 3\nA 3 B 3\nB 1 A 1\n"


@FUZZ
@given(m=MUTATION, token=st.integers(0, 40), number=NUMBER)
def test_pairs_file(tmp_path, m, token, number):
    parts = PAIRS.split(" ")
    parts[token % len(parts)] = number
    for text in (" ".join(parts), mutate(PAIRS.encode(), *m).decode("latin-1")):
        path = tmp_path / "pairs.txt"
        path.write_text(text, encoding="latin-1")
        clear_or_read(lambda: parse_pairs_file(str(path)), path)


@FUZZ
@given(m=MUTATION, number=NUMBER)
def test_list_file(tmp_path, m, number):
    (tmp_path / "a").mkdir(exist_ok=True)
    for i in range(2):
        (tmp_path / "a" / f"{i}.jpg").write_bytes(_jpeg(i))
    valid = "a/0.jpg 0\na/1.jpg 1\n"
    for text in (valid.replace("1\n", f"{number}\n"), mutate(valid.encode(), *m).decode("latin-1"),
                 valid.replace("a/1.jpg", f"{number}/1.jpg")):
        path = tmp_path / "train.txt"
        path.write_text(text, encoding="latin-1")
        clear_or_read(lambda: ImageList(str(tmp_path), str(path)).load(0), path)


def _ijb(root):
    (root / "meta").mkdir(parents=True, exist_ok=True)
    lm = " ".join(["38.3 51.7 73.5 51.5 56.0 71.7 41.5 92.4 70.7 92.2"])
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("a.jpg 1 10\nb.jpg 1 11\nc.jpg 2 20\nd.jpg 3 30\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("".join(f"{n}.jpg {lm} 0.9\n" for n in "abcd"))
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("1 2 1\n1 3 0\n2 3 0\n")
    (root / "meta" / "ijbc_1N_gallery_G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,7,a.jpg\n")
    (root / "meta" / "ijbc_1N_gallery_G2.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,8,d.jpg\n")
    (root / "meta" / "ijbc_1N_probe_mixed.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n2,7,c.jpg\n")


@FUZZ
@given(f=st.sampled_from(["ijbc_face_tid_mid.txt", "ijbc_name_5pts_score.txt", "ijbc_template_pair_label.txt",
                          "ijbc_1N_gallery_G1.csv", "ijbc_1N_probe_mixed.csv"]),
       m=MUTATION, token=st.integers(0, 60), number=NUMBER)
def test_ijb_meta(tmp_path, f, m, token, number):
    _ijb(tmp_path)
    path = tmp_path / "meta" / f
    data = path.read_bytes()
    parts = re.split(rb"([ ,\n])", data)
    words = [i for i, p in enumerate(parts) if p.strip(b" ,\n")]
    parts[words[token % len(words)]] = number.encode()
    for text in (b"".join(parts), mutate(data, *m)):
        path.write_bytes(text)

        def parse():
            meta = read_meta(str(tmp_path), "ijbc")
            read_search_meta(str(tmp_path), "ijbc", meta.templates)
        clear_or_read(parse, path)
