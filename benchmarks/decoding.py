"""JPEG decoding paths on real face images, side by side in one run: Pillow (facelearn's path before simplejpeg),
simplejpeg (libjpeg-turbo, facelearn's path now), and Pillow with ``draft()`` (DCT-domain downscaling by 1/2, 1/4,
1/8 while decoding), each to the crop training uses, with 1 and 2 decode threads; images/s, the ratio to Pillow and
how the pixels compare.

    python benchmarks/decoding.py [--images 800] [--root ../shared/data/lfw/lfw-deepfunneled]

Targets: LFW's 150 px centre crop resized to 112 (the LFW recipes) and the whole 250 px image resized to 112. draft
can only shrink by powers of two to a size that still covers the target, so on the centre-crop target (150 -> 112
needs a factor >= 0.75) it cannot apply; on the whole image it decodes at 125 px, then resizes: other pixels.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import simplejpeg
from PIL import Image

from facelearn.data.images import FaceCrop, crop_resize


def pillow(data: bytes, crop: FaceCrop) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return crop_resize(im.convert("RGB"), crop)


def pillow_draft(data: bytes, crop: FaceCrop) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        side = min(im.size) if crop.center_crop is None else crop.center_crop
        scale, width = crop.image_size / side, im.size[0]
        im.draft("RGB", (int(np.ceil(im.size[0] * scale)), int(np.ceil(im.size[1] * scale))))
        shrink = im.size[0] / width
        im.load()
        img = im.convert("RGB")
    if shrink != 1 and crop.center_crop is not None:
        crop = FaceCrop(crop.image_size, int(round(crop.center_crop * shrink)))
    return crop_resize(img, crop)


def fast(data: bytes, crop: FaceCrop) -> np.ndarray:
    return crop_resize(Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB")), crop)


def rate(fn, blobs: list[bytes], crop: FaceCrop, threads: int) -> tuple[float, np.ndarray]:
    out = np.empty((len(blobs), 3, crop.image_size, crop.image_size), np.uint8)

    def work(i: int) -> None:
        out[i] = fn(blobs[i], crop)

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(work, range(min(20, len(blobs)))))  # warm-up
        t0 = time.perf_counter()
        list(ex.map(work, range(len(blobs))))
    return len(blobs) / (time.perf_counter() - t0), out


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.join(here, "..", "..", "shared", "data", "lfw", "lfw-deepfunneled"))
    ap.add_argument("--images", type=int, default=800)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.root, "*", "*.jpg")))[:args.images]
    if not files:
        raise SystemExit(f"no JPEGs under {args.root}")
    blobs = [open(f, "rb").read() for f in files]
    print(f"{len(blobs)} JPEGs from {args.root} (in memory: decoding only), {os.cpu_count()} CPUs\n")
    print("| target | threads | Pillow img/s | simplejpeg img/s (x Pillow, pixels) | Pillow draft img/s (x Pillow, "
          "pixels) |")
    print("|---|---|---|---|---|")
    for label, crop in (("centre 150 -> 112", FaceCrop(112, 150)), ("whole 250 -> 112", FaceCrop(112))):
        for threads in (1, 2):
            base, ref = rate(pillow, blobs, crop, threads)
            cells = []
            for fn in (fast, pillow_draft):
                r, out = rate(fn, blobs, crop, threads)
                diff = np.abs(out.astype(int) - ref).mean()
                same = "identical" if np.array_equal(out, ref) else f"mean |diff| {diff:.2f}"
                cells.append(f"{r:.0f} ({r / base:.2f}x, {same})")
            print(f"| {label} | {threads} | {base:.0f} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
