"""Align raw face photos: ``python -m facelearn.align SRC OUT`` (also ``facelearn-align``).

    python -m facelearn.align /data/photos aligned/                      # SRC/<identity>/<image>
    python -m facelearn.align /data/root aligned/ --list train.txt       # 'relative/path label' lines under SRC
    python -m facelearn.align ../shared/data/lfw/lfw-deepfunneled lfw112/ --rec lfw112.rec
    python -m facelearn.align ../shared/data/cfp cfp112/                 # the CFP layout (Data/Images, names)

Every image: YuNet face detection with five landmarks (the face nearest the image centre when there are several;
retried at a lower threshold, upscaled and padded when there is none), the least-squares similarity transform onto
the ArcFace 112x112 template, a 112x112 crop written as OUT/<identity>/<name>.png (``--format jpg`` for JPEG),
``--rec`` packs the crops as insightface RecordIO too. Beside the crops: ``landmarks.tsv`` (source, crop, stage,
score, number of faces, the five points), ``failures.txt`` (images without a face and what was done with them) and
``summary.json`` (counts, time). Images without a face: ``--on-failure fallback`` (default: the centred square of
``--fallback-fraction`` of the short side), ``skip`` (not written; listed) or ``error`` (stop before writing
anything). The detector is a file (``--detector``, default ``$FACELEARN_MODELS`` or ../shared/models); nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from facelearn.data.alignment import warp
from facelearn.data.images import read_rgb
from facelearn.data.landmarks import FALLBACK, STAGES, FivePointAlignment, available_cpus
from facelearn.data.records import IdentityFolder, ImageList

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"


def default_detector() -> str:
    from facelearn.runtime.paths import default_models_dir
    return os.path.join(os.environ.get("FACELEARN_MODELS") or default_models_dir(), DETECTOR_FILE)


def cfp_sources(root: str) -> list[tuple[str, str, str]]:
    """``(image path, identity, output stem)`` of the CFP layout: Data/Images/<NNN>/<frontal|profile>/<k>.jpg,
    identities from Data/list_name.txt."""
    from facelearn.protocols.cfp import cfp_name_list
    names = cfp_name_list(root)
    images = Path(root, "Data", "Images")
    out = []
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        k = int(person.name)
        if not 1 <= k <= len(names):
            raise ValueError(f"{person}: no line {k} in Data/list_name.txt ({len(names)} names)")
        for pose in ("frontal", "profile"):
            for f in sorted((person / pose).glob("*.jpg")):
                out.append((str(f), names[k - 1], f"{pose}_{f.stem}"))
    if not out:
        raise ValueError(f"{images} holds no CFP images (expected Data/Images/<NNN>/<frontal|profile>/*.jpg)")
    return out


def list_sources(src: str, list_file: str | None) -> list[tuple[str, str, str]]:
    if list_file:
        records = ImageList(src, list_file).load(0)
    elif Path(src, "Data", "Images").is_dir() and Path(src, "Data", "list_name.txt").is_file():
        return cfp_sources(src)
    else:
        records = IdentityFolder(src).load(0)
    return [(p, str(i), Path(p).stem) for p, i in zip(records.paths, records.identities)]


def safe_component(name: str) -> str:
    """An identity as a folder name: path separators and leading dots cannot escape OUT."""
    clean = name.replace("/", "_").replace("\\", "_").strip()
    return "_" + clean if clean.startswith(".") or not clean else clean


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="facelearn-align", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[2:]))
    ap.add_argument("src", help="an identity folder (SRC/<identity>/<image>), a list file's root (--list), or CFP")
    ap.add_argument("out", help="output folder (OUT/<identity>/<image>.png)")
    ap.add_argument("--list", default=None, help="a list file of 'relative/path label' lines under SRC")
    ap.add_argument("--detector", default=None, help=f"YuNet ONNX file (default: {DETECTOR_FILE} in "
                                                     "$FACELEARN_MODELS or ../shared/models)")
    ap.add_argument("--detect-scale", type=float, default=2.0,
                    help="upscale before detection (landmarks scaled back; more precise landmarks)")
    ap.add_argument("--score-threshold", type=float, default=0.9)
    ap.add_argument("--retry-threshold", type=float, default=0.2)
    ap.add_argument("--on-failure", choices=("fallback", "skip", "error"), default="fallback")
    ap.add_argument("--fallback-fraction", type=float, default=0.6,
                    help="fallback crop: centred square of this fraction of the short side")
    ap.add_argument("--format", choices=("png", "jpg"), default="png")
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality (--format jpg)")
    ap.add_argument("--rec", default=None, help="also pack the crops as this .rec (+ .idx, .names)")
    ap.add_argument("--workers", type=int, default=None, help="threads (default: the CPUs available)")
    args = ap.parse_args(argv)
    # the CLI reports detections and failures itself (summary line, failures.txt): not the library's log lines
    logging.getLogger("facelearn.data.landmarks").setLevel(logging.ERROR)
    try:
        run(args)
    except (FileNotFoundError, ValueError, ImportError) as e:
        sys.exit(f"facelearn-align: {e}")


def run(args: argparse.Namespace) -> dict:
    detector = args.detector or default_detector()
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not 1 <= args.quality <= 100:
        raise ValueError(f"--quality must be in 1..100, got {args.quality}")
    if args.rec and not args.rec.endswith(".rec"):
        raise ValueError(f"--rec {args.rec} should end in .rec (the .idx and .names go beside it)")
    aligner = FivePointAlignment(detector, args.score_threshold, args.retry_threshold, on_failure="fallback",
                                 fallback_fraction=args.fallback_fraction, workers=args.workers,
                                 detect_scale=args.detect_scale)
    aligner.check()
    sources = list_sources(args.src, args.list)
    out = Path(args.out)
    paths = [s[0] for s in sources]
    n, t0 = len(paths), time.perf_counter()
    print(f"facelearn-align: {n} images from {args.src}, detector {detector}, {args.workers or available_cpus()} "
          "workers", flush=True)
    done, lock = [0], threading.Lock()

    def progress(_i: int) -> None:
        with lock:
            done[0] += 1
            k = done[0]
        if k % 1000 == 0 or k == n:
            rate = k / max(time.perf_counter() - t0, 1e-9)
            print(f"  detected {k}/{n} ({rate:.0f} img/s)", flush=True)

    marks = aligner.landmarks(paths, None, f"facelearn-align {args.src}", progress)
    failed = np.flatnonzero(marks.stage == FALLBACK)
    if len(failed) and args.on_failure == "error":
        raise ValueError(f"no face in {len(failed)} of {n} images, e.g. {[paths[i] for i in failed[:5]]}; "
                         "nothing written (--on-failure fallback or skip)")
    out.mkdir(parents=True, exist_ok=True)
    targets: list[str | None] = []
    seen: set[str] = set()
    for i, (path, identity, stem) in enumerate(sources):
        if marks.stage[i] == FALLBACK and args.on_failure == "skip":
            targets.append(None)
            continue
        rel = f"{safe_component(identity)}/{safe_component(stem)}.{args.format}"
        if rel in seen:
            raise ValueError(f"two images of {identity!r} would both be written as {rel} (e.g. {path})")
        seen.add(rel)
        targets.append(rel)

    def write(i: int) -> None:
        rel = targets[i]
        if rel is None:
            return
        crop = warp(read_rgb(paths[i]), matrices[i])
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        img = Image.fromarray(crop)
        if args.format == "jpg":
            img.save(dst, quality=args.quality)
        else:
            img.save(dst)

    t1 = time.perf_counter()
    matrices = aligner.matrices_of(marks, paths)  # a face without landmarks: the centred fallback square
    with ThreadPoolExecutor(args.workers or available_cpus()) as ex:
        list(ex.map(write, range(n)))
    with open(out / "landmarks.tsv", "w", encoding="utf-8") as fh:
        fh.write("source\tcrop\tstage\tscore\tfaces\t" + "\t".join(f"{p}_{c}" for p in
                 ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth") for c in "xy") + "\n")
        for i in range(n):
            pts = "\t".join(f"{v:.2f}" for v in marks.points[i].reshape(-1))
            fh.write(f"{paths[i]}\t{targets[i] or '-'}\t{STAGES[marks.stage[i]]}\t{marks.scores[i]:.4f}\t"
                     f"{marks.faces[i]}\t{pts}\n")
    with open(out / "failures.txt", "w", encoding="utf-8") as fh:
        action = {"fallback": "centre crop", "skip": "skipped"}[args.on_failure]
        for i in failed:
            fh.write(f"{paths[i]}\t{action}\n")
    counts = marks.counts()
    summary = {"source": str(args.src), "images": n, "written": sum(t is not None for t in targets),
               "stages": counts, "several_faces": int((marks.faces > 1).sum()), "no_face": int(len(failed)),
               "on_failure": args.on_failure, "detector": detector, "score_threshold": args.score_threshold,
               "retry_threshold": args.retry_threshold, "detect_seconds": round(t1 - t0, 1),
               "write_seconds": round(time.perf_counter() - t1, 1)}
    if args.rec:
        from facelearn.data.recordio import pack
        records = _written_records(out, targets, sources)
        n_rec, c_rec = pack(records, Path(args.rec))
        summary["rec"] = {"path": args.rec, "images": n_rec, "identities": c_rec}
    with open(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print(f"facelearn-align: {summary['written']} crops in {out} ({marks.summary()}); "
          f"{len(failed)} without a face -> {args.on_failure} (listed in {out / 'failures.txt'}); "
          f"{summary['detect_seconds']} s detection, {summary['write_seconds']} s writing", flush=True)
    return summary


def _written_records(out: Path, targets: list[str | None], sources: list[tuple[str, str, str]]):
    """The written crops as FaceRecords (identities as in the source; only what was written)."""
    from facelearn.data.records import FaceRecords
    keep = [(str(out / t), s[1]) for t, s in zip(targets, sources) if t is not None]
    return FaceRecords(np.array([k[1] for k in keep], dtype=object), paths=[k[0] for k in keep],
                       source=str(out))


if __name__ == "__main__":
    main()
