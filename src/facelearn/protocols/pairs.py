"""Verification pair sets: LFW-style pairs files over an image folder, insightface ``.bin`` files, synthetic pairs.

A ``PairSet`` holds each distinct image once (uint8), the pairs as index pairs into them, the same/different
flags, the fold of every pair, and (when known) the identity names, used to prove that no benchmark identity was
seen in training.

Folds (the 10-fold protocol): a ``pairs.txt`` with a ``10 300`` header defines its folds (fold k = its k-th block
of 300 matched + 300 mismatched pairs). A View-1 file (header ``N``: N matched then N mismatched pairs) has no
folds; we form 10 folds of contiguous blocks *within* the matched and the mismatched half, so every fold holds
both classes like View 2's. A ``.bin`` file follows insightface: 10 contiguous blocks of its pair list.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelearn.data.images import FaceCrop, crop_resize, decode_faces, rgb_from_bytes
from facelearn.data.records import open_text
from facelearn.data.splits import identity_key
from facelearn.data.synthetic import SyntheticFaces
from facelearn.eval.verification import roc_points, verification_metrics
from facelearn.protocols.base import BenchmarkSet, Protocol

log = logging.getLogger(__name__)


@dataclass
class PairSet(BenchmarkSet):
    """A loaded verification benchmark; its metrics: 10-fold accuracy, AUC, TAR@FAR per scorer (cosine: bare
    names; any other scorer, e.g. IDA: ``<scorer>/<metric>``)."""

    name: str
    images: np.ndarray          # uint8 (M, 3, S, S)
    pairs: np.ndarray           # int64 (P, 2) indices into images
    issame: np.ndarray          # bool (P,)
    folds: np.ndarray           # int64 (P,) fold id of every pair
    identities: set[str] | None = None

    def __post_init__(self) -> None:
        issame = np.asarray(self.issame, dtype=bool)
        if len(self.pairs) == 0 or issame.all() or not issame.any():
            raise ValueError(f"benchmark {self.name}: needs matched and mismatched pairs, got "
                             f"{int(issame.sum())} matched and {int((~issame).sum())} mismatched")
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise ValueError(f"benchmark {self.name}: pairs must be (P, 2), got {self.pairs.shape}")
        if not (len(self.pairs) == len(self.issame) == len(self.folds)):
            raise ValueError(f"benchmark {self.name}: pairs/issame/folds lengths differ")
        if len(self.pairs) and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise ValueError(f"benchmark {self.name}: pair index out of range of {len(self.images)} images")

    def describe(self) -> str:
        return f"{len(self.pairs)} pairs over {len(self.images)} images"

    def metrics(self, embeddings, scorers, fars, curves=None) -> dict[str, float]:
        if not scorers:
            from facelearn.eval.scorers import CosineScorer
            scorers = {"cosine": CosineScorer()}
        pairs = torch.from_numpy(self.pairs)
        out: dict[str, float] = {}
        for name, scorer in scorers.items():
            scores = scorer(embeddings, pairs).double().numpy()
            metrics = verification_metrics(scores, self.issame, self.folds, tuple(fars))
            if curves is not None:
                curves[name] = roc_points(scores, self.issame)
            prefix = "" if name == "cosine" else f"{name}/"
            out.update({prefix + k: v for k, v in metrics.items()})
        return out


def contiguous_folds(n: int, n_folds: int = 10) -> np.ndarray:
    """Fold id of each of n items split into n_folds contiguous blocks (sklearn KFold without shuffling)."""
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def parse_pairs_file(path: str) -> tuple[list[tuple[str, int, str, int]], np.ndarray, np.ndarray]:
    """Parse an LFW pairs file; returns ``[(name1, i1, name2, i2)]``, issame and fold arrays.

    Formats: header ``folds n`` (View 2: ``folds`` blocks of n matched + n mismatched) or ``n`` (View 1: n matched
    then n mismatched). Matched lines: ``name i j``; mismatched: ``name1 i name2 j``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pairs file not found: {path}")
    with open_text(path) as fh:
        lines = [(n, line.split()) for n, line in enumerate(fh, 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty pairs file (expected a header line '10 300' or 'N')")
    header_no, header = lines[0]
    try:
        counts = [int(v) for v in header]
    except ValueError:
        raise ValueError(f"{path}:{header_no}: expected a header of one or two integers, got {' '.join(header)!r}")
    if len(counts) == 1:
        n_folds, per = 1, counts[0]
    elif len(counts) == 2:
        n_folds, per = counts
    else:
        raise ValueError(f"{path}:{header_no}: expected a header 'folds n' or 'n', got {' '.join(header)!r}")
    body = lines[1:]
    if len(body) != 2 * n_folds * per:
        raise ValueError(f"{path}: header announces {2 * n_folds * per} pairs, the file has {len(body)}")
    pairs, issame, folds = [], [], []
    for k, (lineno, f) in enumerate(body):
        fold, pos = divmod(k, 2 * per)
        matched = pos < per
        try:
            if matched and len(f) == 3:
                pairs.append((f[0], int(f[1]), f[0], int(f[2])))
            elif not matched and len(f) == 4:
                pairs.append((f[0], int(f[1]), f[2], int(f[3])))
            else:
                raise ValueError
        except ValueError:
            want = "'name i j' (matched)" if matched else "'name1 i name2 j' (mismatched)"
            raise ValueError(f"{path}:{lineno}: expected {want}, got {' '.join(f)!r}") from None
        if pairs[-1][:2] == pairs[-1][2:]:
            raise ValueError(f"{path}:{lineno}: a pair of an image with itself ({' '.join(f)})")
        for name in (pairs[-1][0], pairs[-1][2]):
            if name in (".", "..") or "/" in name or "\\" in name:
                raise ValueError(f"{path}:{lineno}: {name!r} is not a person's folder name")
        issame.append(matched)
        folds.append(fold)
    issame_a, folds_a = np.array(issame, dtype=bool), np.array(folds, dtype=np.int64)
    if n_folds == 1:  # View 1: 10 contiguous folds within each half
        folds_a = np.concatenate([contiguous_folds(per), contiguous_folds(per)])
    return pairs, issame_a, folds_a


class LFWPairs(Protocol):
    """Pairs from an LFW-style pairs file over ``image_root/<name>/<name>_<i:04d>.<ext>``.

    ``alignment`` (``alignment=five_point``: a ``facelearn.data.landmarks.FivePointAlignment``) aligns every image
    onto the ArcFace template from detected landmarks; an image without a detected face takes the centre crop.
    ``exclude_people``: a file of names (one per line; e.g. a run's ``train_identities.txt``): every pair with one of
    them is dropped, the counts logged (View-2 of the people a model was not trained on).
    """

    def __init__(self, pairs_file: str, image_root: str, center_crop: int | None = None, name: str | None = None,
                 extension: str = "jpg", alignment=None, exclude_people: str | None = None) -> None:
        self.pairs_file, self.image_root, self.center_crop = str(pairs_file), str(image_root), center_crop
        self.alignment = alignment
        self.exclude_people = None if exclude_people is None else str(exclude_people)
        # identity_key of each excluded name (read once, when the benchmark is configured)
        self._excluded = ({identity_key(n) for n in read_names(self.exclude_people, "exclude_people")}
                          if self.exclude_people else set())
        self.name, self.given_name = name or os.path.splitext(os.path.basename(self.pairs_file))[0], name
        self.extension = extension

    def image_path(self, name: str, index: int) -> str:
        return os.path.join(self.image_root, name, f"{name}_{index:04d}.{self.extension}")

    def read_pairs(self) -> tuple[list[tuple[str, int, str, int]], np.ndarray, np.ndarray, list[int]]:
        """The pairs (without those of ``exclude_people``), same flags, folds and the pairs file's line numbers."""
        pairs, issame, folds = parse_pairs_file(self.pairs_file)
        with open_text(self.pairs_file) as fh:
            linenos = [n for n, line in enumerate(fh, 1) if line.strip()][1:]
        if not self._excluded:
            return pairs, issame, folds, linenos
        keep = np.array([identity_key(p[0]) not in self._excluded and identity_key(p[2]) not in self._excluded
                         for p in pairs], dtype=bool)
        if not keep[issame].any() or not keep[~issame].any():
            raise ValueError(f"{self.pairs_file}: exclude_people={self.exclude_people} leaves no "
                             f"{'matched' if not keep[issame].any() else 'mismatched'} pair")
        log.info("%s: exclude_people=%s drops %d of %d pairs (kept: %d matched, %d mismatched)", self.name,
                 self.exclude_people, int((~keep).sum()), len(pairs), int((keep & issame).sum()),
                 int((keep & ~issame).sum()))
        return ([p for p, k in zip(pairs, keep) if k], issame[keep], folds[keep],
                [n for n, k in zip(linenos, keep) if k])

    def identities(self) -> set[str]:
        pairs = self.read_pairs()[0]
        return {p[0] for p in pairs} | {p[2] for p in pairs}

    def load(self, image_size: int, cache_dir: str | None = None) -> PairSet:
        pairs, issame, folds, linenos = self.read_pairs()
        keys: dict[tuple[str, int], int] = {}
        index = np.empty((len(pairs), 2), dtype=np.int64)
        for row, (n1, i1, n2, i2) in enumerate(pairs):
            for col, key in enumerate(((n1, i1), (n2, i2))):
                if key not in keys:
                    path = self.image_path(*key)
                    if not os.path.isfile(path):
                        raise FileNotFoundError(f"{self.pairs_file}:{linenos[row]}: image {path} does not exist")
                    keys[key] = len(keys)
                index[row, col] = keys[key]
        paths = [self.image_path(*k) for k in keys]
        images = decode_faces(paths, FaceCrop(image_size, self.center_crop), cache_dir, self.alignment,
                              what=f"benchmark {self.name}")
        names = {k[0] for k in keys}
        return PairSet(self.name, images, index, issame, folds, names)


def read_names(path: str, option: str) -> set[str]:
    """A file of names, one per line (blank lines and ``#`` comments ignored)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option}: {path} does not exist (a file of person names, one per line, e.g. a "
                                "training run's train_identities.txt)")
    with open_text(path) as fh:
        names = {line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")}
    if not names:
        raise ValueError(f"{option}: {path} holds no names")
    return names


class _BinUnpickler(pickle.Unpickler):
    """Unpickles only what an insightface ``.bin`` holds: lists/tuples of bytes and bools, and the numpy objects
    (bool arrays and scalars) some writers used. Any other global (``os.system``, ``builtins.eval``, ...) is
    refused, so a hostile file cannot run code while it is read."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode"), ("builtins", "bytearray")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a .bin holds only image bytes and "
                                     "same/different flags)")


