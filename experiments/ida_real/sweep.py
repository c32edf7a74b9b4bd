"""IDA-R sweeps on a real checkpoint (IDA paper Fig. 6a: k, Fig. 6b: anchor-set size, Fig. 7: τ), embedding the
benchmark and the anchors once (``python -m facelearn.evaluate -m +sweep=ida_k ...`` gives the same numbers one
evaluation per value, re-embedding every time).

    python experiments/ida_real/sweep.py CKPT --benchmark cfp_fp --out sweep.json

Anchors: real-db (one training image per training identity, seed 0); the size sweep draws nested random subsets.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from facelearn.eval.embedding import embed_images
from facelearn.eval.ida import AnchorIndex
from facelearn.eval.scorers import AnchorSet, IDARScorer, ScorerContext
from facelearn.evaluate import load_checkpoint_module
from facelearn.protocols import load_protocols

KS = (1, 2, 5, 10, 20, 50, 100)
TAUS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SIZES = (30, 100, 300, 1000, 3000)
FARS = (0.1, 0.01, 0.001)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("--benchmark", default="cfp_fp", help="a conf/benchmark option (its first set is used)")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    module, run_cfg = load_checkpoint_module(args.ckpt)
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"benchmark={args.benchmark}", "ckpt_path=x"])
    name, spec_cfg = next(iter(cfg.benchmark.items()))  # the group option's (first) benchmark
    size = run_cfg.data.image_size
    bset = load_protocols({name: instantiate(spec_cfg)}, size, args.cache)[name]
    emb = embed_images(module, bset.images)
    datamodule = instantiate(run_cfg.data, cache_dir=args.cache)
    datamodule.setup_train()
    context = ScorerContext.of(size, {name: bset}, datamodule.train_dataset, args.cache)
    anchors = AnchorSet("real-db", seed=0).build(module, context)

    def score(k: int, tau: float, anchor_emb: torch.Tensor) -> dict:
        scorer = IDARScorer(k=k, tau=tau)
        scorer.index = AnchorIndex(anchor_emb)
        return bset.metrics(emb, {"ida_r": scorer}, FARS)

    base = bset.metrics(emb, {}, FARS)
    out = {"checkpoint": args.ckpt, "benchmark": name, "anchors": len(anchors), "cosine": base,
           "k": {k: score(k, 1.0, anchors) for k in KS},
           "tau": {t: score(10, t, anchors) for t in TAUS}}
    order = np.random.default_rng(0).permutation(len(anchors))
    out["anchor_size"] = {n: score(min(10, n), 1.0, anchors[order[:n]]) for n in SIZES if n < len(anchors)}
    out["anchor_size"][len(anchors)] = out["k"][10]
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    keys = ("accuracy", "tar@far=0.01", "tar@far=0.001")
    print(f"cosine: " + ", ".join(f"{k} {100 * base[k]:.2f}" for k in keys if base.get(k) is not None))
    for name in ("k", "tau", "anchor_size"):
        for v, m in out[name].items():
            print(f"{name}={v}: " + ", ".join(f"{k} {100 * m['ida_r/' + k]:.2f}" for k in keys
                                               if m.get("ida_r/" + k) is not None))


if __name__ == "__main__":
    main()
