"""Pack an identity folder or a list file into insightface RecordIO: ``python -m facelearn.pack SRC OUT.rec``.

    python -m facelearn.pack /data/faces out/train.rec                 # SRC/<identity>/<image>
    python -m facelearn.pack /data/root out/train.rec --list train.txt  # 'relative/path label' lines under SRC
    python -m facelearn.pack --verify out/train.rec                     # decode every record, list the bad ones

Writes OUT.rec, OUT.idx and OUT.names (class names in class-id order); image files are stored as they are (no
re-encoding), so training from the .rec decodes exactly the same pixels as from the files (``data=rec``).
``--verify`` checks a packed set (any insightface ``.rec``/``.idx``) before hours of training: every record read and
fully decoded in parallel, every ``.idx`` offset and class id checked; the bad ones are listed (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelearn.data.recordio import pack
from facelearn.data.records import IdentityFolder, ImageList


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="facelearn-pack", description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", help="an identity folder, or the root of a list file's paths (with --list)")
    ap.add_argument("out", nargs="?", help="the .rec file to write (.idx and .names beside it)")
    ap.add_argument("--list", default=None, help="a list file of 'relative/path label' lines")
    ap.add_argument("--verify", metavar="REC", default=None, help="check a packed .rec instead of packing")
    ap.add_argument("--workers", type=int, default=None, help="decode threads for --verify (default: the cores)")
    args = ap.parse_args(argv)
    if args.verify:
        if args.src or args.out:
            ap.error("--verify REC takes no SRC / OUT")
        sys.exit(verify(args.verify, args.workers))
    if not (args.src and args.out):
        ap.error("give SRC and OUT.rec (or --verify REC)")
    out = Path(args.out)
    if out.suffix != ".rec":
        sys.exit(f"facelearn-pack: {out} should end in .rec (the .idx and .names go beside it)")
    try:
        source = ImageList(args.src, args.list) if args.list else IdentityFolder(args.src)
        records = source.load(0)
        out.parent.mkdir(parents=True, exist_ok=True)
        n, c = pack(records, out)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"facelearn-pack: {e}")
    print(f"{out}: {n} images of {c} identities (+ {out.with_suffix('.idx').name}, {out.with_suffix('.names').name})")


def verify(path: str, workers: int | None) -> int:
    from facelearn.data.recordio import verify_rec
    try:
        report = verify_rec(path, workers)
    except (FileNotFoundError, ValueError) as e:
        print(f"facelearn-pack: {e}", file=sys.stderr)
        return 2
    rate = report.checked / max(report.seconds, 1e-9)
    print(f"{path}: {report.checked} image records decoded in {report.seconds:.1f} s ({rate:.0f}/s), "
          f"{len(report.bad)} bad")
    for key, cls, reason in report.bad:
        print(f"  record {key} (class {cls}): {reason}" if cls is not None else f"  record {key}: {reason}")
    return 1 if report.bad else 0


if __name__ == "__main__":
    main()
