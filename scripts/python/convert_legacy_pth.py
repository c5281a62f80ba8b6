#!/usr/bin/env python3
"""Convert a PyTorch checkpoint saved in the legacy (pre-1.6, non-zip) pickle format to safetensors.

Only numpy is needed: no torch. The legacy layout is five consecutive pickles and raw storages:

    magic number, protocol version, sys info, the object itself (tensors refer to storages through
    persistent ids), the list of storage keys; then for every key: int64 element count + raw little-endian data.

Usage: convert_legacy_pth.py IN.pth OUT.safetensors [--meta key=value ...]

Tensors named `*.num_batches_tracked` (BatchNorm step counters, unused at inference) are dropped.
"""
import argparse
import collections
import pickle
import struct
import sys

import numpy as np

import safetensors_np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    def __init__(self, name):
        if name not in STORAGE_DTYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class Storage:
    def __init__(self, dtype, numel):
        self.dtype = dtype
        self.numel = numel
        self.data = None


class LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self):
        base = self.storage.data
        if all(s > 0 for s in self.size):
            last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride))
            if last >= len(base):
                raise ValueError("tensor view exceeds its storage")
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.ascontiguousarray(view)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return LazyTensor(storage, offset, size, stride)


class LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a tensor state_dict")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = Storage(storage_type.dtype, numel)
        return self.storages[key]


def load_legacy(path):
    storages = {}
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch checkpoint (zip checkpoints need another reader)")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise ValueError(f"{path}: unsupported legacy protocol {protocol}")
        pickle.load(f)  # sys_info
        obj = LegacyUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != storage.numel:
                raise ValueError(f"storage {key}: {numel} elements on disk, {storage.numel} expected")
            raw = f.read(numel * storage.dtype.itemsize)
            if len(raw) != numel * storage.dtype.itemsize:
                raise ValueError(f"{path}: truncated in storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    return {name: t.materialize() for name, t in obj.items() if isinstance(t, LazyTensor)}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--meta", action="append", default=[], help="key=value stored in the safetensors metadata")
    args = ap.parse_args(argv)
    tensors = load_legacy(args.input)
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    meta = dict(kv.split("=", 1) for kv in args.meta)
    safetensors_np.save(args.output, tensors, meta)
    total = sum(t.size for t in tensors.values())
    print(f"converted {len(tensors)} tensors ({total} parameters) -> {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
