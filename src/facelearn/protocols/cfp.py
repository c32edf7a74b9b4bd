"""CFP (Celebrities in Frontal-Profile, Sengupta et al., WACV 2016) verification: the official FF / FP protocol.

Layout (``../shared/data/cfp/README.md``): ``Protocol/Pair_list_F.txt`` and ``Pair_list_P.txt`` list the 5,000
frontal and 2,000 profile images (``index path``, paths relative to ``Protocol/``); ``Protocol/Split/{FF,FP}/01..10/
{same,diff}.txt`` hold 10 folds of 350 same + 350 different pairs (``i,j``, 1-based; for FP ``i`` indexes the frontal
list and ``j`` the profile list). ``Data/list_name.txt`` names the 500 people (line k = person ``k:03d``).

Crops. CFP images are loose, non-square face crops of varying size. Each ships 30 fiducials that annotate **one
half** of the face: the jaw contour from ear to chin (points 1-9), one eyebrow and eye (10-18), the nose line and
half of the mouth (19-30). A two-eye similarity alignment is therefore impossible, so the crop is a landmark box:
for a frontal image the annotated half is mirrored about the chin (point 9, on the midline), giving the whole face;
for a profile the annotated side is the visible face. The box (eyebrow to chin vertically) is made square around
its centre and enlarged by ``crop_scale`` (1.25 by default, so brow-to-chin fills about four fifths of the crop, as in
the 150 px centre crop of LFW deep-funneled the LFW recipes train on), then resized. Out-of-image parts are black.
With ``alignment=five_point`` the crops are instead five-point aligned from detected landmarks (YuNet finds faces
in all but one of CFP's 7,000 images, profiles included; that one keeps its landmark box).

Identities: the 500 names of ``list_name.txt``; they use spaces where LFW uses underscores, and
``facelearn.data.splits`` compares identities with the two treated alike and ignoring case, so LFW training
excludes the shared people and the disjointness check catches any that remain: 172 match with spaces =
underscores (the count of the data README), 4 more differ only in case ("Lebron James" / "LeBron_James",
"Leonardo Dicaprio", "John Mcenroe", "Queen Elizabeth Ii"), 176 in all.
"""

from __future__ import annotations

import os

import numpy as np

from facelearn.data.images import FaceCrop, decode_faces
from facelearn.data.records import open_text
from facelearn.protocols.base import Protocol
from facelearn.protocols.pairs import PairSet

PROTOCOLS = ("FF", "FP")
NUM_FOLDS = 10


def _read_image_list(path: str, root: str) -> list[str]:
    """``index path`` lines (1-based, consecutive) -> absolute image paths, checked to exist under ``root``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CFP image list not found: {path} (expected the official CFP layout under "
                                f"paths.cfp_root, env FACELEARN_CFP)")
    base, root_real = os.path.dirname(path), os.path.realpath(root)
    out: list[str] = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(out) + 1:
                raise ValueError(f"{path}:{lineno}: expected '{len(out) + 1} <relative image path>', got "
                                 f"{line.strip()!r}")
            full = os.path.realpath(os.path.join(base, parts[1]))
            if os.path.commonpath([full, root_real]) != root_real:
                raise ValueError(f"{path}:{lineno}: {parts[1]!r} points outside the CFP root {root}")
            out.append(full)
    if not out:
        raise ValueError(f"{path}: no images listed")
    return out


def _read_pairs(path: str, n_first: int, n_second: int) -> np.ndarray:
    """``i,j`` lines (1-based) -> (P, 2) zero-based indices, range-checked."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CFP pair file not found: {path}")
    rows = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                i, j = (int(v) for v in line.strip().split(","))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'i,j' (two 1-based image indices), got "
                                 f"{line.strip()!r}") from None
            if not (1 <= i <= n_first and 1 <= j <= n_second):
                raise ValueError(f"{path}:{lineno}: index out of range (1..{n_first}, 1..{n_second}): {i},{j}")
            rows.append((i - 1, j - 1))
    if not rows:
        raise ValueError(f"{path}: no pairs")
    return np.array(rows, dtype=np.int64)


def read_fiducials(path: str) -> np.ndarray:
    """The 30 ``x,y`` landmark points of one image, (30, 2) float."""
    try:
        pts = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise ValueError(f"CFP fiducials {path}: cannot read 30 'x,y' lines: {e}") from e
    if pts.shape != (30, 2):
        raise ValueError(f"CFP fiducials {path}: expected 30 'x,y' points, got shape {pts.shape}")
    return pts


