"""safetensors files from numpy, the one reader and writer of the project's Python tools (numpy only).

The layout (an 8-byte little-endian header length, a JSON header padded with spaces to a multiple of 8, then the
data) is what delf-rs reads and writes (`delf_model::TensorFile`): weights, attention heads, PCA files.
"""

import json
import os
import struct

import numpy as np

DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
NAMES = {np.dtype(t): name for name, t in DTYPES.items()}


def save(path, tensors, metadata=None):
    """Writes `tensors` (name -> array, kept in its dtype, little-endian) with string `metadata`, atomically
    (a temporary file renamed into place)."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}} if metadata else {}
    names = sorted(tensors)
    arrays = [np.ascontiguousarray(tensors[n]) for n in names]
    offset = 0
    for name, a in zip(names, arrays):
        header[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    os.replace(path + ".tmp", path)


def load(path):
    """(name -> array in its stored dtype, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        if e["dtype"] not in DTYPES:
            raise ValueError(f"{path}: {name} has unsupported dtype {e['dtype']}")
        a, b = e["data_offsets"]
        dtype = np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(data[base + a : base + b], dtype=dtype).reshape(e["shape"])
    return out, meta
