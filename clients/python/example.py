"""Searches a delf-rs cluster from Python: one JSON line per photo, the shape of `delf query --json`.

    python clients/python/example.py --coordinator 127.0.0.1:7700 --token "$DELF_CLUSTER__TOKEN" photo.jpg ...
    (TLS: --ca ca.pem; mutual TLS: also --cert client.pem --key client.key)
"""

import argparse
import json
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from delf_client import Client  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="+")
    ap.add_argument("--coordinator", default="127.0.0.1:7700")
    ap.add_argument("--token", default=os.environ.get("DELF_CLUSTER__TOKEN"))
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    ap.add_argument("--status", action="store_true", help="print the cluster status first")
    a = ap.parse_args()

    failed = False
    with Client(a.coordinator, token=a.token, ca=a.ca, cert=a.cert, key=a.key, timeout=a.timeout) as client:
        if a.status:
            try:
                s = client.status()
                print(json.dumps({"index_spec": s.index_spec, "shard_count": s.shard_count, "images": s.images,
                                  "workers": list(s.workers), "workers_healthy": list(s.workers_healthy)}))
            except grpc.RpcError as e:
                print(json.dumps({"status_error": f"{e.code().name}: {e.details()}"}))
                failed = True
        for photo in a.photos:
            try:
                r = client.search_file(photo, top=a.top)
            except grpc.RpcError as e:
                print(json.dumps({"query": photo, "error": f"{e.code().name}: {e.details()}"}))
                failed = True
                continue
            print(json.dumps({
                "query": photo,
                "request_id": r.request_id,
                "results": [{"image_id": m.image_id, "score": m.score, "votes": m.votes, "rank": m.rank}
                            for m in r.results],
                "degraded": r.degraded,
                "timing_ms": {"extract": r.timing.extract_ms, "ann": r.timing.ann_ms,
                              "verify": r.timing.verify_ms, "total": r.timing.total_ms},
            }))
    sys.exit(3 if failed else 0)


if __name__ == "__main__":
    main()
