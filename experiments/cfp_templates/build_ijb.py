"""An IJB-format template set built from real faces, CFP's (not IJB: a smoke test of the template protocol).

    python experiments/cfp_templates/build_ijb.py ../shared/data/cfp OUT [--people N]

writes, under OUT (outside the repository: the images are copies of CFP's), the layout of insightface's IJB-C
release that ``benchmark=ijbc benchmark.ijbc.root=OUT`` reads:

* ``loose_crop/<person>_<frontal|profile>_<nn>.jpg``: CFP's images, byte for byte;
* ``meta/ijbc_name_5pts_score.txt``: the five landmarks and detector score of each, from YuNet (``facelearn``'s
  five-point detector, the model file from ``--detector`` / ``$FACELEARN_MODELS`` / ../shared/models); an image
  where no face is found is left out and listed in ``summary.json``;
* ``meta/ijbc_face_tid_mid.txt``: per person three templates of two medias each (a media stands for a video clip:
  its images are averaged before the medias are summed): F1 = frontal 01-03 | 04-05, F2 = frontal 06-07 | 08-10,
  P = profile 01-02 | 03-04; template id ``10 * person + 1|2|3``, media id ``100 * person + 10 * k + m``;
* ``meta/ijbc_template_pair_label.txt``: every pair of templates (1:1; with 500 people 1,124,250 pairs, 1,500
  genuine: frontal-frontal and frontal-profile), so TAR can be read down to FAR 1e-6;
* ``meta/ijbc_1N_gallery_G1.csv`` / ``_G2.csv``: the F1 templates of the first / second half of the people;
  ``meta/ijbc_1N_probe_mixed.csv``: every F2 and P template (for each gallery, the other half's probes are the
  non-mated searches, as in IJB-C's open-set protocol).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time

import numpy as np

# (template k, name, [(media m, [(kind, image numbers)])]): the template design of the module docstring
TEMPLATES = ((1, "F1", ((1, ("frontal", (1, 2, 3))), (2, ("frontal", (4, 5))))),
             (2, "F2", ((1, ("frontal", (6, 7))), (2, ("frontal", (8, 9, 10))))),
             (3, "P", ((1, ("profile", (1, 2))), (2, ("profile", (3, 4))))))


def default_detector() -> str:
    from facelearn.align import DETECTOR_FILE
    models = os.environ.get("FACELEARN_MODELS") or os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                                 "shared", "models")
    return os.path.join(models, DETECTOR_FILE)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cfp_root", help="CFP's folder (holding Data/Images and Data/list_name.txt)")
    ap.add_argument("out", help="the folder to write (must not exist or be empty)")
    ap.add_argument("--people", type=int, default=500, help="the first N people of CFP's 500 (default: all)")
    ap.add_argument("--detector", default=None, help="YuNet ONNX file (default: $FACELEARN_MODELS or ../shared)")
    ap.add_argument("--cache", default=os.environ.get("FACELEARN_CACHE"), help="landmark cache folder")
    args = ap.parse_args(argv)
    images_dir = os.path.join(args.cfp_root, "Data", "Images")
    if not os.path.isdir(images_dir):
        ap.error(f"{images_dir} is not a folder: cfp_root must be CFP's folder (Data/Images, Protocol)")
    if not 2 <= args.people <= 500:
        ap.error(f"--people must be in 2..500, got {args.people}")
    if os.path.exists(args.out) and os.listdir(args.out):
        ap.error(f"{args.out} exists and is not empty")
    detector = args.detector or default_detector()
    if not os.path.isfile(detector):
        ap.error(f"detector {detector} does not exist (--detector or FACELEARN_MODELS)")

    from facelearn.data.landmarks import FivePointAlignment
    start = time.time()
    people = list(range(1, args.people + 1))
    sources = [(p, kind, n) for p in people for _, _, medias in TEMPLATES for _, (kind, nums) in medias for n in nums]
    paths = [os.path.join(images_dir, f"{p:03d}", kind, f"{n:02d}.jpg") for p, kind, n in sources]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        ap.error(f"{len(missing)} CFP images are missing, e.g. {missing[0]}")
    marks = FivePointAlignment(detector).landmarks(paths, args.cache, what="CFP templates")
    found = ~np.isnan(marks.points).any(axis=(1, 2))

    os.makedirs(os.path.join(args.out, "loose_crop"))
    os.makedirs(os.path.join(args.out, "meta"))
    name_of = {s: f"{s[0]:03d}_{s[1]}_{s[2]:02d}.jpg" for s in sources}
    tid_lines, lmk_lines, left_out = [], [], []
    members: dict[int, list[str]] = {}  # template id -> its image names
    index = {s: i for i, s in enumerate(sources)}
    for p in people:
        for k, _, medias in TEMPLATES:
            for m, (kind, nums) in medias:
                for n in nums:
                    i = index[(p, kind, n)]
                    if not found[i]:
                        left_out.append(paths[i])
                        continue
                    name = name_of[(p, kind, n)]
                    shutil.copyfile(paths[i], os.path.join(args.out, "loose_crop", name))
                    pts = " ".join(f"{v:.3f}" for v in marks.points[i].reshape(-1))
                    tid_lines.append(f"{name} {10 * p + k} {100 * p + 10 * k + m}")
                    lmk_lines.append(f"{name} {pts} {marks.scores[i]:.5f}")
                    members.setdefault(10 * p + k, []).append(name)
    templates = sorted(members)
    pair_lines = [f"{a} {b} {int(a // 10 == b // 10)}" for a, b in itertools.combinations(templates, 2)]

    def csv(tids: list[int]) -> str:
        rows = [f"{t},{t // 10},{name}" for t in tids for name in members[t]]
        return "TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "\n".join(rows) + "\n"

    half = people[len(people) // 2]
    gallery = [t for t in templates if t % 10 == 1]
    write = lambda name, text: open(os.path.join(args.out, "meta", name), "w").write(text)  # noqa: E731
    write("ijbc_face_tid_mid.txt", "\n".join(tid_lines) + "\n")
    write("ijbc_name_5pts_score.txt", "\n".join(lmk_lines) + "\n")
    write("ijbc_template_pair_label.txt", "\n".join(pair_lines) + "\n")
    write("ijbc_1N_gallery_G1.csv", csv([t for t in gallery if t // 10 < half]))
    write("ijbc_1N_gallery_G2.csv", csv([t for t in gallery if t // 10 >= half]))
    write("ijbc_1N_probe_mixed.csv", csv([t for t in templates if t % 10 != 1]))
    summary = {"source": os.path.abspath(args.cfp_root), "people": len(people), "images": len(tid_lines),
               "templates": len(templates), "pairs": len(pair_lines),
               "genuine_pairs": sum(line.endswith(" 1") for line in pair_lines),
               "left_out_no_face": left_out, "detector": os.path.basename(detector),
               "landmark_stages": marks.counts(), "seconds": round(time.time() - start, 1)}
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "left_out_no_face"}
                     | {"left_out_no_face": len(left_out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
