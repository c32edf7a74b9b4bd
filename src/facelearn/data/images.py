"""Decoding face images once to uint8 and caching them.

Every image is decoded to RGB (grayscale, palette and RGBA inputs included): JPEGs with libjpeg-turbo through
simplejpeg when it is installed (~1.5x Pillow's rate here, the same pixels: both run libjpeg-turbo's accurate DCT
and fancy upsampling, checked in ``tests/data/test_data.py``), everything else with Pillow; optionally
centre-cropped (``center_crop``: the face region of a loosely aligned image such as LFW deep-funneled, 250x250 with
the face in the middle ~150x150), and resized to ``image_size``. The result is a uint8 ``(N, 3, S, S)`` array that
is cached on disk keyed by the file list, sizes and modification times, so later runs skip decoding entirely.
Augmentation and normalisation happen later, on batches (possibly on the GPU): see ``transforms``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from facelearn.data.recordio_format import REC_SCHEME, read_virtual
from facelearn.runtime.threads import decode_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceCrop:
    """Geometry applied when decoding: optional centre crop (pixels of the original), then resize to a square."""

    image_size: int = 112
    center_crop: int | None = None

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ValueError(f"data.image_size must be positive, got {self.image_size}")
        if self.center_crop is not None and self.center_crop <= 0:
            raise ValueError(f"data.center_crop must be positive or null, got {self.center_crop}")


try:
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - an optional speed-up; Pillow decodes the same pixels
    _simplejpeg = None


def _jpeg_fast(data: bytes) -> Image.Image | None:
    """A baseline/progressive RGB or grayscale JPEG decoded by simplejpeg; None for anything else (Pillow then)."""
    if _simplejpeg is None or data[:2] != b"\xff\xd8":
        return None
    try:
        if _simplejpeg.decode_jpeg_header(data)[2] not in ("Gray", "YCbCr", "RGB"):
            return None  # CMYK / YCCK: its own colour conversion differs from Pillow's
        return Image.fromarray(_simplejpeg.decode_jpeg(data, colorspace="RGB"))
    except ValueError:  # corrupt, ...: Pillow decides (and names the file if it cannot either)
        return None


def rgb_from_bytes(data: bytes) -> Image.Image:
    """Encoded image bytes (a file's, a RecordIO sample's, a ``.bin`` entry's) as an RGB Pillow image: simplejpeg
    for RGB / grayscale JPEGs, Pillow for the rest; raises Pillow's errors when neither can decode them."""
    fast = _jpeg_fast(data)
    if fast is not None:
        return fast
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # forces full decode so a truncated file fails here, not later
        return im.convert("RGB")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """The image file (or ``rec://`` sample) as an RGB Pillow image, its bytes read once; a clear error names the
    file when it cannot be read."""
    try:
        f = _image_file(path)
        if isinstance(f, io.BytesIO):
            data = f.getvalue()
        else:
            with open(f, "rb") as fh:
                data = fh.read()
        return rgb_from_bytes(data)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {path}: {e} (expected a readable JPEG/PNG/BMP face image)") from e


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image as a uint8 (H, W, 3) RGB array (what the face detector and the aligner read)."""
    return np.asarray(open_rgb(path), dtype=np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    with Image.open(_image_file(path)) as im:
        return im.size


def decode_image(path: str | os.PathLike, crop: FaceCrop, box: tuple[float, float, float, float] | None = None,
                 matrix: np.ndarray | None = None) -> np.ndarray:
    """Decode one image file to a uint8 (3, S, S) array; a clear error names the file when it cannot be read.
    ``box`` (left, top, right, bottom in pixels of the file) replaces the centre crop, e.g. a landmark-based crop;
    ``matrix`` (2x3, pixels -> the 112 px aligned crop: ``facelearn.data.alignment``) replaces both with a
    five-point alignment. Parts outside the image are black."""
    img = open_rgb(path)
    if matrix is not None:
        from facelearn.data.alignment import warp_face
        face = warp_face(np.asarray(img, dtype=np.uint8), matrix, crop.image_size)
        return np.ascontiguousarray(face.transpose(2, 0, 1))
    if box is not None:
        img = img.crop(tuple(int(round(v)) for v in box))
        crop = FaceCrop(crop.image_size)
    return crop_resize(img, crop)


def _image_file(path: str | os.PathLike):
    """A path, or the bytes of ``rec://<file.rec>#<key>`` (a RecordIO sample) as a file object."""
    if str(path).startswith(REC_SCHEME):
        return io.BytesIO(read_virtual(str(path)))
    return path


def _file_of(path: str) -> str:
    return path[len(REC_SCHEME):].rsplit("#", 1)[0] if path.startswith(REC_SCHEME) else path


def crop_resize(img: Image.Image, crop: FaceCrop) -> np.ndarray:
    if crop.center_crop is not None:
        w, h = img.size
        c = min(crop.center_crop, w, h)
        left, top = (w - c) // 2, (h - c) // 2
        img = img.crop((left, top, left + c, top + c))
    if img.size != (crop.image_size, crop.image_size):
        img = img.resize((crop.image_size, crop.image_size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def _cache_key(paths: list[str], crop: FaceCrop | None, boxes: np.ndarray | None = None,
               matrices: np.ndarray | None = None) -> str:
    h = hashlib.sha1()
    h.update(f"v1|{len(paths)}".encode() if crop is None else
             f"v1|{crop.image_size}|{crop.center_crop}|{len(paths)}".encode())
    if boxes is not None:
        h.update(b"|boxes|" + np.ascontiguousarray(boxes, dtype=np.float64).tobytes())
    if matrices is not None:
        h.update(b"|aligned|" + np.ascontiguousarray(matrices, dtype=np.float64).tobytes())
    stats: dict[str, os.stat_result] = {}
    for p in paths:
        f = _file_of(p)
        st = stats.get(f) or stats.setdefault(f, os.stat(f))
        h.update(f"|{os.path.abspath(p) if f == p else p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


class BadImagePolicy:
    """``data.on_bad_image``: what a training image that cannot be decoded does. ``error`` (the default) stops the
    run naming it. ``skip`` replaces it by the next decodable image of the same identity (cyclically in record order,
    so the same on every run, rank and worker), logs each replacement with a running count, and stops the run once
    more than ``limit`` images were replaced in one process. A missing file stays an error (a wrong path, not a
    damaged image); ``python -m facelearn.pack --verify`` lists a ``.rec``'s bad records before training."""

    def __init__(self, mode: str, labels: np.ndarray, limit: int = 100) -> None:
        if mode not in ("error", "skip"):
            raise ValueError(f"data.on_bad_image must be error or skip, got {mode!r}")
        if int(limit) < 0:
            raise ValueError(f"data.max_bad_images must be >= 0, got {limit}")
        self.mode, self.limit, self.labels = mode, int(limit), np.asarray(labels)
        self.replaced = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # DataLoader workers: each counts its own replacements
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def candidates(self, i: int) -> list[int]:
        same = np.flatnonzero(self.labels == self.labels[i])
        k = int(np.searchsorted(same, i))
        return [int(j) for j in np.r_[same[k + 1:], same[:k]]]

    def decode(self, i: int, decode: Callable[[int], np.ndarray], name: str) -> np.ndarray:
        """``decode(i)``, or under ``skip`` the replacement's pixels when image ``i`` cannot be decoded."""
        try:
            return decode(i)
        except ValueError as e:
            if self.mode == "error":
                raise ValueError(f"{e} (data.on_bad_image=skip replaces such images by another of the same "
                                 "identity)") from e
            error = e
        for j in self.candidates(i):
            try:
                image = decode(j)
            except ValueError:
                continue
            with self._lock:
                self.replaced += 1
                count = self.replaced
            log.warning("data.on_bad_image=skip: %s (image %d) replaced by image %d of the same identity: %s "
                        "[%d replaced so far in this process]", name, i, j, error, count)
            if count > self.limit:
                raise ValueError(f"more than data.max_bad_images={self.limit} training images could not be decoded "
                                 f"(the last: {name}): check the data (facelearn.pack --verify)")
            return image
        raise ValueError(f"{error}; no other image of its identity decodes either (data.on_bad_image=skip)")


def decode_images(paths: list[str], crop: FaceCrop, cache_dir: str | os.PathLike | None = None,
                  num_threads: int | None = None, boxes: np.ndarray | None = None,
                  matrices: np.ndarray | None = None, bad_images: BadImagePolicy | None = None) -> np.ndarray:
    """Decode many images to one uint8 (N, 3, S, S) array, through an on-disk ``.npy`` cache when given.
    ``boxes`` (N, 4): a crop box per image instead of ``crop.center_crop``; ``matrices`` (N, 2, 3): a five-point
    alignment per image (see ``decode_image``); ``bad_images``: what an undecodable image does (default: an error
    naming it)."""
    if boxes is not None and np.shape(boxes) != (len(paths), 4):
        raise ValueError(f"boxes must be ({len(paths)}, 4), got {np.shape(boxes)}")
    if matrices is not None and np.shape(matrices) != (len(paths), 2, 3):
        raise ValueError(f"alignment matrices must be ({len(paths)}, 2, 3), got {np.shape(matrices)}")
    for f in dict.fromkeys(_file_of(p) for p in paths):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"image file not found: {f}")
    cache_file = None
    if cache_dir is not None:
        # a run that may replace bad images keeps its own cache: an on_bad_image=error run must still see them
        skip = "-skip" if bad_images is not None and bad_images.mode == "skip" else ""
        cache_file = Path(cache_dir) / f"faces-{_cache_key(paths, crop, boxes, matrices)}{skip}.npy"
        if cache_file.is_file():
            try:
                arr = np.load(cache_file, mmap_mode="r", allow_pickle=False)
                if arr.shape == (len(paths), 3, crop.image_size, crop.image_size) and arr.dtype == np.uint8:
                    out = np.ascontiguousarray(arr)
                    log.info("loaded %d decoded images from cache %s", len(paths), cache_file)
                    return out
                log.warning("decoded-image cache %s holds %s %s, expected (%d, 3, %d, %d) uint8: rebuilding it "
                            "from the images", cache_file, arr.dtype, arr.shape, len(paths), crop.image_size,
                            crop.image_size)
            except (OSError, ValueError, EOFError) as e:
                log.warning("decoded-image cache %s is unreadable (%s): rebuilding it from the images",
                            cache_file, e)
    out = np.empty((len(paths), 3, crop.image_size, crop.image_size), dtype=np.uint8)
    # Pillow releases the GIL while decoding, so threads give a near-linear speedup without pickling arrays.
    threads = num_threads or decode_threads()  # the run's plan (facelearn.runtime.threads)

    def one(i: int) -> np.ndarray:
        return decode_image(paths[i], crop, None if boxes is None else tuple(boxes[i]),
                            None if matrices is None else matrices[i])

    def work(i: int) -> None:
        out[i] = one(i) if bad_images is None else bad_images.decode(i, one, paths[i])

    with ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(work, range(len(paths))):
            pass
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cache_file)  # atomic: concurrent ranks/jobs never read a half-written cache
        log.info("decoded %d images, cached at %s", len(paths), cache_file)
    return out


def decode_faces(paths: list[str], crop: FaceCrop, cache_dir: str | os.PathLike | None = None,
                 alignment=None, boxes: np.ndarray | None = None, what: str = "images",
                 bad_images: BadImagePolicy | None = None) -> np.ndarray:
    """The face crops of ``paths``: five-point aligned when ``alignment`` (a ``FivePointAlignment``) is given,
    else ``crop``'s centre crop or the per-image ``boxes``. With alignment, an image without a detected face takes
    the crop it would have had without alignment (its box, else the centre crop) when the source has one."""
    if alignment is None:
        return decode_images(paths, crop, cache_dir, boxes=boxes, bad_images=bad_images)
    matrices = face_matrices(paths, crop, cache_dir, alignment, boxes, what)
    return decode_images(paths, FaceCrop(crop.image_size), cache_dir, matrices=matrices, bad_images=bad_images)


def face_matrices(paths: list[str], crop: FaceCrop, cache_dir: str | os.PathLike | None, alignment,
                  boxes: np.ndarray | None = None, what: str = "images") -> np.ndarray:
    """(N, 2, 3) five-point alignment matrices of ``paths`` (landmarks cached); an image without a face falls back
    to its box, else ``crop``'s centre crop, else the alignment's centred square."""

    def fallback(i: int):
        if boxes is not None:
            return tuple(boxes[i])
        if crop.center_crop is not None:
            from facelearn.data.alignment import center_box
            w, h = image_size(paths[i])
            c = min(crop.center_crop, w, h)
            return center_box(w, h, c / min(w, h))
        return None

    return alignment.matrices(paths, None if cache_dir is None else str(cache_dir), fallback, what)
