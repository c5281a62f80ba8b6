"""A Python client for the delf-rs coordinator (proto/delf/v1/coordinator.proto), for services that search a
cluster without the `delf` binary: a photo (or precomputed features) in, ranked matches with inlier scores out.

    from delf_client import Client
    with Client("coordinator:7700", token="...", ca="ca.pem", cert="client.pem", key="client.key") as c:
        answer = c.search_file("photo.jpg", top=5)
        for m in answer.results:            # best first; empty = "no match"
            print(m.rank, m.image_id, m.score, m.votes)

Errors are grpc.RpcError with the coordinator's status: INVALID_ARGUMENT for an unreadable photo or bad
parameters, UNAUTHENTICATED for a wrong token, UNAVAILABLE when no replica of a shard answers and the query asked
for SHARD_FAILURE_POLICY_FAIL, DEADLINE_EXCEEDED past the deadline. The stubs are generated from proto/ by
clients/python/generate.py (scripts/setup.sh runs it).
"""

import os
import sys
import uuid

import grpc

_GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gen")
if not os.path.isdir(os.path.join(_GEN, "delf")):
    raise ImportError(f"delf_client stubs missing in {_GEN}: run clients/python/generate.py")
# The generated modules import each other as `delf.v1.*`.
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

from delf.v1 import coordinator_pb2 as pb  # noqa: E402
from delf.v1 import coordinator_pb2_grpc as pb_grpc  # noqa: E402

# The coordinator's own limit (delf_proto::MAX_MESSAGE_BYTES): a photo up to 64 MiB.
MAX_MESSAGE_BYTES = 64 << 20

PARTIAL = pb.SHARD_FAILURE_POLICY_PARTIAL
FAIL = pb.SHARD_FAILURE_POLICY_FAIL


class Client:
    """A connection to one coordinator. `token` is the cluster's bearer token; `ca` (PEM) turns TLS on, and `cert`
    with `key` present a client certificate (mutual TLS); `domain` overrides the name checked in the server's
    certificate. Calls take `timeout` seconds unless given one."""

    def __init__(self, address, token=None, ca=None, cert=None, key=None, domain=None, timeout=60.0):
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if ca:
            read = lambda p: open(p, "rb").read() if p else None  # noqa: E731
            credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
            if domain:
                options.append(("grpc.ssl_target_name_override", domain))
            self._channel = grpc.secure_channel(address, credentials, options=options)
        elif cert or key:
            raise ValueError("a client certificate needs the CA (ca=...) too")
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self._token = token
        self._timeout = timeout

    def _metadata(self, request_id):
        m = [("x-request-id", request_id)]
        if self._token:
            m.append(("authorization", f"Bearer {self._token}"))
        return m

    def search(self, image=None, features=None, top=10, candidates=0, nprobe=0, min_inliers=None,
               on_shard_failure=0, deadline_ms=0, request_id=None, timeout=None):
        """Searches with an encoded photo (`image`, bytes) or precomputed features (a delf.v1.Features with the
        index's fingerprint). 0 (or None) leaves a parameter to the coordinator, except `min_inliers`: None leaves
        it to the coordinator, 0 returns every verified candidate. Returns a SearchResponse:
        `results` (best first, empty = no match), `degraded` and `missing_shards`, `timing`, `request_id`."""
        if (image is None) == (features is None):
            raise ValueError("give exactly one of image= and features=")
        request_id = request_id or uuid.uuid4().hex
        request = pb.SearchRequest(
            request_id=request_id, top=top, candidates=candidates, nprobe=nprobe,
            on_shard_failure=on_shard_failure, deadline_ms=deadline_ms,
        )
        if min_inliers is not None:
            request.min_inliers = min_inliers
        if image is not None:
            request.image = image
        else:
            request.features.CopyFrom(features)
        return self._stub.Search(request, metadata=self._metadata(request_id), timeout=timeout or self._timeout)

    def search_file(self, path, **kwargs):
        """`search` with the bytes of the file at `path`."""
        with open(path, "rb") as f:
            return self.search(image=f.read(), **kwargs)

    def status(self, timeout=None):
        """The index behind the coordinator, its shards' replicas and the workers (ClusterStatusResponse)."""
        request_id = uuid.uuid4().hex
        return self._stub.ClusterStatus(
            pb.ClusterStatusRequest(), metadata=self._metadata(request_id), timeout=timeout or self._timeout
        )

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