def _bin_cache_file(path: str, image_size: int, cache_dir: str | None) -> Path | None:
    """The decoded-array cache of a ``.bin`` at ``image_size``: keyed by the file's path, size and mtime."""
    if cache_dir is None:
        return None
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{image_size}|bin-v1".encode())
    return Path(cache_dir) / f"bin-{key.hexdigest()[:20]}.npz"


def _decode_bin(path: str, bins: list, crop: FaceCrop, threads: int) -> np.ndarray:
    images = np.empty((len(bins), 3, crop.image_size, crop.image_size), dtype=np.uint8)

    def work(i: int) -> None:  # the decoders release the GIL: threads scale
        try:
            images[i] = crop_resize(rgb_from_bytes(bytes(bins[i])), crop)
        except (OSError, ValueError, SyntaxError) as e:
            raise ValueError(f"{path}: image {i} (pair {i // 2}) cannot be decoded: {e}") from e

    with ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(work, range(len(bins))):
            pass
    return images


def load_bin_pairs(path: str, image_size: int, name: str | None = None, cache_dir: str | None = None,
                   threads: int | None = None) -> PairSet:
    """An insightface verification ``.bin``: a pickle of ``(bins, issame_list)``, ``bins`` the encoded images of
    consecutive pairs. Read with a restricted unpickler (``_BinUnpickler``): a file that needs anything else,
    e.g. code to run, is refused with an error naming it. Decoded with a thread pool (the run's decode threads)
    and cached under ``cache_dir`` like the other benchmarks (agedb_30 is decoded once, not on every run)."""
    from facelearn.runtime.threads import decode_threads
    if not os.path.isfile(path):
        raise FileNotFoundError(f"benchmark .bin not found: {path}")
    cache_file = _bin_cache_file(path, image_size, cache_dir)
    images = issame = None
    if cache_file is not None and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                images, issame = z["images"], z["issame"]
            if images.shape[1:] != (3, image_size, image_size) or len(images) != 2 * len(issame):
                raise ValueError(f"holds {images.shape}")
            log.info("%s: %d decoded images from cache %s", path, len(images), cache_file)
        except (OSError, ValueError, KeyError) as e:
            log.warning("decoded .bin cache %s is unreadable (%s): decoding %s again", cache_file, e, path)
            images = issame = None
    if images is None:
        with open(path, "rb") as fh:
            try:
                bins, issame_list = _BinUnpickler(fh, encoding="bytes").load()
            except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
                raise ValueError(f"{path}: not an insightface .bin (pickled (bins, issame_list)): {e}") from e
        if not isinstance(bins, (list, tuple)) or not isinstance(issame_list, (list, tuple, np.ndarray)):
            raise ValueError(f"{path}: expected (a list of encoded images, a list of same/different flags), got "
                             f"({type(bins).__name__}, {type(issame_list).__name__})")
        odd = next((i for i, b in enumerate(bins) if not isinstance(b, (bytes, bytearray, np.ndarray))), None)
        if odd is not None:
            raise ValueError(f"{path}: image {odd} is a {type(bins[odd]).__name__}, not encoded image bytes")
        flags = list(issame_list)
        if not all(isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1))
                   for v in flags):
            raise ValueError(f"{path}: the same/different flags must be booleans (or 0/1)")
        if len(bins) != 2 * len(flags):
            raise ValueError(f"{path}: {len(bins)} images for {len(flags)} pairs (expected 2 per pair)")
        images = _decode_bin(path, bins, FaceCrop(image_size), threads or decode_threads())
        issame = np.asarray(issame_list, dtype=bool)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, images=images, issame=issame)
            os.replace(tmp, cache_file)  # atomic: a concurrent rank never reads half a file
    n = len(issame)
    pairs = np.arange(2 * n, dtype=np.int64).reshape(n, 2)
    return PairSet(name or os.path.splitext(os.path.basename(path))[0], images, pairs,
                   np.asarray(issame, dtype=bool), contiguous_folds(n), None)


