#!/usr/bin/env python3
"""Compares a fresh `ppdenoise table` run with a committed table page, digit for digit.

    scripts/table-check.py REFERENCE.md out/table-check/table.json

REFERENCE.md is a page `table` generated (e.g. docs/results-final-crop64.md). Every PSNR and
SSIM the fresh run has -- per image and sigma, plaintext and secure, and the per-sigma averages
-- must print exactly as the page prints it (PSNR to 0.01 dB, SSIM to 0.001): noise seeds and
fixed-point arithmetic are deterministic, so any difference is a change in behaviour. The
fresh run may cover a subset of the page's noise levels, but every image the page lists for
those levels must be there. Exits 1 naming each image and sigma that differs.

`--self-test` checks that the comparison itself catches a one-digit change and a missing run.
Standard library only.
"""

import json
import re
import sys

METHODS = {"Plaintext": ("psnr_float", "ssim_float"), "Secure": ("psnr_secure", "ssim_secure")}


def parse_page(text):
    """{(image, method, sigma): (psnr, ssim)} from the page's "PSNR (dB) and SSIM" table."""
    lines = text.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("| Image | Method |"))
    except StopIteration:
        raise SystemExit("reference page: no '| Image | Method |' table found")
    sigmas = [float(s) for s in re.findall(r"σ=([0-9.]+) PSNR", lines[start])]
    if not sigmas:
        raise SystemExit("reference page: the table header names no sigma")
    cells, image = {}, None
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) < 2:
            raise SystemExit(f"reference page: cannot read the row {line!r}")
        if cols[0]:
            image = cols[0].replace("**", "")
        method = cols[1]
        if method not in METHODS:
            continue
        values = cols[2:]
        if len(values) != 2 * len(sigmas):
            raise SystemExit(f"reference page: row {line!r} has {len(values)} cells")
        for j, sg in enumerate(sigmas):
            cells[(image, method, sg)] = (values[2 * j], values[2 * j + 1])
    return cells


def fresh_cells(table):
    """The same cells, printed from a fresh table.json as the page prints them."""
    cells = {}
    for r in table["runs"]:
        for method, (p, s) in METHODS.items():
            cells[(r["image"], method, float(r["sigma"]))] = (f"{r[p]:.2f}", f"{r[s]:.3f}")
    for a in table["averages"]:
        for method, (p, s) in METHODS.items():
            cells[("Average", method, float(a["sigma"]))] = (f"{a[p]:.2f}", f"{a[s]:.3f}")
    return cells


def compare(ref, fresh):
    """(numbers compared, list of differences)."""
    sigmas = {k[2] for k in fresh}
    wanted = sorted(k for k in ref if k[2] in sigmas)
    diffs, n = [], 0
    for key in wanted:
        image, method, sg = key
        if key not in fresh:
            diffs.append(f"image {image}, sigma {sg:g}, {method}: missing from the fresh run")
            continue
        for what, r, f in zip(("PSNR", "SSIM"), ref[key], fresh[key]):
            n += 1
            if r != f:
                diffs.append(f"image {image}, sigma {sg:g}, {method} {what}: page {r}, fresh run {f}")
    extra = sorted(k for k in fresh if k not in ref)
    for image, method, sg in extra:
        diffs.append(f"image {image}, sigma {sg:g}, {method}: not on the reference page")
    return n, diffs


def self_test(ref):
    """A fresh run equal to the page passes; one changed digit and one dropped run fail."""
    same = dict(ref)
    n, diffs = compare(ref, same)
    assert n > 0 and not diffs, diffs
    key = sorted(ref)[0]
    p, s = ref[key]
    changed = dict(ref)
    changed[key] = (p, s[:-1] + ("1" if s[-1] != "1" else "2"))
    _, diffs = compare(ref, changed)
    assert len(diffs) == 1 and "SSIM" in diffs[0], diffs
    dropped = {k: v for k, v in ref.items() if k != key}
    _, diffs = compare(ref, dropped)
    assert len(diffs) == 1 and "missing" in diffs[0], diffs
    print("table-check self-test: a changed digit and a missing run are caught")


def main(argv):
    if len(argv) == 3 and argv[1] == "--self-test":
        self_test(parse_page(open(argv[2], encoding="utf-8").read()))
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    ref = parse_page(open(argv[1], encoding="utf-8").read())
    with open(argv[2], encoding="utf-8") as f:
        fresh = fresh_cells(json.load(f))
    n, diffs = compare(ref, fresh)
    if n == 0 and not diffs:
        print(f"table-check: {argv[2]} has no run to compare", file=sys.stderr)
        return 1
    if diffs:
        print(f"table-check: {len(diffs)} difference(s) from {argv[1]}:", file=sys.stderr)
        for d in diffs:
            print("  " + d, file=sys.stderr)
        return 1
    print(f"table-check: {n} PSNR/SSIM values equal to {argv[1]} to the printed digits")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
