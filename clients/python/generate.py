"""Generates the gRPC stubs of delf_client from the repository's proto/ (grpcio-tools' bundled protoc) into
delf_client/_gen/ (not committed: always the protocol of this checkout). scripts/setup.sh runs it; run it again
after changing proto/.

    python clients/python/generate.py
"""

import os
import sys

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")
OUT = os.path.join(HERE, "delf_client", "_gen")


def main():
    os.makedirs(OUT, exist_ok=True)
    files = sorted(
        os.path.join("delf", "v1", f) for f in os.listdir(os.path.join(PROTO, "delf", "v1")) if f.endswith(".proto")
    )
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", *files]
    )
    if code != 0:
        sys.exit(f"protoc failed ({code}) on {files}")
    for folder in (os.path.join(OUT, "delf"), os.path.join(OUT, "delf", "v1")):
        open(os.path.join(folder, "__init__.py"), "a").close()
    print(f"generated {len(files)} protocol files into {OUT}")


if __name__ == "__main__":
    main()
