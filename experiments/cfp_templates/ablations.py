"""The template-pooling switches of arcface_torch's ``eval_ijbc.py`` on one template benchmark, every image embedded
once (with and without its mirror image), cosine scores:

* ``default``: facelearn's (flip: normalise(f(x) + f(flip x)); detector-score weighting; media averaging);
* ``no_flip`` (insightface F1 off): normalise(f(x));
* ``no_detector_score`` (D1 off), ``no_media_pooling`` (images summed directly);
* ``norm_score`` (insightface ``use_norm_score=True``): the un-normalised f(x) + f(flip x) pooled, so an image's
  feature norm weights it.

    python experiments/cfp_templates/ablations.py --out OUT.json -- backbone=sface benchmark=ijbc \
        benchmark.ijbc.root=CFP_IJB benchmark.ijbc.name=cfp_templates
"""

from __future__ import annotations

import argparse
import json
import logging

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from facelearn.eval.embedding import BackboneEmbedder, embed_images
from facelearn.evaluate import prepare_evaluation
from facelearn.methods.base import normalize
from facelearn.protocols.ijb import TemplateSet


class RawFeatures(BackboneEmbedder):
    """The backbone's un-normalised features of the images as given (``mirror``: of their mirror images)."""

    def __init__(self, backbone: torch.nn.Module, mirror: bool) -> None:
        super().__init__(backbone, flip_tta=False)
        self.mirror = mirror

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device))
        return self.backbone(x.flip(3) if self.mirror else x).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with initialize_config_module("facelearn.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=list(args.overrides))
    ev = prepare_evaluation(cfg)
    backbone = ev.module.embedding_network()
    out: dict = {"overrides": args.overrides, "benchmarks": {}}
    for name, bset in ev.bench_sets.items():
        if not isinstance(bset, TemplateSet):
            raise SystemExit(f"benchmark {name} is not a template benchmark (benchmark=ijbb|ijbc)")
        f = embed_images(RawFeatures(backbone, False), bset.images, ev.batch_size)
        g = embed_images(RawFeatures(backbone, True), bset.images, ev.batch_size)
        variants = {"default": (F.normalize(f + g, dim=1), {}),
                    "no_flip": (F.normalize(f, dim=1), {}),
                    "no_detector_score": (F.normalize(f + g, dim=1), {"detector_score": False}),
                    "no_media_pooling": (F.normalize(f + g, dim=1), {"media_pooling": False}),
                    "norm_score": (f + g, {})}
        rows = {}
        for label, (emb, switches) in variants.items():
            saved = bset.detector_score, bset.media_pooling
            bset.detector_score = switches.get("detector_score", bset.detector_score)
            bset.media_pooling = switches.get("media_pooling", bset.media_pooling)
            rows[label] = bset.metrics(emb, {}, tuple(cfg.fars))
            bset.detector_score, bset.media_pooling = saved
            logging.info("%s %s: %s", name, label, {k: round(v, 4) for k, v in rows[label].items()
                                                    if "/" not in k})
        out["benchmarks"][name] = rows
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
