#!/usr/bin/env python3
"""Removes from ONNX files what an exporter records about the machine that ran it: each
node's doc_string and metadata_props (torch's dynamo exporter writes a stack trace there,
with the exporting machine's file paths) in the graph, its subgraphs and its functions.
Weights, graph structure and the model's own metadata_props are left byte for byte.

    python3 scripts/strip-onnx-metadata.py fixtures/onnx/tiny-dncnn-dynamo.onnx ...

It edits the protobuf wire format directly, so it needs no package (the `onnx` package
re-serialises, which could reorder what it does not change).
"""
import os
import sys
import tempfile


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def put_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def fields(b):
    """(field number, wire type, raw field bytes, payload or None) for each field."""
    i = 0
    while i < len(b):
        start = i
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            _, i = varint(b, i)
            payload = None
        elif wt == 1:
            i += 8
            payload = None
        elif wt == 5:
            i += 4
            payload = None
        elif wt == 2:
            n, i = varint(b, i)
            payload = b[i:i + n]
            i += n
        else:
            raise ValueError(f"wire type {wt} not handled")
        yield num, wt, b[start:i], payload


def message(b, rules):
    """`b` with the fields `rules` drops removed and those it descends into rewritten.
    rules: {field: None (drop) or rules of the sub-message}."""
    out = bytearray()
    for num, wt, raw, payload in fields(b):
        if num in rules:
            sub = rules[num]
            if sub is None:
                continue
            if wt == 2:
                new = message(payload, sub)
                out += put_varint((num << 3) | 2) + put_varint(len(new)) + new
                continue
        out += raw
    return bytes(out)


# NodeProto: doc_string 6, metadata_props 9, attribute 5 (AttributeProto: g 6, graphs 11).
NODE = {6: None, 9: None}
GRAPH = {1: NODE}
ATTRIBUTE = {6: GRAPH, 11: GRAPH}
NODE[5] = ATTRIBUTE
# ModelProto: graph 7, functions 25 (FunctionProto: node 7).
MODEL = {7: GRAPH, 25: {7: NODE}}


def main():
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            b = f.read()
        new = message(b, MODEL)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".onnx")
        with os.fdopen(fd, "wb") as f:
            f.write(new)
        os.replace(tmp, path)
        print(f"{path}: {len(b)} -> {len(new)} bytes")


if __name__ == "__main__":
    main()
