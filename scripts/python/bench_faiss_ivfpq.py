"""FAISS IndexIVFPQ on the same vectors, queries and parameters as `delf bench index` (the side-by-side baseline).

Reads base.npy (n x d float32), queries.npy (q x d float32) and gt.npy (q x 1 int64: row of each query's exact
nearest neighbour) from --dir; trains IVF<nlist>,PQ<m>x<nbits> (residual encoding, FAISS's default), adds, searches
all queries as one batch with --nprobe and --k, and prints one JSON object with timings and recall@1/10/60.
"""

import argparse
import json
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--nlist", type=int, required=True)
    ap.add_argument("--m", type=int, required=True)
    ap.add_argument("--nbits", type=int, default=8)
    ap.add_argument("--nprobe", type=int, required=True)
    ap.add_argument("--k", type=int, default=60)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--coarse-niter", type=int, help="k-means iterations of the coarse quantizer (FAISS default: 10)")
    a = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(a.threads)
    base = np.load(os.path.join(a.dir, "base.npy"), mmap_mode="r")
    queries = np.ascontiguousarray(np.load(os.path.join(a.dir, "queries.npy")))
    gt = np.load(os.path.join(a.dir, "gt.npy"))[:, 0]
    d = base.shape[1]

    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFPQ(quantizer, d, a.nlist, a.m, a.nbits)
    if a.coarse_niter is not None:
        index.cp.niter = a.coarse_niter
    t = time.perf_counter()
    index.train(np.ascontiguousarray(base))
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    step = 1_000_000
    for i in range(0, base.shape[0], step):
        index.add(np.ascontiguousarray(base[i : i + step]))
    add_s = time.perf_counter() - t

    index.nprobe = a.nprobe
    index.search(queries, a.k)  # warm-up
    reps, t = 0, time.perf_counter()
    while True:
        _, ids = index.search(queries, a.k)
        reps += 1
        if time.perf_counter() - t >= a.min_seconds:
            break
    search_s = (time.perf_counter() - t) / reps

    def recall(r):
        return float(np.mean([gt[i] in ids[i, :r] for i in range(len(gt))]))

    print(
        json.dumps(
            {
                "faiss": faiss.__version__,
                "coarse_niter": index.cp.niter,
                "train_s": train_s,
                "add_vectors_per_s": base.shape[0] / add_s,
                "search_s_per_batch": search_s,
                "recall": [recall(1), recall(10), recall(a.k)],
                "bytes_per_descriptor": index.code_size + 8,
            }
        )
    )


if __name__ == "__main__":
    main()
