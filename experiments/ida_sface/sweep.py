"""IDA-R / IDA-L against cosine on one model, with the IDA paper's sweeps (Fig. 6a: k, Fig. 6b: anchor-set size,
Fig. 7: tau), every benchmark image and anchor embedded once.

    python experiments/ida_sface/sweep.py --out OUT.json -- <facelearn.evaluate overrides>

The overrides choose the model (``backbone=sface alignment=five_point flip_tta=false``, or ``ckpt_path=...``), the
benchmarks and the anchors exactly as ``python -m facelearn.evaluate`` takes them, with ``ida=ida_r`` and its anchor
source (``ida.ida_r.anchors=folder ida.ida_r.folder=ALIGNED`` or ``ida.ida_r.anchors=fc-weights``): that scorer's
anchors (built and checked against the benchmarks' identities by facelearn) are the ones swept. IDA-L runs with
folder anchors (its regressor trains on the anchors, each without its own identity's). For each benchmark and each
setting: 10-fold accuracy, TAR@FAR, and the per-fold paired accuracy difference to cosine (mean and std over the
folds: the spread the protocol gives).
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from hydra import compose, initialize_config_module

from facelearn.eval.embedding import distinct_images, embed_images
from facelearn.eval.ida import AnchorIndex
from facelearn.eval.scorers import CosineScorer, IDALScorer, IDARScorer
from facelearn.eval.verification import fold_accuracies
from facelearn.evaluate import prepare_evaluation

KS = (1, 3, 5, 10, 20, 50, 100)
TAUS = (0.5, 1.0, 2.0, 4.0, 8.0)
SIZES = (100, 300, 1000, 3000)
FARS = (1e-2, 1e-3, 1e-4)


def score_row(bset, emb: torch.Tensor, scorer, base_accs: np.ndarray | None) -> dict:
    pairs = torch.from_numpy(bset.pairs)
    scores = scorer(emb, pairs).double().numpy()
    if isinstance(scorer, CosineScorer):
        m = bset.metrics(emb, {}, FARS)
    else:
        m = {k[2:]: v for k, v in bset.metrics(emb, {"s": scorer}, FARS).items() if k.startswith("s/")}
    accs, _ = fold_accuracies(scores, bset.issame, bset.folds)
    row = {k: m[k] for k in ("accuracy", "accuracy_std", "auc") if k in m}
    row.update({k: m.get(k) for k in (f"tar@far={f:g}" for f in FARS)})
    if base_accs is not None:
        d = accs - base_accs
        row["paired_accuracy_diff"], row["paired_accuracy_diff_std"] = float(d.mean()), float(d.std())
    row["fold_accuracies"] = accs.tolist()
    return row


def ida_l(k: int, tau: float, index: AnchorIndex, labels: np.ndarray, seed: int) -> IDALScorer:
    scorer = IDALScorer(k=k, tau=tau, anchors="folder", folder="(given)", seed=seed, backend="torch")
    scorer.index, scorer.anchor_set.labels = index, labels
    scorer.train_regressor(None, None)
    return scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-ida-l", action="store_true", help="IDA-R only (fc-weights anchors: IDA-L needs images)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=list(args.overrides))
    ev = prepare_evaluation(cfg)  # builds and embeds the anchors of ida_r (checked against the benchmarks)
    ida_r = ev.scorers.get("ida_r")
    if ida_r is None:
        raise SystemExit("give ida=ida_r and its anchors (ida.ida_r.anchors=folder ida.ida_r.folder=... or fc-weights)")
    anchors, labels = ida_r.index.anchors, np.asarray(ida_r.anchor_set.labels)
    unique, maps = distinct_images([s.images for s in ev.bench_sets.values()])
    emb_all = embed_images(ev.module, unique, ev.batch_size)
    out = {"overrides": args.overrides, "anchors": len(anchors), "anchor_source": ida_r.anchor_set.source,
           "ks": KS, "taus": TAUS, "sizes": SIZES, "benchmarks": {}}
    order = np.random.default_rng(0).permutation(len(anchors))
    for (name, bset), where in zip(ev.bench_sets.items(), maps):
        emb = emb_all[torch.from_numpy(where)]
        cos = score_row(bset, emb, CosineScorer(), None)
        base = np.array(cos["fold_accuracies"])
        res = {"pairs": len(bset.pairs), "negatives": int((~bset.issame).sum()), "cosine": cos}

        def r(k, tau, idx=None):
            s = IDARScorer(k=k, tau=tau, backend="torch")
            s.index = AnchorIndex(anchors if idx is None else anchors[idx], backend="torch")
            return score_row(bset, emb, s, base)

        res["ida_r"] = {"k": {k: r(k, 1.0) for k in KS if k <= len(anchors)},
                        "tau": {t: r(10, t) for t in TAUS},
                        "size": {n: r(10, 1.0, order[:n]) for n in SIZES if n < len(anchors)}}
        if not args.no_ida_l:
            full = AnchorIndex(anchors, backend="torch")

            def l(k, tau, idx=None):
                index = full if idx is None else AnchorIndex(anchors[idx], backend="torch")
                return score_row(bset, emb, ida_l(k, tau, index, labels if idx is None else labels[idx], 0), base)

            res["ida_l"] = {"k": {k: l(k, 1.0) for k in KS if k < len(anchors)},
                            "tau": {t: l(10, t) for t in TAUS},
                            "size": {n: l(10, 1.0, order[:n]) for n in SIZES if n < len(anchors)}}
        out["benchmarks"][name] = res
        print(f"{name}: cosine {100 * cos['accuracy']:.2f}; IDA-R k=10 tau=1 "
              f"{100 * res['ida_r']['k'][10]['accuracy']:.2f} (paired "
              f"{100 * res['ida_r']['k'][10]['paired_accuracy_diff']:+.2f} ± "
              f"{100 * res['ida_r']['k'][10]['paired_accuracy_diff_std']:.2f})", flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