def landmark_box(points: np.ndarray, frontal: bool, scale: float) -> tuple[float, float, float, float]:
    """Square crop box (left, top, right, bottom) around the face the half-face fiducials describe."""
    xs, ys = points[:, 0], points[:, 1]
    if frontal:
        mid = points[8, 0]  # point 9, the chin, lies on the face's midline
        half = float(np.abs(xs - mid).max())
        x0, x1 = mid - half, mid + half
    else:
        x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = scale * max(x1 - x0, y1 - y0)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def cfp_name_list(root: str) -> list[str]:
    path = os.path.join(root, "Data", "list_name.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CFP name list not found: {path} (expected the official CFP layout under "
                                "paths.cfp_root, env FACELEARN_CFP)")
    with open_text(path) as fh:
        names = [line.strip() for line in fh if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate names")
    return names


class CFPPairs(Protocol):
    """CFP-FF or CFP-FP verification (10 folds of 350 same + 350 different pairs; 7,000 pairs in all).

    Args:
        root: the CFP folder (``Data/``, ``Protocol/``).
        protocol: ``FF`` (frontal-frontal) or ``FP`` (frontal-profile).
        crop_scale: side of the square crop / side of the landmark box (see the module docstring).
        alignment: a ``facelearn.data.landmarks.FivePointAlignment`` (``alignment=five_point``): every image
            aligned onto the ArcFace template from detected landmarks (CFP's own fiducials cover half a face);
            an image without a detected face takes its fiducial box crop.
    """

    def __init__(self, root: str, protocol: str = "FP", crop_scale: float = 1.25, name: str | None = None,
                 alignment=None) -> None:
        protocol = str(protocol).upper()
        if protocol not in PROTOCOLS:
            raise ValueError(f"CFP protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not crop_scale > 0:
            raise ValueError(f"CFP crop_scale must be > 0, got {crop_scale}")
        self.root, self.protocol, self.crop_scale = str(root), protocol, float(crop_scale)
        self.name, self.given_name = name or f"cfp_{protocol.lower()}", name
        self.alignment = alignment

    def identities(self) -> set[str]:
        return set(cfp_name_list(self.root))

    def _person(self, path: str) -> int:
        # .../Data/Images/NNN/{frontal,profile}/xx.jpg
        return int(os.path.basename(os.path.dirname(os.path.dirname(path))))

    def load(self, image_size: int, cache_dir: str | None = None) -> PairSet:
        proto = os.path.join(self.root, "Protocol")
        data_root = os.path.join(self.root, "Data")
        frontal = _read_image_list(os.path.join(proto, "Pair_list_F.txt"), data_root)
        second = frontal if self.protocol == "FF" else _read_image_list(os.path.join(proto, "Pair_list_P.txt"),
                                                                       data_root)
        pairs, issame, folds = [], [], []
        for k in range(NUM_FOLDS):
            fold_dir = os.path.join(proto, "Split", self.protocol, f"{k + 1:02d}")
            for fname, same in (("same.txt", True), ("diff.txt", False)):
                p = _read_pairs(os.path.join(fold_dir, fname), len(frontal), len(second))
                pairs.append(p)
                issame.append(np.full(len(p), same))
                folds.append(np.full(len(p), k, dtype=np.int64))
        pairs_a, issame_a, folds_a = np.concatenate(pairs), np.concatenate(issame), np.concatenate(folds)
        # Distinct images used by the pairs, frontal first (FP's second column indexes the profile list).
        offset = 0 if self.protocol == "FF" else len(frontal)
        all_paths = frontal if self.protocol == "FF" else frontal + second
        pairs_a[:, 1] += offset
        used = np.unique(pairs_a)
        remap = np.full(len(all_paths), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        paths = [all_paths[i] for i in used]
        names = cfp_name_list(self.root)
        for row, (i, j) in enumerate(pairs_a):
            if (self._person(all_paths[i]) == self._person(all_paths[j])) != issame_a[row]:
                raise ValueError(f"CFP {self.protocol} fold {folds_a[row] + 1}: pair {i + 1},{j - offset + 1} is "
                                 f"listed as {'same' if issame_a[row] else 'diff'} but names "
                                 f"{'different people' if issame_a[row] else 'one person'}")
        boxes = np.array([self.box(p) for p in paths])
        images = decode_faces(paths, FaceCrop(image_size), cache_dir, self.alignment, boxes=boxes,
                              what=f"benchmark {self.name}")
        people = {names[self._person(p) - 1] for p in paths}
        return PairSet(self.name, images, remap[pairs_a], issame_a, folds_a, people)

    def box(self, image_path: str) -> tuple[float, float, float, float]:
        root = os.path.realpath(self.root)
        rel = os.path.relpath(os.path.realpath(image_path), os.path.join(root, "Data", "Images"))
        fid = os.path.join(root, "Data", "Fiducials", os.path.splitext(rel)[0] + ".txt")
        frontal = os.path.basename(os.path.dirname(image_path)) == "frontal"
        return landmark_box(read_fiducials(fid), frontal, self.crop_scale)
