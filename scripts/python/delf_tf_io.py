"""File formats shared by the DELF/DELG TensorFlow converter and its parity reference (numpy only).

- safetensors (f32 tensors + string metadata), the format every delf-rs weights, head and PCA file uses;
- DELF's `DatumProto` (`delf/protos/datum.proto`: a packed int64 shape, field 1, and a packed float list, field 2),
  the format of the DELF release's PCA (`pca/mean.datum`, `pca/pca_proj_mat.datum`).
"""

import json
import struct

import numpy as np


def save_safetensors(path, tensors, metadata=None):
    """Writes `tensors` (name -> array, stored as little-endian f32) with string `metadata`."""
    header = {"__metadata__": {k: str(v) for k, v in sorted((metadata or {}).items())}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[name], dtype="<f4"))
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    """(name -> f32 array, metadata) of a safetensors file of f32 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        if e["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {e['dtype']}, not F32")
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[base + a : base + b], dtype="<f4").reshape(e["shape"])
    return out, meta


def _varint(data, i):
    value, shift = 0, 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_datum(path):
    """A DELF `.datum` file as a float32 array of its shape."""
    with open(path, "rb") as f:
        data = f.read()
    shape, values, i = [], None, 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire != 2:
            raise ValueError(f"{path}: unexpected wire type {wire} for field {field}")
        length, i = _varint(data, i)
        body = data[i : i + length]
        i += length
        if field == 1:  # DatumShape { repeated int64 dim = 1 [packed] }
            j = 0
            while j < len(body):
                k, j = _varint(body, j)
                if k >> 3 != 1:
                    continue
                if k & 7 == 2:
                    n, j = _varint(body, j)
                    end = j + n
                    while j < end:
                        d, j = _varint(body, j)
                        shape.append(d)
                else:
                    d, j = _varint(body, j)
                    shape.append(d)
        elif field == 2:  # FloatList { repeated float value = 1 [packed] }
            j, parts = 0, []
            while j < len(body):
                k, j = _varint(body, j)
                if k & 7 == 2:
                    n, j = _varint(body, j)
                    parts.append(np.frombuffer(body[j : j + n], dtype="<f4"))
                    j += n
                elif k & 7 == 5:
                    parts.append(np.frombuffer(body[j : j + 4], dtype="<f4"))
                    j += 4
                else:
                    raise ValueError(f"{path}: unexpected float list encoding")
            values = np.concatenate(parts) if parts else np.zeros(0, dtype="<f4")
        else:
            raise ValueError(f"{path}: field {field} is not a float datum (only float_list is supported)")
    if values is None:
        raise ValueError(f"{path}: no float values")
    if int(np.prod(shape)) != values.size:
        raise ValueError(f"{path}: shape {shape} does not hold {values.size} values")
    return values.reshape(shape).astype(np.float32)


def write_datum(path, array):
    """Writes `array` as a DELF `.datum` (packed shape, packed float list), as `datum_io.WriteToFile` does."""
    a = np.asarray(array, dtype="<f4")
    dims = b"".join(_encode_varint(int(d)) for d in a.shape)
    shape = b"\x0a" + _encode_varint(len(dims)) + dims
    floats = a.tobytes()
    float_list = b"\x0a" + _encode_varint(len(floats)) + floats
    body = b"\x0a" + _encode_varint(len(shape)) + shape + b"\x12" + _encode_varint(len(float_list)) + float_list
    with open(path, "wb") as f:
        f.write(body)
