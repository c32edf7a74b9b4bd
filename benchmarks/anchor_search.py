"""Anchor search time for IDA-R on this machine: FAISS (exact IndexFlatIP, and HNSW) vs the torch fallback, each
measured in the same run on the same random L2-normalised data; prints seconds per 10^5 queries and the ratio.

    python benchmarks/anchor_search.py [--anchors 50000] [--queries 10000] [--dim 512] [--k 10]
"""

import argparse
import time

import torch

from facelearn.eval.ida import AnchorIndex


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", type=int, default=50000)
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(args.anchors, args.dim, generator=g)
    queries = torch.randn(args.queries, args.dim, generator=g)
    rows = []
    for label, kw in [("torch (exact, chunked matmul + topk)", dict(backend="torch")),
                      ("faiss IndexFlatIP (exact)", dict(backend="faiss", kind="flat")),
                      ("faiss HNSW (approximate)", dict(backend="faiss", kind="hnsw"))]:
        t0 = time.perf_counter()
        index = AnchorIndex(anchors, **kw)
        build = time.perf_counter() - t0
        index.search(queries[:100], args.k)  # warm-up
        t0 = time.perf_counter()
        sims, _ = index.search(queries, args.k)
        per_1e5 = (time.perf_counter() - t0) * 1e5 / args.queries
        rows.append((label, build, per_1e5, sims))
    base = rows[0][2]
    print(f"{args.queries} queries x {args.anchors} anchors, d={args.dim}, k={args.k}, {args.threads} threads")
    print(f"{'method':40s} {'build s':>8s} {'s / 1e5 queries':>16s} {'speed-up vs torch':>18s}")
    exact = rows[0][3]
    for label, build, per, sims in rows:
        agree = float((sims[:, 0] - exact[:, 0]).abs().max())
        print(f"{label:40s} {build:8.2f} {per:16.2f} {base / per:17.2f}x   max |top-1 sim - exact| {agree:.2e}")


if __name__ == "__main__":
    main()
