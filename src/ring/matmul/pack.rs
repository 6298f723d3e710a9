//! Packing: copies of blocks of A laid out in the order the micro-kernel reads them,
//! so that its loads are contiguous and the block stays in cache.
//!
//! For a k-block (rows k0..k0 + kc of B, columns k0..k0 + kc of A):
//! - an A panel is MR rows: value (i, k0 + t) at t * MR + i;
//! - a B panel is NR columns: value (k0 + t, j) at t * NR + j.
//!
//! Rows and columns past the matrix's edge are zeros, so a kernel can always read whole panels.
//! B's panels are packed by `cols::Rhs::pack` (row-major values or a convolution's columns).

use std::ops::Range;

/// Packs rows `rows` of a (m x k, row-major), columns `ks`, into consecutive MR-row panels
/// in `dst` (length ceil(rows / mr) * mr * kc).
pub(super) fn pack_a(
    mr: usize,
    a: &[u64],
    k: usize,
    ks: Range<usize>,
    rows: Range<usize>,
    dst: &mut [u64],
) {
    // A constant panel size in each arm, once inlined, turns the loops into fixed moves.
    match mr {
        8 => pack_a_const::<8>(a, k, ks, rows, dst),
        4 => pack_a_const::<4>(a, k, ks, rows, dst),
        _ => pack_a_body(mr, a, k, ks, rows, dst),
    }
}

/// Whole panels read their MR rows side by side and write each step's MR values at once
/// (MR sequential reads, one sequential write; writing a row at a time, stride MR, took a
/// tenth of an MLP product's time); a ragged last panel goes the general way.
fn pack_a_const<const MR: usize>(
    a: &[u64],
    k: usize,
    ks: Range<usize>,
    rows: Range<usize>,
    dst: &mut [u64],
) {
    let kc = ks.len();
    let full = rows.len() / MR;
    let (whole, rest) = dst.split_at_mut(full * MR * kc);
    for (p, panel) in whole.chunks_exact_mut(MR * kc).enumerate() {
        let r0 = rows.start + p * MR;
        let src: [&[u64]; MR] = std::array::from_fn(|i| &a[(r0 + i) * k + ks.start..][..kc]);
        for (t, d) in panel.chunks_exact_mut(MR).enumerate() {
            for i in 0..MR {
                d[i] = src[i][t];
            }
        }
    }
    if !rest.is_empty() {
        pack_a_body(MR, a, k, ks, rows.start + full * MR..rows.end, rest);
    }
}

#[inline(always)]
fn pack_a_body(
    mr: usize,
    a: &[u64],
    k: usize,
    ks: Range<usize>,
    rows: Range<usize>,
    dst: &mut [u64],
) {
    let kc = ks.len();
    debug_assert_eq!(dst.len(), rows.len().div_ceil(mr) * mr * kc);
    for (p, panel) in dst.chunks_exact_mut(mr * kc).enumerate() {
        for i in 0..mr {
            let r = rows.start + p * mr + i;
            if r < rows.end {
                let src = &a[r * k + ks.start..][..kc];
                for (t, &v) in src.iter().enumerate() {
                    panel[t * mr + i] = v;
                }
            } else {
                for t in 0..kc {
                    panel[t * mr + i] = 0;
                }
            }
        }
    }
}
