"""IJB-B / IJB-C 1:1 template verification, in the layout of insightface's IJB release (``benchmark=ijbb|ijbc``).

``root/meta/<name>_face_tid_mid.txt`` (image, template id, media id), ``root/meta/<name>_template_pair_label.txt``
(template 1, template 2, label 1/0), ``root/meta/<name>_name_5pts_score.txt`` (image, 5 landmarks x/y, detector
score) and the images in ``root/loose_crop/``. Each image is aligned from its 5 landmarks onto the ArcFace template
and embedded once (with the model's flip TTA); template features follow insightface's ``eval_ijbc.py``
(``image2template_feature``) and FaceX-Zoo's IJB evaluator: within a template, the images of one media (video frames
of one clip, or one still) are averaged, the media features summed, the result L2-normalised; with
``detector_score`` each image feature is first multiplied by its detector score (insightface's
``use_detector_score``). Options: ``media_pooling=false`` sums the images directly, ``detector_score=false`` drops
the weighting. One difference: insightface can pool un-normalised features (``use_norm_score``); facelearn pools
the L2-normalised image embeddings every benchmark uses (its ``use_norm_score=False`` setting).

Scores: every pair scorer (cosine, IDA-R, IDA-L) on the template features, in chunks of pairs (IJB-C has 15.7M
pairs: memory stays bounded by ``chunk`` x D). Metrics: ROC AUC and TAR at every configured FAR plus the field's
1e-6 ... 1e-1 (TAR at the threshold accepting at most FAR of the negatives, ``eval.verification.tar_at_far``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from facelearn.eval.verification import roc_auc, roc_points, tar_at_far
from facelearn.protocols.base import BenchmarkSet, Protocol

log = logging.getLogger(__name__)

#: the FARs IJB results are reported at
IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class IJBMeta:
    """One IJB protocol's metadata: per image (names, templates, medias, landmarks (N, 5, 2), detector scores) and
    the template pairs (P, 2) with their labels."""

    names: list[str]
    templates: np.ndarray
    medias: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray


def _rows(path: str, columns: int, what: str) -> list[list[str]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IJB {what} file {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != columns:
                raise ValueError(f"{path}:{n}: expected {columns} columns ({what}), got {len(parts)}")
            rows.append(parts)
    if not rows:
        raise ValueError(f"{path}: no {what} lines")
    return rows


def _numbers(rows: list[list[str]], cols: slice, path: str, kind: type) -> np.ndarray:
    try:
        return np.array([[kind(v) for v in r[cols]] for r in rows])
    except ValueError as e:
        what = "integer" if kind is int else "number"
        raise ValueError(f"{path}: a column of {what}s holds something else ({e})") from None


def read_meta(root: str, name: str) -> IJBMeta:
    """Read and cross-check the three meta files of ``name`` (``ijbb`` / ``ijbc``) under ``root/meta``."""
    meta = os.path.join(root, "meta")
    tid_path = os.path.join(meta, f"{name}_face_tid_mid.txt")
    pair_path = os.path.join(meta, f"{name}_template_pair_label.txt")
    lmk_path = os.path.join(meta, f"{name}_name_5pts_score.txt")
    tid = _rows(tid_path, 3, "image / template / media")
    lmk = _rows(lmk_path, 12, "image / 5 landmarks / detector score")
    pairs = _rows(pair_path, 3, "template / template / label")
    names = [r[0] for r in tid]
    if [r[0] for r in lmk] != names:
        raise ValueError(f"{lmk_path} and {tid_path} list different images (or in another order): the release "
                         "lists the same images in the same order")
    for name_ in names:
        if os.path.isabs(name_) or ".." in name_.replace("\\", "/").split("/"):
            raise ValueError(f"{tid_path}: image {name_!r} is not a file name inside loose_crop/")
    ids = _numbers(tid, slice(1, 3), tid_path, int)
    points = _numbers(lmk, slice(1, 11), lmk_path, float).reshape(-1, 5, 2)
    scores = _numbers(lmk, slice(11, 12), lmk_path, float)[:, 0]
    pair_ids = _numbers(pairs, slice(0, 3), pair_path, int)
    labels = pair_ids[:, 2]
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError(f"{pair_path}: labels must be 0 or 1")
    unknown = np.setdiff1d(pair_ids[:, :2], ids[:, 0])
    if len(unknown):
        raise ValueError(f"{pair_path}: {len(unknown)} template ids have no image in {tid_path} (e.g. {unknown[0]})")
    return IJBMeta(names, ids[:, 0], ids[:, 1], points, scores, pair_ids[:, :2], labels.astype(bool))


def template_features(feats: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                      weights: np.ndarray | None = None, media_pooling: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(template ids sorted, their L2-normalised features): per template, the mean feature of each media, summed
    (``media_pooling``; else the sum of its images), each image first scaled by ``weights`` when given."""
    f = np.asarray(feats, np.float64)
    if weights is not None:
        f = f * np.asarray(weights, np.float64)[:, None]
    tids, t_index = np.unique(templates, return_inverse=True)
    if media_pooling:
        keys, m_index = np.unique(np.stack([t_index, np.asarray(medias)], 1), axis=0, return_inverse=True)
        m_index = m_index.reshape(-1)
        sums = np.zeros((len(keys), f.shape[1]))
        np.add.at(sums, m_index, f)
        media_mean = sums / np.bincount(m_index, minlength=len(keys))[:, None]
        out = np.zeros((len(tids), f.shape[1]))
        np.add.at(out, keys[:, 0], media_mean)
    else:
        out = np.zeros((len(tids), f.shape[1]))
        np.add.at(out, t_index, f)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return tids, (out / np.maximum(norms, 1e-12)).astype(np.float32)


