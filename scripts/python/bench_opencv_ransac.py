#!/usr/bin/env python3
"""OpenCV's estimateAffine2D (RANSAC) on correspondences written by `delf bench verify`, timed the same way.

Input (little-endian): u64 scenes, u64 n, then per scene n*(x, y) query points and n*(x, y) database points as f64.
Prints one JSON line: {"opencv": version, "verifications_per_s": .., "mean_inliers": .., "runs": ..}.
"""
import json
import sys
import time

import cv2
import numpy as np


def main(path, threshold, max_iters, confidence, runs):
    raw = open(path, "rb").read()
    scenes, n = np.frombuffer(raw[:16], dtype="<u8")
    data = np.frombuffer(raw[16:], dtype="<f8").reshape(int(scenes), 2, int(n), 2)
    cv2.setNumThreads(1)
    src = [np.ascontiguousarray(s[0]).astype(np.float32) for s in data]
    dst = [np.ascontiguousarray(s[1]).astype(np.float32) for s in data]
    inliers = 0
    start = time.perf_counter()
    for _ in range(runs):
        for a, b in zip(src, dst):
            _, mask = cv2.estimateAffine2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                           maxIters=max_iters, confidence=confidence, refineIters=10)
            inliers += int(mask.sum()) if mask is not None else 0
    elapsed = time.perf_counter() - start
    total = runs * len(src)
    print(json.dumps({"opencv": cv2.__version__, "verifications_per_s": total / elapsed,
                      "mean_inliers": inliers / total, "runs": total}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