class BinPairs(Protocol):
    """Config wrapper for ``load_bin_pairs`` (restricted unpickling: see ``_BinUnpickler``)."""

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path, self.name = str(path), name or os.path.splitext(os.path.basename(str(path)))[0]
        self.given_name = name

    def identities(self) -> set[str] | None:
        return None

    def load(self, image_size: int, cache_dir: str | None = None) -> PairSet:
        return load_bin_pairs(self.path, image_size, self.name, cache_dir)


#: the verification sets insightface ships beside its training .rec files (faces_emore, ms1m-retinaface-t1,
#: glint360k, ...); arcface_torch's configs validate on ``val_targets = ['lfw', 'cfp_fp', 'agedb_30']`` of them.
INSIGHTFACE_VAL = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")


class BinFolder(Protocol):
    """Every ``<target>.bin`` of a dataset folder, each its own benchmark named by its file (``bench/agedb_30/...``),
    as arcface_torch reads ``val_targets`` from the training set's folder. Targets absent from the folder are
    skipped with one log line; a folder with none of them is an error naming it."""

    def __init__(self, root: str, targets: list[str] | tuple[str, ...] = INSIGHTFACE_VAL) -> None:
        self.root, self.targets = str(root), [str(t) for t in targets]
        self.name = "insightface_val"

    def present(self) -> list[str]:
        """The targets whose ``.bin`` is in the folder, in the configured order."""
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"benchmark root {self.root} is not a folder (expected a dataset folder holding "
                                    f"{', '.join(t + '.bin' for t in self.targets)})")
        return [t for t in self.targets if os.path.isfile(os.path.join(self.root, f"{t}.bin"))]

    def expand(self, name: str) -> dict[str, Protocol]:
        found = self.present()
        if not found:
            raise FileNotFoundError(f"benchmark {name}: none of {', '.join(t + '.bin' for t in self.targets)} "
                                    f"is in {self.root}")
        missing = [t for t in self.targets if t not in found]
        if missing:
            log.info("benchmark %s: %s (not in %s: %s)", name, ", ".join(found), self.root, ", ".join(missing))
        return {t: BinPairs(os.path.join(self.root, f"{t}.bin"), name=t) for t in found}

    def identities(self) -> set[str] | None:  # expanded before use (expand_protocols)
        raise TypeError("BinFolder is expanded into its .bin sets before use (facelearn.protocols.expand_protocols)")

    def load(self, image_size: int, cache_dir: str | None = None) -> PairSet:
        raise TypeError("BinFolder is expanded into its .bin sets before use (facelearn.protocols.expand_protocols)")


