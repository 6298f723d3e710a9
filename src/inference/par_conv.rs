//! A same-padded convolution computed by blocks of output rows, the blocks spread over the
//! threads: the plaintext CNNs (float, and the fixed-point oracle) use it. Each block's
//! im2col columns are small enough to still be in cache when its product packs them;
//! columns for the whole map (9x the map, a gigabyte per DnCNN layer) were written and read
//! back from memory on one thread, a third of the oracle's time.

use rayon::prelude::*;

use crate::inference::im2col::{im2col, rows_per_block};

/// Columns per block, in values: 2 MB of u64 (a 512-pixel row of a 64-channel 3x3 layer),
/// which measured as fast per multiply-add as larger blocks.
pub const BLOCK_VALUES: usize = 1 << 18;

/// Runs `block` on every block of output rows of a k x k convolution of `x` (`cin` x h x w,
/// channel-major) and returns the sum of the counts it returns (the oracle's out-of-range
/// values). `out` is the output map (its
/// channels x h x w); `block(cols, n, scratch, dst)` gets the block's columns (cin*k*k x n,
/// n = its rows x w), a buffer of its own to reuse, and the block's part of each output
/// channel (`dst[o]`, n values), which it fills.
#[allow(clippy::too_many_arguments)]
pub fn by_row_blocks<T>(
    x: &[T],
    cin: usize,
    h: usize,
    w: usize,
    k: usize,
    out: &mut [T],
    target: usize,
    block: impl Fn(&[T], usize, &mut Vec<T>, &mut [&mut [T]]) -> u64 + Sync,
) -> u64
where
    T: Copy + Default + Send + Sync,
{
    let hw = h * w;
    assert_eq!(x.len(), cin * hw, "input map size");
    assert!(hw > 0 && out.len().is_multiple_of(hw), "output map size");
    let rows = rows_per_block(cin, k, w, target);
    // dst[b][o]: block b's rows of output channel o (disjoint slices, so the blocks can be
    // filled in parallel without sharing anything).
    let mut dst: Vec<Vec<&mut [T]>> = (0..h.div_ceil(rows)).map(|_| Vec::new()).collect();
    for plane in out.chunks_mut(hw) {
        for (b, part) in plane.chunks_mut(rows * w).enumerate() {
            dst[b].push(part);
        }
    }
    dst.into_par_iter()
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(cols, scratch), (b, mut d)| {
                let row0 = b * rows;
                let r = rows.min(h - row0);
                im2col(x, cin, h, w, k, row0, r, cols);
                block(cols, r * w, scratch, &mut d)
            },
        )
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of one, two and all rows give what the whole map's columns give, and every
    /// output value is written once.
    #[test]
    fn blocks_cover_the_map_like_one_product() {
        let (cin, cout, h, w, k) = (3, 2, 7, 5, 3);
        let fan = cin * k * k;
        let x: Vec<i64> = (0..(cin * h * w) as i64).map(|v| v * 13 % 17 - 8).collect();
        let wts: Vec<i64> = (0..(cout * fan) as i64).map(|v| v % 7 - 3).collect();
        let mut all = Vec::new();
        im2col(&x, cin, h, w, k, 0, h, &mut all);
        let want: Vec<i64> = (0..cout)
            .flat_map(|o| {
                let (wts, all) = (&wts, &all);
                (0..h * w).map(move |p| {
                    (0..fan)
                        .map(|r| wts[o * fan + r] * all[r * h * w + p])
                        .sum()
                })
            })
            .collect();
        for rows in [1, 2, h] {
            let mut out = vec![i64::MIN; cout * h * w];
            let blocks = by_row_blocks(
                &x,
                cin,
                h,
                w,
                k,
                &mut out,
                fan * w * rows,
                |cols, n, _, dst| {
                    for (o, d) in dst.iter_mut().enumerate() {
                        for (p, v) in d.iter_mut().enumerate() {
                            *v = (0..fan).map(|r| wts[o * fan + r] * cols[r * n + p]).sum();
                        }
                    }
                    1
                },
            );
            assert_eq!(blocks, h.div_ceil(rows) as u64);
            assert_eq!(out, want, "blocks of {rows} rows");
        }
    }
}
