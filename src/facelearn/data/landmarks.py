"""Five face landmarks per image: YuNet detection, the policy for several faces and for none, and an on-disk cache.

``FivePointAlignment`` is what configs name (``alignment=five_point``): the detector model file, its thresholds and
the policies. ``landmarks(paths)`` runs the detector once per image (thread pool: OpenCV and Pillow release the GIL)
and caches the result beside the decoded images, keyed by the files (size, mtime), the detector file's sha256 and
every setting, so a benchmark or training set is detected once.

Policy (each image's outcome is recorded as its ``stage`` and counted in the log, never silent):

* several faces: the one whose box centre is nearest the image centre (benchmark and training images are crops
  around one person; the largest or most confident face may be a bystander);
* no face at ``score_threshold``: retry at ``retry_threshold``, then on the image upscaled ``upscale`` x, then on the
  image padded by ``pad`` of its side on each edge (a face filling the whole crop is missed otherwise);
* still none: ``on_failure=fallback`` uses the caller's fallback crop (LFW: its centre crop; CFP: its fiducial box;
  otherwise the centred square of ``fallback_fraction`` of the short side), ``on_failure=error`` stops with the list.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: Outcome of each image, stored as int8 ``stage`` codes.
STAGES = ("detected", "low_threshold", "upscaled", "padded", "fallback")
FALLBACK = STAGES.index("fallback")


def _require_cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a dependency; only a broken install lacks it
        raise ImportError("face alignment needs OpenCV: pip install opencv-python-headless") from e
    try:  # OpenCV's DNN logs a warning per detector about targets of its new graph engine: not actionable
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - older OpenCV without the logging utils
        pass
    return cv2


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Landmarks:
    """Per image: ``points`` (N, 5, 2) float32 in pixels of the file (NaN where the fallback crop is used),
    ``scores`` (N,) detector score (0 for a fallback), ``stage`` (N,) index into ``STAGES``, ``faces`` (N,) number of
    faces found at the stage that succeeded."""

    points: np.ndarray
    scores: np.ndarray
    stage: np.ndarray
    faces: np.ndarray

    def counts(self) -> dict[str, int]:
        return {name: int((self.stage == i).sum()) for i, name in enumerate(STAGES)}

    def summary(self) -> str:
        c = self.counts()
        multi = int((self.faces > 1).sum())
        return ", ".join(f"{v} {k}" for k, v in c.items() if v) + f" ({multi} with several faces: nearest centre)"


class YuNet:
    """OpenCV's YuNet face detector (``cv2.FaceDetectorYN``): boxes, five landmarks and a score per face.
    One instance per thread (the OpenCV object is not thread-safe)."""

    def __init__(self, model_path: str, nms_threshold: float = 0.3, top_k: int = 50) -> None:
        cv2 = _require_cv2()
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"alignment.detector: face detector model {model_path} does not exist (a YuNet "
                                    "ONNX file, e.g. face_detection_yunet_2023mar*.onnx from OpenCV Zoo; set "
                                    "alignment.detector=... or paths.models_dir=...)")
        self.cv2, self.model_path = cv2, model_path
        try:
            self.net = cv2.FaceDetectorYN.create(model_path, "", (320, 320), 0.5, nms_threshold, top_k)
        except cv2.error as e:
            raise ValueError(f"alignment.detector: {model_path} does not load as a YuNet detector: {e}") from e
        self.nms_threshold, self.top_k = nms_threshold, top_k

    def detect(self, rgb: np.ndarray, score_threshold: float) -> np.ndarray:
        """(K, 15) rows ``x, y, w, h, 5 x (x, y) landmarks, score`` for faces scoring >= ``score_threshold``."""
        h, w = rgb.shape[:2]
        self.net.setInputSize((w, h))
        self.net.setScoreThreshold(float(score_threshold))
        _, faces = self.net.detect(np.ascontiguousarray(rgb[:, :, ::-1]))  # YuNet takes BGR
        return np.zeros((0, 15), np.float32) if faces is None else np.asarray(faces, np.float32)


def nearest_centre(faces: np.ndarray, width: int, height: int) -> int:
    """Index of the face whose box centre is nearest the image centre."""
    centres = faces[:, :2] + faces[:, 2:4] / 2
    return int(np.argmin(((centres - [width / 2, height / 2]) ** 2).sum(1)))


class FivePointAlignment:
    """Five-point alignment as configured (``conf/alignment/five_point.yaml``).

    Args:
        detector: the YuNet ONNX file (configuration; nothing is downloaded).
        score_threshold: detection score for the first attempt (OpenCV's default 0.9).
        retry_threshold: score for the retries (low threshold, upscaled, padded); ``null`` skips them.
        upscale: factor of the upscaled retry (1 skips it). pad: border of the padded retry, fraction of the side.
        on_failure: ``fallback`` (the caller's fallback crop, counted and listed) or ``error``.
        fallback_fraction: side of the centred fallback square / short side, when the caller gives no box.
        workers: detection threads (null: the CPUs available to the process).
        detect_scale: the image is upscaled by this factor (bilinear) before detection and the landmarks scaled
            back: YuNet places them more precisely on the larger image (measured: SFace on LFW View-2 99.10 % with
            landmarks from the 250 px images, 99.47 % from the 2x images, single pass; the crop is warped from the
            original image either way).
    """

    kind = "five_point"

    def __init__(self, detector: str, score_threshold: float = 0.9, retry_threshold: float | None = 0.2,
                 upscale: float = 2.0, pad: float = 0.25, on_failure: str = "fallback",
                 fallback_fraction: float = 0.6, workers: int | None = None, nms_threshold: float = 0.3,
                 detect_scale: float = 2.0) -> None:
        if on_failure not in ("fallback", "error"):
            raise ValueError(f"alignment.on_failure must be 'fallback' or 'error', got {on_failure!r}")
        for name, v in (("score_threshold", score_threshold), ("retry_threshold", retry_threshold)):
            if v is not None and not 0 < float(v) <= 1:
                raise ValueError(f"alignment.{name} must be in (0, 1], got {v}")
        if not detect_scale > 0:
            raise ValueError(f"alignment.detect_scale must be > 0, got {detect_scale}")
        if not upscale >= 1 or not pad >= 0 or not 0 < fallback_fraction <= 1:
            raise ValueError(f"alignment: upscale must be >= 1 (got {upscale}), pad >= 0 (got {pad}), "
                             f"fallback_fraction in (0, 1] (got {fallback_fraction})")
        self.detector = str(detector)
        self.score_threshold, self.retry_threshold = float(score_threshold), retry_threshold
        self.upscale, self.pad, self.on_failure = float(upscale), float(pad), on_failure
        self.fallback_fraction = float(fallback_fraction)
        self.workers, self.nms_threshold = workers, float(nms_threshold)
        self.detect_scale = float(detect_scale)
        self._local = threading.local()

    def __getstate__(self) -> dict:  # picklable (ddp_spawn, DataLoader workers): the per-thread detectors stay
        state = dict(self.__dict__)
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def check(self) -> None:
        """Fail early (before any decoding) when the detector file is missing or unreadable."""
        if not os.path.isfile(self.detector):
            YuNet(self.detector)  # raises the descriptive error

    def settings_key(self) -> str:
        return (f"yunet:{file_sha256(self.detector)}|{self.score_threshold}|{self.retry_threshold}|{self.upscale}|"
                f"{self.pad}|{self.nms_threshold}|{self.detect_scale}")

    def _net(self) -> YuNet:
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._local.net = YuNet(self.detector, self.nms_threshold)
        return net

    def detect_one(self, rgb: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """(5, 2) landmarks in pixels of ``rgb``, score, stage, number of faces; stage ``fallback`` (NaN points)
        when every attempt fails."""
        h, w = rgb.shape[:2]
        base = self.detect_scale
        attempts: list[tuple[float, float, float]] = [(self.score_threshold, base, 0.0)]
        if self.retry_threshold is not None:
            attempts.append((float(self.retry_threshold), base, 0.0))
            if self.upscale > 1:
                attempts.append((float(self.retry_threshold), base * self.upscale, 0.0))
            if self.pad > 0:
                attempts.append((float(self.retry_threshold), base, self.pad))
        net = self._net()
        for stage, (threshold, scale, pad) in enumerate(attempts):
            img, sx, sy = rgb, 1.0, 1.0
            if scale != 1.0:
                size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
                img = net.cv2.resize(rgb, size, interpolation=net.cv2.INTER_LINEAR)
                sx, sy = size[0] / w, size[1] / h
            border = int(round(pad * max(img.shape[:2])))
            if border:
                img = np.pad(img, ((border, border), (border, border), (0, 0)))
            faces = net.detect(img, threshold)
            if len(faces):
                k = nearest_centre(faces, img.shape[1], img.shape[0])
                pts = faces[k, 4:14].reshape(5, 2).astype(np.float64)
                pts = (pts - border) / [sx, sy]  # the border is added after scaling
                return pts.astype(np.float32), float(faces[k, 14]), stage, len(faces)
        return np.full((5, 2), np.nan, np.float32), 0.0, FALLBACK, 0

    def landmarks(self, paths: list[str], cache_dir: str | None = None, what: str = "alignment",
                  progress: Callable[[int], None] | None = None) -> Landmarks:
        """Landmarks of every image (through the on-disk cache); ``on_failure=error`` raises listing the images
        without a face. ``progress(k)`` is called after each image."""
        from facelearn.data.images import _cache_key, read_rgb

        cache_file = None
        if cache_dir is not None:
            key = hashlib.sha1(f"{self.settings_key()}|{_cache_key(paths, None)}".encode()).hexdigest()[:20]
            cache_file = Path(cache_dir) / f"landmarks-{key}.npz"
            if cache_file.is_file():
                try:
                    with np.load(cache_file, allow_pickle=False) as z:
                        result = Landmarks(z["points"], z["scores"], z["stage"], z["faces"])
                    if len(result.points) == len(paths):
                        log.info("%s: landmarks of %d images from cache %s", what, len(paths), cache_file)
                        self._check_failures(result, paths, what)
                        return result
                except (OSError, ValueError, KeyError) as e:
                    log.warning("landmark cache %s is unreadable (%s): detecting again", cache_file, e)
        n = len(paths)
        points = np.empty((n, 5, 2), np.float32)
        scores, stage, faces = np.empty(n, np.float32), np.empty(n, np.int8), np.empty(n, np.int32)

        def work(i: int) -> None:
            points[i], scores[i], stage[i], faces[i] = self.detect_one(read_rgb(paths[i]))
            if progress is not None:
                progress(i)

        with ThreadPoolExecutor(self.workers or available_cpus()) as ex:
            for _ in ex.map(work, range(n)):
                pass
        result = Landmarks(points, scores, stage, faces)
        log.info("%s: five landmarks of %d images: %s", what, n, result.summary())
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, points=points, scores=scores, stage=stage, faces=faces)
            os.replace(tmp, cache_file)
        self._check_failures(result, paths, what)
        return result

    def _check_failures(self, result: Landmarks, paths: list[str], what: str) -> None:
        failed = [paths[i] for i in np.flatnonzero(result.stage == FALLBACK)]
        if not failed:
            return
        if self.on_failure == "error":
            raise ValueError(f"{what}: no face found in {len(failed)} of {len(paths)} images, e.g. {failed[:5]} "
                             "(alignment.on_failure=fallback uses a fallback crop for them)")
        log.warning("%s: no face found in %d of %d images: they use the fallback crop: %s", what, len(failed),
                    len(paths), failed[:20] + (["..."] if len(failed) > 20 else []))

    def matrices(self, paths: list[str], cache_dir: str | None = None,
                 fallback: Callable[[int], tuple[float, float, float, float] | None] | None = None,
                 what: str = "alignment") -> np.ndarray:
        """(N, 2, 3) matrices from image pixels to the aligned 112 crop; a fallback image i uses the box
        ``fallback(i)`` (left, top, right, bottom) when the caller has one, else the centred ``fallback_fraction``
        square."""
        return self.matrices_of(self.landmarks(paths, cache_dir, what), paths, fallback)

    def matrices_of(self, marks: Landmarks, paths: list[str],
                    fallback: Callable[[int], tuple[float, float, float, float] | None] | None = None) -> np.ndarray:
        """``matrices`` from landmarks already detected."""
        from facelearn.data.alignment import alignment_matrix, box_matrix, center_box
        from facelearn.data.images import image_size

        out = np.empty((len(paths), 2, 3))
        for i, (pts, stage) in enumerate(zip(marks.points, marks.stage)):
            if stage != FALLBACK:
                out[i] = alignment_matrix(pts)
            else:
                box = fallback(i) if fallback is not None else None
                out[i] = box_matrix(box if box is not None else
                                    center_box(*image_size(paths[i]), self.fallback_fraction))
        return out


def available_cpus() -> int:
    """CPUs this process may run on (affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