class TemplateSet(BenchmarkSet):
    """Aligned images of an IJB protocol and what its template metrics need."""

    identities = None  # IJB subject ids are not names of training identities: overlap cannot be checked

    def __init__(self, name: str, images: np.ndarray, meta: IJBMeta, detector_score: bool = True,
                 media_pooling: bool = True, chunk: int = 200_000) -> None:
        self.name, self.images, self.meta = name, images, meta
        self.detector_score, self.media_pooling, self.chunk = detector_score, media_pooling, int(chunk)
        tids = np.unique(meta.templates)
        self.pair_index = np.searchsorted(tids, meta.pairs)  # template ids -> rows of the template features

    def describe(self) -> str:
        m = self.meta
        return (f"{len(m.labels)} template pairs ({int(m.labels.sum())} genuine) over {len(np.unique(m.templates))} "
                f"templates of {len(self.images)} images")

    def template_features(self, embeddings: torch.Tensor) -> np.ndarray:
        weights = self.meta.scores if self.detector_score else None
        return template_features(embeddings.float().cpu().numpy(), self.meta.templates, self.meta.medias, weights,
                                 self.media_pooling)[1]

    def metrics(self, embeddings, scorers, fars, curves=None) -> dict[str, float]:
        if not scorers:
            from facelearn.eval.scorers import CosineScorer
            scorers = {"cosine": CosineScorer()}
        feats = torch.from_numpy(self.template_features(embeddings))
        pairs = torch.from_numpy(self.pair_index)
        issame = self.meta.labels
        out: dict[str, float] = {}
        for name, scorer in scorers.items():
            scores = np.concatenate([scorer(feats, pairs[i:i + self.chunk]).double().numpy()
                                     for i in range(0, len(pairs), self.chunk)])
            prefix = "" if name == "cosine" else f"{name}/"
            out[prefix + "auc"] = roc_auc(scores, issame)
            for far in sorted(set(fars) | set(IJB_FARS)):
                out[f"{prefix}tar@far={far:g}"] = tar_at_far(scores, issame, far)
            if curves is not None:
                curves[name] = roc_points(scores, issame)
        return out


class IJBTemplates(Protocol):
    """``benchmark=ijbb`` / ``ijbc``: insightface's IJB release under ``root`` (see the module docstring)."""

    def __init__(self, root: str, name: str = "ijbc", detector_score: bool = True, media_pooling: bool = True,
                 chunk: int = 200_000) -> None:
        if name not in ("ijbb", "ijbc"):
            raise ValueError(f"IJB name must be ijbb or ijbc, got {name!r}")
        self.root, self.ijb = str(root), name
        self.name = name
        self.detector_score, self.media_pooling, self.chunk = detector_score, media_pooling, chunk

    def identities(self) -> set[str] | None:
        return None

    def load(self, image_size: int, cache_dir: str | None = None) -> TemplateSet:
        from facelearn.data.alignment import alignment_matrix
        from facelearn.data.images import FaceCrop, decode_images
        meta = read_meta(self.root, self.ijb)
        paths = [os.path.join(self.root, "loose_crop", n) for n in meta.names]
        matrices = np.stack([alignment_matrix(p) for p in meta.landmarks])
        images = decode_images(paths, FaceCrop(image_size), cache_dir, matrices=matrices)
        return TemplateSet(self.ijb, images, meta, self.detector_score, self.media_pooling, self.chunk)
