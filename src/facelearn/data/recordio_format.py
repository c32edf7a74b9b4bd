"""insightface / MXNet RecordIO (``train.rec`` + ``train.idx``) without MXNet: the file format (reader, writer,
``rec://`` sample names). A leaf module: image decoding (``facelearn.data.images``) reads samples through it, and
the training source / packing (``facelearn.data.recordio``) build on it.

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

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<IfQQ")  # IRHeader: flag, label, id, id2
IR_HEADER_SIZE = _HEADER.size
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


# open readers by absolute .rec path, shared by rec:// sample names and RecordIOSource / verify_rec
READERS: dict[str, RecordIOReader] = {}


def read_virtual(path: str) -> bytes:
    """Image bytes of ``rec://<file.rec>#<key>`` (how FaceRecords name RecordIO samples)."""
    rec, key = path[len(REC_SCHEME):].rsplit("#", 1)
    reader = READERS.get(rec)
    if reader is None:
        reader = READERS[rec] = RecordIOReader(rec)
    return reader.image(int(key))
