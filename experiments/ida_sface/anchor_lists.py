"""The anchor people of the IDA experiments on SFace: one image per person of the data sets here whom the benchmark
does not contain (the paper's real-db anchors are one image per training identity, disjoint from the test set).

    python experiments/ida_sface/anchor_lists.py DATA_ROOT OUT_DIR

writes two list files of ``relative/path label`` lines under DATA_ROOT (the folder holding lfw/ and cfp/), for
``python -m facelearn.align DATA_ROOT ALIGNED --list LIST``:

* ``anchors_lfw.txt``: for LFW View-2 (pairs.txt): every LFW person not in pairs.txt (first image) and every CFP
  person who is not an LFW person (frontal/01.jpg);
* ``anchors_cfp.txt``: for CFP-FP / CFP-FF: every LFW person who is not a CFP person (first image).

Names are compared as ``identity_key`` (CFP writes "Aaron Rodgers", LFW "Aaron_Rodgers"); labels are written with
underscores.
"""

from __future__ import annotations

import argparse
import os

from facelearn.data.splits import identity_key
from facelearn.protocols.cfp import cfp_name_list
from facelearn.protocols.pairs import LFWPairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("out_dir")
    args = ap.parse_args()
    lfw = os.path.join(args.data_root, "lfw", "lfw-deepfunneled")
    view2 = {identity_key(n) for n in LFWPairs(os.path.join(args.data_root, "lfw", "pairs.txt"), lfw).identities()}
    cfp_names = cfp_name_list(os.path.join(args.data_root, "cfp"))  # line k = person k (folder %03d)
    cfp = {identity_key(n) for n in cfp_names}
    people = sorted(os.listdir(lfw))
    lfw_keys = {identity_key(p) for p in people}

    def first_image(person: str) -> str:
        return f"lfw/lfw-deepfunneled/{person}/{sorted(os.listdir(os.path.join(lfw, person)))[0]}"

    lines_lfw = [f"{first_image(p)} {p}" for p in people if identity_key(p) not in view2]
    lines_lfw += [f"cfp/Data/Images/{k:03d}/frontal/01.jpg {'_'.join(n.split())}"
                  for k, n in enumerate(cfp_names, 1) if identity_key(n) not in lfw_keys]
    lines_cfp = [f"{first_image(p)} {p}" for p in people if identity_key(p) not in cfp]
    os.makedirs(args.out_dir, exist_ok=True)
    for name, lines in (("anchors_lfw.txt", lines_lfw), ("anchors_cfp.txt", lines_cfp)):
        with open(os.path.join(args.out_dir, name), "w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)
        print(f"{name}: {len(lines)} people")


if __name__ == "__main__":
    main()
