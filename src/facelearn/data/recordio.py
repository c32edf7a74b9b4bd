"""insightface / MXNet RecordIO (``train.rec`` + ``train.idx``) without MXNet: reading, writing, a training source.

Format (MXNet ``recordio``): every record is ``magic u32 = 0xced7230a``, ``lrecord u32 = cflag << 29 | length``, the
payload, zero padding to 4 bytes; ``.idx`` lines are ``key<TAB>byte offset``. A payload starts with MXNet's
``IRHeader`` (``flag u32, label f32, id u64, id2 u64``); ``flag > 0`` means ``flag`` float labels follow the header
(and ``label`` is unused); the rest is the encoded image. insightface's face datasets (MS1MV2, Glint360K, ...) put a
header record at key 0 whose labels are ``[first identity record, end]``: image records are keys
``1 .. labels[0] - 1`` (label = class id), and each key in ``labels[0] .. labels[1] - 1`` is an identity record
whose labels are that class's ``[first image key, end)``. The class of every image is read from its 24-byte header
(no image decoding). Identity names are not part of the format: ``facelearn.pack`` writes them beside the file
(``<name>.names``, one per class id); without it, classes are named ``class<id>`` and the benchmark identity check
cannot run (a warning says so).
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facelearn.data.records import FaceRecords

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")  # IRHeader: flag, label, id, id2
REC_SCHEME = "rec://"


def pack_payload(label: float | list[float], data: bytes, key: int = 0) -> bytes:
    """IRHeader + optional label array + data (MXNet's ``recordio.pack``)."""
    if isinstance(label, (list, tuple, np.ndarray)):
        labels = np.asarray(label, dtype=np.float32)
        return _HEADER.pack(len(labels), 0.0, key, 0) + labels.tobytes() + data
    return _HEADER.pack(0, float(label), key, 0) + data


def unpack_payload(payload: bytes, what: str = "record") -> tuple[np.ndarray, bytes]:
    """(labels as float32 array, the rest of the payload); ``what`` names the record in errors."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"{what}: {len(payload)} bytes, shorter than its {_HEADER.size}-byte header")
    flag, label, _, _ = _HEADER.unpack_from(payload)
    if flag > 0:
        end = _HEADER.size + 4 * flag
        if end > len(payload):
            raise ValueError(f"{what}: its header claims {flag} labels, more than its {len(payload)} bytes hold")
        return np.frombuffer(payload[_HEADER.size:end], dtype=np.float32).copy(), payload[end:]
    return np.array([label], dtype=np.float32), payload[_HEADER.size:]


class RecordIOWriter:
    """Writes ``.rec`` records and their ``.idx`` offsets (keys in the order written)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii")

    def write(self, key: int, payload: bytes) -> None:
        if len(payload) >= 1 << 29:
            raise ValueError(f"{self.rec_path}: record {key} is {len(payload)} bytes (the format's limit is 2^29)")
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(struct.pack("<II", MAGIC, len(payload)))
        self._rec.write(payload)
        self._rec.write(b"\0" * (-len(payload) % 4))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordIOReader:
    """Random access to a ``.rec`` through its ``.idx``; safe from threads (positional reads) and from DataLoader
    workers (one descriptor per process, opened lazily)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> None:
        self.rec_path = str(rec_path)
        idx = Path(idx_path) if idx_path else Path(self.rec_path).with_suffix(".idx")
        if not os.path.isfile(self.rec_path):
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        if not idx.is_file():
            raise FileNotFoundError(f"{self.rec_path}: its index {idx} is missing (facelearn.pack writes both)")
        self.offsets: dict[int, int] = {}
        try:
            text = idx.read_text(encoding="ascii")
        except UnicodeDecodeError as e:
            raise ValueError(f"{idx}: not a RecordIO index (byte {e.start} is not ASCII text)") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip().isdigit():
                raise ValueError(f"{idx}:{n}: expected 'key<TAB>offset', got {line!r}")
            self.offsets[int(parts[0].strip())] = int(parts[1].strip())
        self._fh = None
        self._pid = -1

    def _fd(self) -> int:
        # Positional reads (os.pread) on one descriptor: safe from the decoding threads of one process; a forked
        # DataLoader worker opens its own.
        if self._fh is None or self._pid != os.getpid():
            self._fh = os.open(self.rec_path, os.O_RDONLY)
            self._pid = os.getpid()
            self._size = os.fstat(self._fh).st_size
        return self._fh

    def _pread(self, n: int, offset: int, what: str) -> bytes:
        """Exactly ``n`` bytes at ``offset``, or an error naming the file (a truncated file, an offset past its
        end): file sizes and offsets come from the file and are not trusted."""
        fd = self._fd()
        size = self._size
        if offset < 0 or n < 0 or offset + n > size:
            raise ValueError(f"{self.rec_path}: {what} needs bytes {offset}..{offset + n} of a {size}-byte file "
                             "(truncated, or .idx does not match the .rec)")
        return os.pread(fd, n, offset)

    def _offset(self, key: int) -> int:
        if key not in self.offsets:
            raise KeyError(f"{self.rec_path}: no record with key {key} in its .idx")
        return self.offsets[key]

    def _length(self, key: int, offset: int, head: bytes) -> int:
        """The payload length from a record's 8-byte RecordIO header ``head`` (magic and flags checked)."""
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise ValueError(f"{self.rec_path}: record {key} at byte {offset} has no RecordIO magic "
                             "(.idx does not match the .rec)")
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if cflag != 0:
            raise ValueError(f"{self.rec_path}: record {key} is split across records (cflag {cflag}), which face "
                             "datasets do not use; not supported")
        return length

    def read(self, key: int) -> bytes:
        offset = self._offset(key)
        length = self._length(key, offset, self._pread(8, offset, f"record {key}"))
        return self._pread(length, offset + 8, f"record {key} ({length} bytes)")

    def labels(self, key: int) -> np.ndarray:
        """The labels of a record from its headers only (one read of both; no image bytes read)."""
        start = self._offset(key)
        head = self._pread(8 + _HEADER.size, start, f"record {key}'s header")
        length, offset = self._length(key, start, head[:8]), start + 8
        if length < _HEADER.size:
            raise ValueError(f"{self.rec_path}: record {key} has {length} bytes, shorter than its header")
        flag, label, _, _ = _HEADER.unpack(head[8:])
        if flag > 0:
            if _HEADER.size + 4 * flag > length:
                raise ValueError(f"{self.rec_path}: record {key}'s header claims {flag} labels, more than its "
                                 f"{length} bytes hold")
            return np.frombuffer(self._pread(4 * flag, offset + _HEADER.size, f"record {key}'s labels"),
                                 dtype=np.float32).copy()
        return np.array([label], dtype=np.float32)

    def image_keys_and_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys of the image records and their class ids (insightface layout, or every record without a header)."""
        head = self.labels(0) if 0 in self.offsets else np.array([0.0])
        if len(head) >= 2 and head[0] >= 1:
            if not np.isfinite(head[0]) or int(head[0]) - 1 > len(self.offsets):
                raise ValueError(f"{self.rec_path}: its header record claims {head[0]:.0f} images, but its .idx "
                                 f"lists {len(self.offsets)} records")
            keys = np.arange(1, int(head[0]), dtype=np.int64)
        else:
            keys = np.array(sorted(self.offsets), dtype=np.int64)
        labels = [self.labels(int(k))[0] for k in keys]
        bad = next((k for k, c in zip(keys, labels) if not (np.isfinite(c) and 0 <= c < 2**31)), None)
        if bad is not None:
            raise ValueError(f"{self.rec_path}: record {bad}'s class label is not a class id (a non-negative "
                             "integer)")
        return keys, np.array(labels, dtype=np.int64)

    def image(self, key: int) -> bytes:
        return unpack_payload(self.read(key), f"{self.rec_path}: record {key}")[1]

    def close(self) -> None:
        if getattr(self, "_fh", None) is not None and self._pid == os.getpid():  # also after a failed __init__
            os.close(self._fh)
        self._fh = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable for worker processes: the handle is reopened there
        return {**self.__dict__, "_fh": None, "_pid": -1}


_READERS: dict[str, RecordIOReader] = {}


def read_virtual(path: str) -> bytes:
    """Image bytes of ``rec://<file.rec>#<key>`` (how FaceRecords name RecordIO samples)."""
    rec, key = path[len(REC_SCHEME):].rsplit("#", 1)
    reader = _READERS.get(rec)
    if reader is None:
        reader = _READERS[rec] = RecordIOReader(rec)
    return reader.image(int(key))


class RecordIOSource:
    """Training data from a ``.rec``/``.idx`` pair (``data=rec data.train.path=.../train.rec``).

    Samples are named ``rec://<file>#<key>`` and decoded like files (the decoded uint8 cache stays the fast path);
    the class of each sample comes from its record header. Identity names from ``<path without .rec>.names`` when
    present, else ``class<id>``.
    """

    def __init__(self, path: str, idx_path: str | None = None, center_crop: int | None = None) -> None:
        self.path, self.idx_path, self.center_crop = str(path), idx_path, center_crop

    def names(self) -> list[str] | None:
        f = Path(self.path).with_suffix(".names")
        if not f.is_file():
            return None
        try:
            return f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{f}: class names must be UTF-8 text (byte {e.start} is not)") from None

    def load(self, image_size: int) -> FaceRecords:
        reader = RecordIOReader(self.path, self.idx_path)
        _READERS[os.path.abspath(self.path)] = reader
        keys, classes = reader.image_keys_and_classes()
        names = self.names()
        if names is None:
            log.warning("%s has no .names file: classes are named class<id>, so overlap with benchmark identities "
                        "cannot be checked", self.path)
            identities = np.array([f"class{c}" for c in classes], dtype=object)
        else:
            if classes.max(initial=-1) >= len(names):
                raise ValueError(f"{self.path}: class id {classes.max()} but {Path(self.path).with_suffix('.names')} "
                                 f"names {len(names)} classes")
            identities = np.array([names[c] for c in classes], dtype=object)
        rec = os.path.abspath(self.path)
        paths = [f"{REC_SCHEME}{rec}#{k}" for k in keys]
        return FaceRecords(identities, paths=paths, source=self.path, meta={"center_crop": self.center_crop})


def pack(records: FaceRecords, out: str | os.PathLike) -> tuple[int, int]:
    """Write ``records`` (file paths) to ``out`` (.rec), ``.idx`` and ``.names`` in the insightface layout: header
    record 0, image records 1..N grouped by identity (the files' bytes as they are: no re-encoding), identity
    records after them. Returns (images, identities)."""
    if records.paths is None:
        raise ValueError(f"{records.source}: only file-based sources can be packed")
    names, classes = np.unique(records.identities.astype(str), return_inverse=True)
    order = np.argsort(classes, kind="stable")  # grouped by identity, file order kept within one
    out = Path(out)
    n, c = len(order), len(names)
    with RecordIOWriter(out) as w:
        w.write(0, pack_payload([float(n + 1), float(n + 1 + c)], b""))
        starts = np.zeros(c + 1, dtype=np.int64)
        for key, i in enumerate(order, 1):
            with open(records.paths[i], "rb") as fh:
                w.write(key, pack_payload(float(classes[i]), fh.read(), key))
            starts[classes[i] + 1] = key + 1
        starts[0] = 1
        starts = np.maximum.accumulate(starts)
        for cls in range(c):
            w.write(n + 1 + cls, pack_payload([float(starts[cls]), float(starts[cls + 1])], b""))
    out.with_suffix(".names").write_text("\n".join(names.tolist()) + "\n", encoding="utf-8")
    return n, c


@dataclass
class VerifyReport:
    """``verify_rec``: the image records checked and the bad ones (key, class id or None, reason)."""

    path: str
    checked: int
    bad: list[tuple[int, int | None, str]]
    seconds: float


def verify_rec(path: str | os.PathLike, workers: int | None = None,
               progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Read and fully decode every image record of a ``.rec`` (threads: Pillow releases the GIL), and check what
    training relies on: each ``.idx`` offset inside the file with a RecordIO record there, each class id within
    the ``.names`` list when there is one. Nothing stops at the first bad record: all of them are listed."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from facelearn.data.images import open_rgb
    from facelearn.runtime.threads import decode_threads
    start = time.perf_counter()
    reader = RecordIOReader(path)
    size = os.path.getsize(reader.rec_path)
    bad: list[tuple[int, int | None, str]] = []
    outside = sorted(k for k, off in reader.offsets.items() if off + 8 + _HEADER.size > size)
    bad += [(k, None, f"offset {reader.offsets[k]} is past the end of the {size}-byte file") for k in outside]
    for k in outside:
        del reader.offsets[k]
    try:
        keys, classes = reader.image_keys_and_classes()
    except (ValueError, KeyError) as e:
        raise ValueError(f"{path}: its header record cannot be read ({e}): not a RecordIO face dataset") from e
    names = RecordIOSource(reader.rec_path).names()
    n_names = None if names is None else len(names)
    names_file = Path(reader.rec_path).with_suffix(".names")
    rec = os.path.abspath(reader.rec_path)
    _READERS[rec] = reader

    def check(i: int) -> tuple[int, int | None, str] | None:
        key, cls = int(keys[i]), int(classes[i])
        if n_names is not None and not 0 <= cls < n_names:
            return key, cls, f"class id {cls} is outside the {n_names} names of {names_file.name}"
        try:
            open_rgb(f"{REC_SCHEME}{rec}#{key}")
        except (ValueError, KeyError, OSError) as e:
            return key, cls, str(e).replace(f"{REC_SCHEME}{rec}#{key}", f"record {key}")
        return None

    with ThreadPoolExecutor(workers or decode_threads()) as ex:
        for n, result in enumerate(ex.map(check, range(len(keys))), 1):
            if result is not None:
                bad.append(result)
            if progress is not None:
                progress(n)
    _READERS.pop(rec, None)
    return VerifyReport(str(path), len(keys), bad, time.perf_counter() - start)
