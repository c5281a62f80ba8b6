"""FAISS IndexIVFPQ on the same vectors, queries and parameters as `delf bench index` (the side-by-side baseline).

Reads base.npy (n x d float32), queries.npy (q x d float32) and gt.npy (q x 1 int64: row of each query's exact
nearest neighbour) from --dir; trains IVF<nlist>,PQ<m>x<nbits> (residual encoding, FAISS's default), adds, searches
all queries as one batch with --nprobe and --k, and prints one JSON object with timings and recall@1/10/60. With
--fastscan M1,M2,... it also builds FAISS's 4-bit fast-scan indexes IVF<nlist>,PQ<M>x4fsr (factory strings) on the
same vectors and reports them under "fastscan", one object per M.
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
    ap.add_argument("--fastscan", default="", help="comma-separated sub-quantizer counts of 4-bit fast-scan rows")
    a = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(a.threads)
    base = np.load(os.path.join(a.dir, "base.npy"), mmap_mode="r")
    queries = np.ascontiguousarray(np.load(os.path.join(a.dir, "queries.npy")))
    gt = np.load(os.path.join(a.dir, "gt.npy"))[:, 0]
    d = base.shape[1]

    def measure(index):
        if a.coarse_niter is not None:
            faiss.extract_index_ivf(index).cp.niter = a.coarse_niter
        t = time.perf_counter()
        index.train(np.ascontiguousarray(base))
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        step = 1_000_000
        for i in range(0, base.shape[0], step):
            index.add(np.ascontiguousarray(base[i : i + step]))
        add_s = time.perf_counter() - t

        faiss.extract_index_ivf(index).nprobe = a.nprobe
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

        return {
            "coarse_niter": faiss.extract_index_ivf(index).cp.niter,
            "train_s": train_s,
            "add_vectors_per_s": base.shape[0] / add_s,
            "search_s_per_batch": search_s,
            "recall": [recall(1), recall(10), recall(a.k)],
            "bytes_per_descriptor": faiss.extract_index_ivf(index).code_size + 8,
        }

    quantizer = faiss.IndexFlatL2(d)
    result = measure(faiss.IndexIVFPQ(quantizer, d, a.nlist, a.m, a.nbits))
    result["faiss"] = faiss.__version__
    result["fastscan"] = []
    for m in [int(x) for x in a.fastscan.split(",") if x]:
        spec = f"IVF{a.nlist},PQ{m}x4fsr"
        row = measure(faiss.index_factory(d, spec))
        row["spec"] = spec
        result["fastscan"].append(row)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
