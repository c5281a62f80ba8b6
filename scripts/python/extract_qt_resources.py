"""Extract files from Qt binary resource files (.rcc, format versions 1-3), standard library only.

    python extract_qt_resources.py --out DIR [--only LIST] FILE.rcc...

Writes every file of every resource into DIR under its resource path (or, with --only, just the paths listed in
LIST, one per line, and fails if one of them is missing). Used by scripts/setup.sh to take the photos of the
robustness benchmark out of Debian's gcompris-qt-data, which ships its activities as .rcc files.

Format (Qt's rcc.cpp): a header ("qres", version, tree offset, data offset, names offset[, flags]), a tree of
14-byte (v1) or 22-byte (v2+) entries (name offset, flags, then a directory's child count and first child, or a
file's locale and data offset), names as (length, hash, UTF-16BE), data as (length, bytes); flag 1 = zlib with a
4-byte uncompressed length first, flag 4 = zstd (not used by the files we read; refused).
"""
import argparse
import os
import struct
import sys
import zlib


def read_rcc(path):
    """Yields (resource path, bytes) for every file in the resource file at `path`."""
    with open(path, "rb") as f:
        b = f.read()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", b[4:20])
    if version not in (1, 2, 3):
        raise ValueError(f"{path}: unsupported resource format version {version}")
    entry = 14 if version == 1 else 22

    def name(offset):
        (n,) = struct.unpack(">H", b[names + offset : names + offset + 2])
        return b[names + offset + 6 : names + offset + 6 + 2 * n].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        base = tree + index * entry
        name_offset, flags = struct.unpack(">IH", b[base : base + 6])
        here = name(name_offset) if index else ""
        if flags & 2:
            count, first = struct.unpack(">II", b[base + 6 : base + 14])
            child_prefix = f"{prefix}{here}/" if index else prefix
            stack.extend((c, child_prefix) for c in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", b[base + 10 : base + 14])
        (size,) = struct.unpack(">I", b[data + offset : data + offset + 4])
        blob = b[data + offset + 4 : data + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: {prefix}{here} is zstd-compressed (not supported)")
        if flags & 1:
            blob = zlib.decompress(blob[4:])
        yield prefix + here, blob


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", help="file listing the resource paths to extract, one per line")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    wanted = None
    if args.only:
        with open(args.only) as f:
            wanted = {line.strip() for line in f if line.strip()}
    written = set()
    for path in args.files:
        for name, blob in read_rcc(path):
            if wanted is not None and name not in wanted:
                continue
            target = os.path.join(args.out, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(blob)
            written.add(name)
    if wanted is not None and wanted - written:
        missing = sorted(wanted - written)
        sys.exit(f"{len(missing)} listed resources not found, first: {missing[:3]}")
    print(f"extracted {len(written)} files into {args.out}")


if __name__ == "__main__":
    main()
