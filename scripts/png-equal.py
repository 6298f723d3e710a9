#!/usr/bin/env python3
"""png-equal.py A.png B.png: exit 0 when the two grayscale PNGs have the same size, bit depth
and pixel values, 1 otherwise (with the first differing pixel and the largest difference).

Standard library only (zlib), so `make slurm-test` needs no PyPI package. Reads what ppdenoise
writes: 8- or 16-bit grayscale, non-interlaced, any filter."""
import struct
import sys
import zlib


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    w, h, depth, color, _, _, interlace = ihdr
    if color != 0 or interlace != 0 or depth not in (8, 16):
        sys.exit(f"{path}: only non-interlaced 8/16-bit grayscale is read here")
    bpp = depth // 8
    stride = w * bpp
    raw = zlib.decompress(b"".join(idat))
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        rows.append(list(struct.unpack(f">{w}{'B' if bpp == 1 else 'H'}", bytes(line))))
        prev = line
    return w, h, depth, rows


def main():
    a, b = sys.argv[1], sys.argv[2]
    wa, ha, da, pa = read_png(a)
    wb, hb, db, pb = read_png(b)
    if (wa, ha, da) != (wb, hb, db):
        print(f"DIFFER: {a} is {wa}x{ha} {da}-bit, {b} is {wb}x{hb} {db}-bit")
        return 1
    diffs = [(y, x, pa[y][x], pb[y][x]) for y in range(ha) for x in range(wa) if pa[y][x] != pb[y][x]]
    if diffs:
        y, x, va, vb = diffs[0]
        worst = max(abs(d[2] - d[3]) for d in diffs)
        print(f"DIFFER: {len(diffs)} of {wa * ha} pixels, first at ({y},{x}): {va} vs {vb}, max |diff| {worst}")
        return 1
    print(f"identical: {wa}x{ha} {da}-bit, {a} == {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
