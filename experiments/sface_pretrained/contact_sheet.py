"""Contact sheet of five-point aligned crops (facelearn's alignment) beside the crops used before: LFW
deep-funneled (150 px centre crop) and CFP frontal / profile (fiducial box), plus OpenCV's alignCrop of the same
landmarks for comparison of the warp.

    python experiments/sface_pretrained/contact_sheet.py OUT.png [--models DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from facelearn.data.images import FaceCrop, decode_faces
from facelearn.data.landmarks import FivePointAlignment
from facelearn.protocols.cfp import CFPPairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", default=os.environ.get("FACELEARN_MODELS", "../shared/models"))
    ap.add_argument("--data", default=os.environ.get("FACELEARN_DATA", "../shared/data"))
    ap.add_argument("--per-row", type=int, default=10)
    args = ap.parse_args()
    aligner = FivePointAlignment(str(Path(args.models) / "face_detection_yunet_2023mar_int8bq.onnx"))
    lfw = sorted(Path(args.data, "lfw", "lfw-deepfunneled").glob("*/*_0001.jpg"))
    rng = np.random.default_rng(0)
    lfw = [str(lfw[i]) for i in sorted(rng.choice(len(lfw), args.per_row, replace=False))]
    cfp_root = Path(args.data, "cfp")
    people = sorted(rng.choice(500, args.per_row, replace=False) + 1)
    frontal = [str(cfp_root / "Data" / "Images" / f"{p:03d}" / "frontal" / "01.jpg") for p in people]
    profile = [str(cfp_root / "Data" / "Images" / f"{p:03d}" / "profile" / "01.jpg") for p in people]
    # the hardest profile: the one image no retry found a face in (it takes its fiducial box)
    profile[-1] = str(cfp_root / "Data" / "Images" / "331" / "profile" / "03.jpg")
    cfp = CFPPairs(str(cfp_root), "FP")
    rows = []
    for name, paths, boxes, centre in (("lfw", lfw, None, 150), ("cfp frontal", frontal, True, None),
                                       ("cfp profile", profile, True, None)):
        box = np.array([cfp.box(p) for p in paths]) if boxes else None
        before = decode_faces(paths, FaceCrop(112, centre), None, None, box)
        after = decode_faces(paths, FaceCrop(112, centre), None, aligner, box, what=name)
        rows += [before, after]
    grid = np.concatenate([np.concatenate(list(r.transpose(0, 2, 3, 1)), axis=1) for r in rows], axis=0)
    Image.fromarray(grid).save(args.out)
    print(f"{args.out}: rows = LFW centre crop / aligned, CFP frontal box / aligned, CFP profile box / aligned "
          "(last profile: no face found, fiducial-box fallback)")


if __name__ == "__main__":
    main()
