"""The classical baseline of the robustness benchmark (`delf eval views`): RootSIFT + RANSAC retrieval, OpenCV.

    python bench_sift_retrieval.py --views DIR --data DIR --out FILE.jsonl [--cache DIR]

Reads DIR/views.json (written by `delf eval views`), extracts RootSIFT features (OpenCV SIFT with its default
settings, unlimited keypoints, on the grey image with its longest side brought to at most 1024 px, as our pipeline
does; then the RootSIFT mapping: L1-normalise, square root) of every database photo and every query, shortlists the
20 database images with the most votes from each query descriptor's 10 nearest database descriptors (FAISS
IVF-Flat, 1024 lists, 16 probed), then verifies each shortlisted image: each query descriptor's 2 nearest
descriptors in that image (exact, by matrix product), Lowe's ratio test at 0.8, RANSAC homography at 8 px (2000 iterations, confidence
0.995); the score is the number of inliers. Writes one JSON line per query: {"query", "results": [[id, score], ...]
(best first, every verified image), "ms": {"extract", "search", "verify"}}. Database features are cached in --cache.
"""
import argparse
import json
import os
import sys
import time

import cv2
import faiss
import numpy as np

MAX_SIDE = 1024
SHORTLIST = 20
NEIGHBOURS = 10
RATIO = 0.8
RANSAC_PX = 8.0


def rootsift(path, sift):
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    scale = MAX_SIDE / max(img.shape)
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    kp, desc = sift.detectAndCompute(img, None)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    desc = desc / (desc.sum(axis=1, keepdims=True) + 1e-7)
    return np.float32([k.pt for k in kp]), np.sqrt(desc).astype(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache")
    args = p.parse_args()
    cv2.setNumThreads(2)
    faiss.omp_set_num_threads(2)
    with open(os.path.join(args.views, "views.json")) as f:
        views = json.load(f)
    sift = cv2.SIFT_create()
    db_ids = views["database"]
    cache = os.path.join(args.cache or args.views, "sift-database.npz")
    if os.path.exists(cache) and list(np.load(cache, allow_pickle=False)["ids"]) == db_ids:
        z = np.load(cache, allow_pickle=False)
        points, descs, owner = z["points"], z["descs"], z["owner"]
    else:
        started = time.time()
        per = [rootsift(os.path.join(args.data, i), sift) for i in db_ids]
        points = np.concatenate([pt for pt, _ in per]) if per else np.zeros((0, 2), np.float32)
        descs = np.concatenate([d for _, d in per])
        owner = np.concatenate([np.full(len(d), n, np.int32) for n, (_, d) in enumerate(per)])
        np.savez(cache, ids=np.array(db_ids), points=points, descs=descs, owner=owner)
        print(f"sift: {len(db_ids)} database photos, {len(descs)} descriptors in {time.time() - started:.0f} s",
              file=sys.stderr)
    starts = np.searchsorted(owner, np.arange(len(db_ids) + 1))
    quantizer = faiss.IndexFlatL2(128)
    index = faiss.IndexIVFFlat(quantizer, 128, min(1024, max(1, len(descs) // 64)))
    rng = np.random.default_rng(0)
    sample = descs[rng.choice(len(descs), min(len(descs), 100_000), replace=False)]
    index.train(sample)
    index.add(descs)
    index.nprobe = 16
    norms = (descs * descs).sum(axis=1)
    with open(args.out, "w") as out:
        for q in views["queries"]:
            path = os.path.join(args.views if q["rendered"] else args.data, q["file"])
            t0 = time.time()
            qp, qd = rootsift(path, sift)
            t1 = time.time()
            results = []
            if len(qd):
                _, nn = index.search(qd, NEIGHBOURS)
                votes = np.zeros(len(db_ids), np.int64)
                for row in nn:
                    imgs = np.unique(owner[row[row >= 0]])
                    votes[imgs] += 1
                shortlist = [int(i) for i in np.argsort(-votes, kind="stable")[:SHORTLIST] if votes[i] > 0]
            else:
                shortlist = []
            t2 = time.time()
            for i in shortlist:
                lo, hi = starts[i], starts[i + 1]
                if hi - lo < 2:
                    continue
                # Squared distances of every query descriptor to every descriptor of the image.
                d2 = norms[lo:hi][None, :] - 2.0 * qd @ descs[lo:hi].T
                rows = np.arange(len(qd))
                first = d2.argmin(axis=1)
                q2 = (qd * qd).sum(axis=1)
                d1 = d2[rows, first] + q2
                d2[rows, first] = np.inf
                dn = d2.min(axis=1) + q2
                good = np.sqrt(np.maximum(d1, 0)) < RATIO * np.sqrt(np.maximum(dn, 0))
                inliers = 0
                if good.sum() >= 4:
                    a = qp[good]
                    b = points[lo:hi][first[good]]
                    _, mask = cv2.findHomography(a, b, cv2.RANSAC, RANSAC_PX, maxIters=2000, confidence=0.995)
                    inliers = int(mask.sum()) if mask is not None else 0
                results.append((db_ids[i], inliers))
            results.sort(key=lambda r: (-r[1], r[0]))
            t3 = time.time()
            ms = {"extract": 1e3 * (t1 - t0), "search": 1e3 * (t2 - t1), "verify": 1e3 * (t3 - t2)}
            out.write(json.dumps({"query": q["file"], "results": results, "ms": ms}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
