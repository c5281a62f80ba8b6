"""DELF's `DatumProto` files (`delf/protos/datum.proto`: a packed int64 shape, field 1, and a packed float list,
field 2), the format of the DELF release's PCA (`pca/mean.datum`, `pca/pca_proj_mat.datum`), in numpy only.
"""

import numpy as np


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
    """A DELF `.datum` file as a float32 array of its shape; a damaged file is a ValueError naming it."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _parse(data, path)
    except ValueError as e:
        raise ValueError(e if str(path) in str(e) else f"{path}: {e}") from None


def _parse(data, path):
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
