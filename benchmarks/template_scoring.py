"""IJB-scale template scoring on this machine: ``TemplateSet.metrics`` (template pooling, cosine over every pair in
chunks, AUC, TAR at the six IJB FARs, 1:N) on random features shaped like IJB-C, timed per stage, with the peak
resident memory of scoring in chunks against scoring every pair at once, and the metrics against the reference
computation insightface's ``eval_ijbc.py`` uses (sklearn's ``roc_curve`` + ``auc``), all in one run.

    python benchmarks/template_scoring.py [--pairs 10000000] [--templates 23124] [--images 3] [--dim 512]

IJB-C's 1:1 protocol has 15,658,489 pairs over 23,124 templates (469,375 images); the default images per template
is smaller so that the features fit beside the scores on a laptop (pooling is linear in the images).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import torch


class PeakRSS:
    """Peak resident memory (MiB) while the block runs, sampled from /proc every 5 ms, above what it was before."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss() -> float:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @property
    def above(self) -> float:
        return self.peak - self.base


def synthetic_protocol(n_pairs: int, n_templates: int, per_template: int, dim: int, seed: int = 0):
    """Image features (L2-normalised, one subject per two templates), their templates / medias, and ``n_pairs``
    template pairs: every genuine pair plus random impostor pairs."""
    from facelearn.protocols.ijb import IJBMeta
    rng = np.random.default_rng(seed)
    subject = np.arange(n_templates) // 2
    centres = rng.standard_normal((subject.max() + 1, dim)).astype(np.float32)
    templates = np.repeat(np.arange(n_templates), per_template)
    feats = centres[subject[templates]] + 4.0 * rng.standard_normal((len(templates), dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    medias = np.arange(len(templates)) // 2  # two images per media
    genuine = np.stack([np.arange(0, n_templates - 1, 2), np.arange(1, n_templates, 2)], 1)
    impostor = rng.integers(0, n_templates, (n_pairs - len(genuine), 2))
    impostor = impostor[subject[impostor[:, 0]] != subject[impostor[:, 1]]]
    pairs = np.concatenate([genuine, impostor])
    labels = np.zeros(len(pairs), bool)
    labels[:len(genuine)] = True
    meta = IJBMeta([f"{i}.jpg" for i in range(len(templates))], templates, medias,
                   np.zeros((len(templates), 5, 2)), np.ones(len(templates)), pairs, labels)
    return torch.from_numpy(feats), meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=10_000_000)
    ap.add_argument("--templates", type=int, default=23_124)
    ap.add_argument("--images", type=int, default=3, help="images per template")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--block", type=int, default=1024, help="similarity-matrix rows per matmul")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.metrics import auc, roc_curve

    from facelearn.eval.scorers import gathered_cosines, pair_cosines
    from facelearn.eval.verification import roc_auc, tar_at_fars
    from facelearn.protocols.ijb import IJB_FARS, TemplateSet

    t0 = time.perf_counter()
    feats, meta = synthetic_protocol(args.pairs, args.templates, args.images, args.dim)
    print(f"{len(meta.labels):,} template pairs ({int(meta.labels.sum()):,} genuine) over {args.templates:,} "
          f"templates of {len(feats):,} images, d={args.dim}, {args.threads} threads (built in "
          f"{time.perf_counter() - t0:.1f} s)")
    bset = TemplateSet("bench", np.zeros((len(feats), 1), np.uint8), meta, block=args.block)
    t0 = time.perf_counter()
    tf = torch.from_numpy(bset.template_features(feats))
    pooling = time.perf_counter() - t0
    pairs = torch.from_numpy(bset.pair_index)

    with PeakRSS() as gather_mem:
        t0 = time.perf_counter()
        gathered = gathered_cosines(tf, pairs, chunk=100_000)
        gather_time = time.perf_counter() - t0
    with PeakRSS() as block_mem:
        t0 = time.perf_counter()
        cos = pair_cosines(tf, pairs, block=args.block)
        block_time = time.perf_counter() - t0
    max_diff = float((cos - gathered).abs().max())
    scores = cos.double().numpy()
    t0 = time.perf_counter()
    ours_auc = roc_auc(scores, meta.labels)
    tars = tar_at_fars(scores, meta.labels, IJB_FARS)
    ours_metrics = time.perf_counter() - t0
    t0 = time.perf_counter()
    fpr, tpr, _ = roc_curve(meta.labels, scores)
    ref_auc = auc(fpr, tpr)
    ref_tars = {f: float(tpr[np.argmin(np.abs(fpr - f))]) for f in IJB_FARS}  # eval_ijbc.py's read-out
    ref_metrics = time.perf_counter() - t0
    t0 = time.perf_counter()
    with PeakRSS() as all_mem:
        bset.metrics(feats, {}, fars=())
    full = time.perf_counter() - t0

    print(f"template pooling: {pooling:.2f} s")
    print(f"pair cosines: gathered in chunks of 100,000 (baseline) {gather_time:.2f} s, peak +{gather_mem.above:.0f} "
          f"MiB | blocks of {args.block} similarity rows {block_time:.2f} s, peak +{block_mem.above:.0f} MiB | "
          f"speed-up {gather_time / block_time:.1f}x, largest difference {max_diff:.1e}")
    print(f"AUC + TAR at {len(IJB_FARS)} FARs: facelearn {ours_metrics:.2f} s | sklearn roc_curve + auc (as "
          f"eval_ijbc.py) {ref_metrics:.2f} s | ratio {ref_metrics / ours_metrics:.2f}x")
    print(f"AUC facelearn {ours_auc:.6f} vs sklearn {ref_auc:.6f}")
    for f in IJB_FARS:
        print(f"  TAR@FAR={f:g}: facelearn {100 * tars[f]:.3f} %  sklearn nearest-FAR point {100 * ref_tars[f]:.3f} %")
    print(f"TemplateSet.metrics end to end (pooling, scoring, AUC, TARs): {full:.2f} s, peak +{all_mem.above:.0f} MiB")


if __name__ == "__main__":
    main()
