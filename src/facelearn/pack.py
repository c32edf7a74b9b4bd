"""Pack an identity folder or a list file into insightface RecordIO: ``python -m facelearn.pack SRC OUT.rec``.

    python -m facelearn.pack /data/faces out/train.rec                 # SRC/<identity>/<image>
    python -m facelearn.pack /data/root out/train.rec --list train.txt  # 'relative/path label' lines under SRC

Writes OUT.rec, OUT.idx and OUT.names (class names in class-id order); image files are stored as they are (no
re-encoding), so training from the .rec decodes exactly the same pixels as from the files (``data=rec``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facelearn.data.recordio import pack
from facelearn.data.records import IdentityFolder, ImageList


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="facelearn-pack", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="an identity folder, or the root of a list file's paths (with --list)")
    ap.add_argument("out", help="the .rec file to write (.idx and .names beside it)")
    ap.add_argument("--list", default=None, help="a list file of 'relative/path label' lines")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
