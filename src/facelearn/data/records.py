"""Identity-labelled image records and their sources (identity folder, list file).

A source lists samples as ``FaceRecords``: one identity name per sample plus either file paths (decoded later,
after the split picked the images to keep) or already-rendered uint8 images (the synthetic source). Names, not
integer labels, identify people, so train/benchmark identity overlap can be checked across sources.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelearn.data.images import FaceCrop, decode_faces

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff")


@contextmanager
def open_text(path: str | os.PathLike):
    """A UTF-8 text file (pairs, list, protocol and meta files); bytes that are not UTF-8 give an error naming the
    file instead of a bare UnicodeDecodeError from wherever the line was read."""
    try:
        with open(path, encoding="utf-8") as fh:
            yield fh
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} of a line cannot be decoded)") from None


@dataclass
class FaceRecords:
    """Samples of a face dataset: ``identities[i]`` names the person of sample i."""

    identities: np.ndarray
    paths: list[str] | None = None
    images: np.ndarray | None = None  # uint8 (N, 3, S, S) when the source renders images itself
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.identities = np.asarray(self.identities, dtype=object)
        n = len(self.identities)
        if self.paths is None and self.images is None:
            raise ValueError(f"{self.source}: records need paths or images")
        if self.paths is not None and len(self.paths) != n:
            raise ValueError(f"{self.source}: {len(self.paths)} paths for {n} identities")
        if self.images is not None and len(self.images) != n:
            raise ValueError(f"{self.source}: {len(self.images)} images for {n} identities")

    def __len__(self) -> int:
        return len(self.identities)

    @property
    def identity_set(self) -> set[str]:
        return set(self.identities.tolist())

    def subset(self, index: np.ndarray) -> "FaceRecords":
        index = np.asarray(index, dtype=np.int64)
        return FaceRecords(
            identities=self.identities[index],
            paths=None if self.paths is None else [self.paths[i] for i in index],
            images=None if self.images is None else self.images[index],
            source=self.source, meta=dict(self.meta))

    def decode(self, crop: FaceCrop, cache_dir: str | None = None, bad_images=None) -> np.ndarray:
        """uint8 (N, 3, S, S) images of these records (decoded from files once, through the cache)."""
        if self.images is not None:
            if self.images.shape[-1] != crop.image_size:
                raise ValueError(f"{self.source}: rendered at {self.images.shape[-1]}px, expected {crop.image_size}")
            return self.images
        return decode_faces(self.paths, crop, cache_dir, self.meta.get("alignment"),
                            what=f"training images of {self.source}", bad_images=bad_images)


def image_files(root: str, what: str) -> list[str]:
    """Every image file below ``root`` (recursively, sorted); ``what`` names the option in errors."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{what}: {root} is not a directory")
    paths = sorted(str(p) for p in base.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise ValueError(f"{what}: {root} holds no images ({IMAGE_EXTENSIONS})")
    return paths


class IdentityFolder:
    """``root/<identity>/<image>``: every sub-folder is one person, every image file in it one sample.

    Files with other extensions are an error (listed by name), not silently skipped, unless ``ignore_other_files``.
    ``alignment`` (``alignment=five_point``) aligns the images kept for training onto the ArcFace template.
    """

    def __init__(self, root: str, center_crop: int | None = None, ignore_other_files: bool = False,
                 alignment=None) -> None:
        self.root = str(root)
        self.center_crop = center_crop
        self.alignment = alignment
        self.ignore_other_files = ignore_other_files

    def load(self, image_size: int) -> FaceRecords:
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} is not a directory (expected root/<identity>/<image>)")
        identities, paths, others = [], [], []
        for person in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(person.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    identities.append(person.name)
                    paths.append(str(f))
                elif f.is_file():
                    others.append(str(f))
        if others and not self.ignore_other_files:
            raise ValueError(f"{root}: {len(others)} files that are not images ({IMAGE_EXTENSIONS}), e.g. "
                             f"{others[:3]}; remove them or set ignore_other_files=true")
        if not paths:
            raise ValueError(f"{root} holds no images: expected root/<identity>/<image> with extensions "
                             f"{IMAGE_EXTENSIONS}")
        return FaceRecords(np.array(identities, dtype=object), paths=paths, source=str(root),
                           meta={"center_crop": self.center_crop, "alignment": self.alignment})


class ImageList:
    """A list file of ``relative/path label`` lines (label: any identity name or integer), paths under ``root``.

    Blank lines and ``#`` comments are allowed; any other line that does not split into exactly two fields is an
    error naming the file and line number. ``alignment``: as ``IdentityFolder``'s.
    """

    def __init__(self, root: str, list_file: str, center_crop: int | None = None, alignment=None) -> None:
        self.root = str(root)
        self.list_file = str(list_file)
        self.center_crop = center_crop
        self.alignment = alignment

    def load(self, image_size: int) -> FaceRecords:
        if not os.path.isfile(self.list_file):
            raise FileNotFoundError(f"list file not found: {self.list_file}")
        identities, paths = [], []
        root_real = os.path.realpath(self.root)
        seen: dict[str, tuple[int, str]] = {}
        kinds: dict[bool, int] = {}  # is-integer label -> first line with such a label
        with open_text(self.list_file) as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                fields = text.split()
                if len(fields) != 2 or "\x00" in text:
                    raise ValueError(f"{self.list_file}:{lineno}: expected 'relative/path label', got {text!r}")
                rel, label = fields
                where = f"{self.list_file}:{lineno}"
                path = os.path.join(self.root, rel)
                real = os.path.realpath(path)
                if os.path.isabs(rel) or os.path.commonpath([real, root_real]) != root_real:
                    raise ValueError(f"{where}: {rel!r} is not a path inside the data root {self.root} "
                                     "(absolute paths and '..' are refused)")
                if label.lstrip("-").isdigit() and label.startswith("-"):
                    raise ValueError(f"{where}: label {label!r} is negative (expected an identity name or an "
                                     "integer >= 0)")
                kinds.setdefault(label.isdigit(), lineno)
                if len(kinds) == 2:
                    raise ValueError(f"{self.list_file}: integer labels (first on line {kinds[True]}) and name "
                                     f"labels (first on line {kinds[False]}) are mixed; use one kind")
                if real in seen:
                    first, first_label = seen[real]
                    what = "again" if first_label == label else f"under label {first_label!r} and {label!r}"
                    raise ValueError(f"{where}: image {rel!r} is listed {what} (first on line {first})")
                seen[real] = (lineno, label)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{where}: image {path} does not exist")
                paths.append(path)
                identities.append(label)
        if not paths:
            raise ValueError(f"{self.list_file} lists no images")
        return FaceRecords(np.array(identities, dtype=object), paths=paths, source=self.list_file,
                           meta={"center_crop": self.center_crop, "alignment": self.alignment})