class SyntheticPairs(Protocol):
    """A held-out synthetic verification set: its own identities (its own seed), ``num_pairs`` matched and as many
    mismatched pairs, ``hard_fraction`` of the mismatched ones between look-alike members of one family."""

    def __init__(self, num_identities: int = 300, images_per_identity: int = 4, num_pairs: int = 1000,
                 hard_fraction: float = 0.5, seed: int = 1000, name: str | None = None, **faces_kw) -> None:
        self.name, self.given_name = name or "synthetic", name
        self.faces = SyntheticFaces(num_identities=num_identities, images_per_identity=images_per_identity,
                                    seed=seed, name=self.name, **faces_kw)
        if images_per_identity < 2:
            raise ValueError("synthetic benchmark needs images_per_identity >= 2 for matched pairs")
        self.num_pairs, self.hard_fraction, self.seed = num_pairs, hard_fraction, seed

    def identities(self) -> set[str]:
        return set(self.faces.identity_names())

    def load(self, image_size: int, cache_dir: str | None = None) -> PairSet:
        rec = self.faces.load(image_size)
        k, n_id = self.faces.range[0], self.faces.num_identities
        rng = np.random.default_rng(self.seed)
        ident = rng.integers(0, n_id, self.num_pairs)
        a, b = np.array([rng.choice(k, 2, replace=False) for _ in range(self.num_pairs)]).T
        pos = np.stack([ident * k + a, ident * k + b], 1)
        fam = self.faces.family_size
        neg = []
        for j in range(self.num_pairs):
            i1 = int(rng.integers(n_id))
            if j < self.hard_fraction * self.num_pairs and fam > 1:
                base = (i1 // fam) * fam
                members = [m for m in range(base, min(base + fam, n_id)) if m != i1]
                i2 = int(rng.choice(members)) if members else (i1 + 1) % n_id
            else:
                i2 = int(rng.integers(n_id - 1))
                i2 += i2 >= i1
            neg.append((i1 * k + rng.integers(k), i2 * k + rng.integers(k)))
        neg = np.array(neg, dtype=np.int64)
        rng.shuffle(neg)
        pairs = np.concatenate([pos, neg]).astype(np.int64)
        issame = np.r_[np.ones(self.num_pairs, bool), np.zeros(self.num_pairs, bool)]
        folds = np.concatenate([contiguous_folds(self.num_pairs), contiguous_folds(self.num_pairs)])
        return PairSet(self.name, rec.images, pairs, issame, folds, rec.identity_set)
