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

Scores: every pair scorer (cosine, IDA-R, IDA-L) on the template features. IJB-C has 15.7M pairs of 23k templates:
their cosines are computed once, ``block`` rows of the template similarity matrix at a time (memory ``block`` x
templates floats; ``eval.scorers.pair_cosines``), and each scorer re-scores them (``from_cosine``). Metrics: ROC
AUC and TAR at every configured FAR plus the field's 1e-6 ... 1e-1 (TAR at the threshold accepting at most FAR of
the negatives, ``eval.verification.tar_at_far``).

1:N identification (when the release's 1:N files are in ``meta/``: ``ijbc_1N_gallery_G1.csv`` / ``_G2.csv`` or
IJB-B's ``ijbb_1N_gallery_S1.csv`` / ``_S2.csv``, and ``<name>_1N_probe_mixed.csv``; CSV with a header, template id
and subject id first, one row per image): the templates' features pooled as above, the mixed-media probes searched
against each gallery on its own, as the IJB-C paper's open-set protocol defines it (each subject is enrolled in
one of the two galleries, so for one gallery the probes of the other are non-mated searches). Per gallery:
``<G>/rank1`` / ``rank5`` (closed set: the mated probes, the share whose subject is among the k best-scoring gallery
subjects) and ``<G>/tpir@fpir=f`` (open set: the threshold is set so that at most a fraction f of the non-mated
probes have a top score above it; TPIR is the share of mated probes whose mate is ranked first and scores above it),
at FPIR 1e-2 and 1e-1; the unprefixed ``rank1`` / ``rank5`` / ``tpir@fpir=f`` are the mean of the two galleries.
insightface's ``ijb_1n.py`` reports another figure: one gallery of G1 and G2 together (every probe mated) and a
"FAR" over all non-mate probe-gallery scores; it is not this protocol's FPIR. Identification is scored with cosine
(IDA re-scores pairs; 1:N is not part of IDA's evaluation).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from facelearn.data.records import open_text
from facelearn.eval.verification import roc_auc, roc_points, tar_at_fars
from facelearn.protocols.base import BenchmarkSet, Protocol

log = logging.getLogger(__name__)

#: the FARs IJB results are reported at
IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: the FPIRs of IJB 1:N open-set results, and the closed-set ranks
IJB_FPIRS = (1e-2, 1e-1)
IJB_RANKS = (1, 5)
#: the two galleries of each protocol's 1:N files, as the release names them
GALLERIES = {"ijbb": ("S1", "S2"), "ijbc": ("G1", "G2")}


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
    with open_text(path) as fh:
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
        return np.array([[kind(v) for v in r[cols]] for r in rows], dtype=np.int64 if kind is int else np.float64)
    except (ValueError, OverflowError) as e:
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


@dataclass
class IJBSearch:
    """1:N metadata: per gallery (its name -> (template ids, subject ids)), and the probes' (template ids, subject
    ids); one entry per template."""

    galleries: dict[str, tuple[np.ndarray, np.ndarray]]
    probes: tuple[np.ndarray, np.ndarray]


def _template_subjects(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(template ids, subject ids) of a 1:N CSV (header, then TEMPLATE_ID,SUBJECT_ID,... per image)."""
    with open_text(path) as fh:
        lines = [ln.strip() for ln in fh if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a header and one line per image (TEMPLATE_ID,SUBJECT_ID,...)")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        parts = line.split(",")
        try:
            rows.append((int(parts[0]), int(parts[1])))
            if not all(0 <= v < 2**63 for v in rows[-1]):
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{n}: expected an integer template id and subject id first, got "
                             f"{line[:60]!r}") from None
    pairs = np.unique(np.array(rows, np.int64), axis=0)
    tids, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: template {tids[counts > 1][0]} is listed with several subject ids")
    return pairs[:, 0], pairs[:, 1]


def read_search_meta(root: str, protocol: str, image_templates: np.ndarray) -> IJBSearch | None:
    """The 1:N files of ``protocol`` under ``root/meta`` (None when none of them is there); every listed template
    must have images in the 1:1 image list (``image_templates``)."""
    meta = os.path.join(root, "meta")
    files = {g: os.path.join(meta, f"{protocol}_1N_gallery_{g}.csv") for g in GALLERIES[protocol]}
    files["probe"] = os.path.join(meta, f"{protocol}_1N_probe_mixed.csv")
    present = [f for f in files.values() if os.path.isfile(f)]
    if not present:
        return None
    if len(present) != len(files):
        missing = [f for f in files.values() if not os.path.isfile(f)]
        raise FileNotFoundError(f"IJB 1:N needs {', '.join(map(os.path.basename, files.values()))}; missing: "
                                f"{', '.join(missing)} (or set identification=false)")
    read = {g: _template_subjects(f) for g, f in files.items()}
    known = np.unique(image_templates)
    for g, (tids, _) in read.items():
        unknown = np.setdiff1d(tids, known)
        if len(unknown):
            raise ValueError(f"{files[g]}: {len(unknown)} templates have no image in the face_tid_mid list "
                             f"(e.g. {unknown[0]})")
    probes = read.pop("probe")
    return IJBSearch(read, probes)


def identification_metrics(probe_feats: np.ndarray, probe_subjects: np.ndarray, gallery_feats: np.ndarray,
                           gallery_subjects: np.ndarray, fpirs: tuple[float, ...] = IJB_FPIRS,
                           ranks: tuple[int, ...] = IJB_RANKS, chunk: int = 4096) -> dict[str, float]:
    """Open- and closed-set 1:N metrics of L2-normalised probe features against one gallery (the module
    docstring defines them). A subject's score is its best gallery template's cosine; a mate tied with another
    subject counts as ranked above it. NaN where a metric is undefined (no mated probes, too few non-mated)."""
    subjects, column = np.unique(gallery_subjects, return_inverse=True)
    g = np.asarray(gallery_feats, np.float32)
    mated = np.isin(probe_subjects, subjects)
    mate_col = np.where(mated, np.searchsorted(subjects, probe_subjects).clip(max=len(subjects) - 1), 0)
    top, mate_score, mate_rank = (np.empty(len(probe_feats)) for _ in range(3))
    for i in range(0, len(probe_feats), chunk):
        sim = np.asarray(probe_feats[i:i + chunk], np.float32) @ g.T
        per_subject = np.full((len(subjects), len(sim)), -np.inf, np.float32)
        np.maximum.at(per_subject, column, sim.T)  # each subject: its best gallery template
        per_subject = per_subject.T
        s = np.where(mated[i:i + chunk], per_subject[np.arange(len(sim)), mate_col[i:i + chunk]], np.nan)
        top[i:i + chunk], mate_score[i:i + chunk] = per_subject.max(1), s
        mate_rank[i:i + chunk] = 1 + (per_subject > s[:, None]).sum(1)
    out: dict[str, float] = {}
    ms, mr = mate_score[mated], mate_rank[mated]
    for k in ranks:
        out[f"rank{k}"] = float((mr <= k).mean()) if len(mr) else float("nan")
    non_mated = np.sort(top[~mated])[::-1]
    for f in fpirs:
        k = int(np.floor(len(non_mated) * f + 1e-9))  # non-mated searches that may score above the threshold
        if len(ms) == 0 or k < 1:
            out[f"tpir@fpir={f:g}"] = float("nan")
            continue
        threshold = non_mated[k] if k < len(non_mated) else -np.inf
        out[f"tpir@fpir={f:g}"] = float(((mr == 1) & (ms > threshold)).mean())
    return out


class TemplateSet(BenchmarkSet):
    """Aligned images of an IJB protocol and what its template metrics need."""

    identities = None  # IJB subject ids are not names of training identities: overlap cannot be checked

    def __init__(self, name: str, images: np.ndarray, meta: IJBMeta, detector_score: bool = True,
                 media_pooling: bool = True, block: int = 1024, search: IJBSearch | None = None) -> None:
        self.name, self.images, self.meta, self.search = name, images, meta, search
        self.detector_score, self.media_pooling, self.block = detector_score, media_pooling, int(block)
        self.template_ids = np.unique(meta.templates)
        self.pair_index = np.searchsorted(self.template_ids, meta.pairs)  # template ids -> feature rows

    def describe(self) -> str:
        m = self.meta
        text = (f"{len(m.labels)} template pairs ({int(m.labels.sum())} genuine) over {len(self.template_ids)} "
                f"templates of {len(self.images)} images")
        if self.search is not None:
            galleries = ", ".join(f"{g} {len(t)}" for g, (t, _) in self.search.galleries.items())
            text += f"; 1:N: {len(self.search.probes[0])} probe templates, galleries {galleries}"
        return text

    def template_features(self, embeddings: torch.Tensor) -> np.ndarray:
        weights = self.meta.scores if self.detector_score else None
        return template_features(embeddings.float().cpu().numpy(), self.meta.templates, self.meta.medias, weights,
                                 self.media_pooling)[1]

    def metrics(self, embeddings, scorers, fars, curves=None) -> dict[str, float]:
        from facelearn.eval.scorers import CosineScorer, pair_cosines
        scorers = scorers or {"cosine": CosineScorer()}
        feats = torch.from_numpy(self.template_features(embeddings))
        pairs = torch.from_numpy(self.pair_index)
        issame = self.meta.labels
        out: dict[str, float] = {}
        cos = pair_cosines(feats, pairs, self.block)  # once, for every scorer that is a function of it
        for name, scorer in scorers.items():
            if hasattr(scorer, "from_cosine"):
                scores = scorer.from_cosine(cos, feats, pairs).double().numpy()
            else:  # any other pair scorer: in chunks of pairs
                scores = np.concatenate([scorer(feats, p).double().numpy() for p in pairs.split(50_000)])
            prefix = "" if name == "cosine" else f"{name}/"
            out[prefix + "auc"] = roc_auc(scores, issame)
            for far, tar in tar_at_fars(scores, issame, sorted(set(fars) | set(IJB_FARS))).items():
                out[f"{prefix}tar@far={far:g}"] = tar
            if curves is not None:
                curves[name] = roc_points(scores, issame)
        if self.search is not None:
            out.update(self.identification(feats.numpy()))
        return out

    def identification(self, feats: np.ndarray) -> dict[str, float]:
        """1:N metrics per gallery (``<G>/...``) and their mean over the galleries (cosine scores)."""
        rows = lambda tids: np.searchsorted(self.template_ids, tids)  # noqa: E731
        probe_t, probe_s = self.search.probes
        out: dict[str, float] = {}
        per_gallery = []
        for g, (tids, subjects) in self.search.galleries.items():
            m = identification_metrics(feats[rows(probe_t)], probe_s, feats[rows(tids)], subjects)
            out.update({f"{g}/{k}": v for k, v in m.items()})
            per_gallery.append(m)
        for k in per_gallery[0]:
            out[k] = float(np.mean([m[k] for m in per_gallery]))
        return out


class IJBTemplates(Protocol):
    """``benchmark=ijbb`` / ``ijbc``: insightface's IJB release under ``root`` (see the module docstring).

    ``protocol``: ``ijbb`` or ``ijbc`` (the prefix of the meta files); ``name``: reported under this name instead of
    the config key; ``identification``: 1:N as well (None: when the 1:N files are present, which is logged).
    """

    def __init__(self, root: str, protocol: str = "ijbc", name: str | None = None, detector_score: bool = True,
                 media_pooling: bool = True, identification: bool | None = None, block: int = 1024) -> None:
        if protocol not in GALLERIES:
            raise ValueError(f"IJB protocol must be ijbb or ijbc, got {protocol!r}")
        if int(block) < 1:
            raise ValueError(f"benchmark.{name or protocol}.block must be >= 1, got {block}")
        self.root, self.protocol = str(root), protocol
        self.name, self.given_name = name or protocol, name
        self.detector_score, self.media_pooling, self.block = detector_score, media_pooling, block
        self.identification = identification

    def identities(self) -> set[str] | None:
        return None

    def load(self, image_size: int, cache_dir: str | None = None) -> TemplateSet:
        from facelearn.data.alignment import alignment_matrix
        from facelearn.data.images import FaceCrop, decode_images
        meta = read_meta(self.root, self.protocol)
        search = None
        if self.identification is not False:
            search = read_search_meta(self.root, self.protocol, meta.templates)
            if search is None:
                if self.identification:
                    raise FileNotFoundError(f"{self.root}/meta has no {self.protocol}_1N_*.csv files, but "
                                            "identification=true (set it false for 1:1 only)")
                log.info("%s: no 1:N files in %s/meta: 1:1 verification only", self.name, self.root)
        paths = [os.path.join(self.root, "loose_crop", n) for n in meta.names]
        matrices = np.stack([alignment_matrix(p) for p in meta.landmarks])
        images = decode_images(paths, FaceCrop(image_size), cache_dir, matrices=matrices)
        return TemplateSet(self.name, images, meta, self.detector_score, self.media_pooling, self.block, search)
