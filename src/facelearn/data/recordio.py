"""RecordIO training data and packing: ``RecordIOSource`` (``data=rec``), ``pack`` (``facelearn.pack``) and
``verify_rec`` (``facelearn.pack --verify``), on the format of ``facelearn.data.recordio_format`` (re-exported here).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from facelearn.data.recordio_format import (IR_HEADER_SIZE, MAGIC, READERS, REC_SCHEME, RecordIOReader,
                                            RecordIOWriter, pack_payload, read_virtual, unpack_payload)
from facelearn.data.records import FaceRecords

__all__ = ["MAGIC", "REC_SCHEME", "RecordIOReader", "RecordIOWriter", "RecordIOSource", "VerifyReport", "pack",
           "pack_payload", "read_virtual", "unpack_payload", "verify_rec"]

log = logging.getLogger(__name__)


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
        READERS[os.path.abspath(self.path)] = reader
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
    outside = sorted(k for k, off in reader.offsets.items() if off + 8 + IR_HEADER_SIZE > size)
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
    READERS[rec] = reader

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
    READERS.pop(rec, None)
    return VerifyReport(str(path), len(keys), bad, time.perf_counter() - start)
