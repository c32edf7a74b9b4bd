"""Pack the real faces an LFW-shallow / CFP-FP run needs into a small folder that can travel to a GPU machine
(the `device` tool carries at most 64 MiB and not ../shared).

    python experiments/sst_real/pack_for_device.py --out .gpu_data --size 112

Writes, in the original layouts so the same facelearn code reads them:
* ``OUT/lfw/lfw-deepfunneled/<name>/<name>_NNNN.jpg``: the LFW deep-funneled 150 px centre crop at SIZE px, for every
  person with >= 2 images (the shallow split's candidates; the split itself still runs with the run's seed) and
  every image of ``pairsDevTest.txt``; plus the pair file. Benchmark people (pairsDevTest's and CFP's) travel only
  with their pair images: the run excludes them from training anyway. Train with ``data.train.center_crop=null`` and
  ``benchmark.lfw_devtest.center_crop=null`` (the crop is already applied).
* ``OUT/cfp/``: CFP with every image already cut to its landmark box (``facelearn.protocols.cfp``) at SIZE px and its
  fiducials mapped into the crop, so ``CFPPairs`` recomputes the same box (the whole image, up to rounding).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from facelearn.protocols.cfp import CFPPairs, read_fiducials
from facelearn.protocols.pairs import parse_pairs_file
from facelearn.data.splits import identity_key


def save(img: Image.Image, path: Path, size: int, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.resize((size, size), Image.BILINEAR).save(path, quality=quality)


def pack_lfw(src: Path, out: Path, size: int, quality: int, excluded: set[str]) -> int:
    root = src / "lfw-deepfunneled"
    counts = {p.name: len(list(p.iterdir())) for p in root.iterdir() if p.is_dir()}
    pairs, _, _ = parse_pairs_file(str(src / "pairsDevTest.txt"))
    # Benchmark people (pairsDevTest, CFP) are never trained on: only their pair images travel.
    excluded = {identity_key(n) for n in excluded | {p[0] for p in pairs} | {p[2] for p in pairs}}
    wanted = {(n, i) for n, c in counts.items() if c >= 2 and identity_key(n) not in excluded
              for i in range(1, c + 1)}
    wanted |= {(p[0], p[1]) for p in pairs} | {(p[2], p[3]) for p in pairs}
    for name, i in sorted(wanted):
        with Image.open(root / name / f"{name}_{i:04d}.jpg") as im:
            im = im.convert("RGB")
            w, h = im.size
            left, top = (w - 150) // 2, (h - 150) // 2
            save(im.crop((left, top, left + 150, top + 150)), out / "lfw" / "lfw-deepfunneled" / name /
                 f"{name}_{i:04d}.jpg", size, quality)
    shutil.copy(src / "pairsDevTest.txt", out / "lfw" / "pairsDevTest.txt")
    return len(wanted)


def pack_cfp(src: Path, out: Path, size: int, quality: int) -> int:
    dst = out / "cfp"
    shutil.copytree(src / "Protocol", dst / "Protocol", dirs_exist_ok=True)
    (dst / "Data").mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "Data" / "list_name.txt", dst / "Data" / "list_name.txt")
    spec = CFPPairs(str(src))
    n = 0
    for img_path in sorted((src / "Data" / "Images").rglob("*.jpg")):
        rel = img_path.relative_to(src / "Data" / "Images")
        x0, y0, x1, y1 = spec.box(str(img_path))
        with Image.open(img_path) as im:
            crop = im.convert("RGB").crop(tuple(int(round(v)) for v in (x0, y0, x1, y1)))
        save(crop, dst / "Data" / "Images" / rel, size, quality)
        pts = read_fiducials(str(src / "Data" / "Fiducials" / rel.with_suffix(".txt")))
        # Map into the saved crop; then the box of the mapped points is the whole crop enlarged by crop_scale.
        side = x1 - x0
        mapped = (pts - [x0, y0]) * (size / side)
        fid = dst / "Data" / "Fiducials" / rel.with_suffix(".txt")
        fid.parent.mkdir(parents=True, exist_ok=True)
        fid.write_text("".join(f"{x:.3f},{y:.3f}\n" for x, y in mapped))
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap.add_argument("--out", default=".gpu_data")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--quality", type=int, default=75)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "lfw").mkdir(parents=True, exist_ok=True)
    cfp_people = CFPPairs(str(Path(args.shared) / "cfp")).identities()
    n_lfw = pack_lfw(Path(args.shared) / "lfw", out, args.size, args.quality, cfp_people)
    n_cfp = pack_cfp(Path(args.shared) / "cfp", out, args.size, args.quality)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {n_lfw} LFW and {n_cfp} CFP images at {args.size} px into {out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
