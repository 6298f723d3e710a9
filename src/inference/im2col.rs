//! Convolution as a matrix product: the columns of a same-padded k x k convolution, taken
//! from a channel-major map (channels x height x width, row-major). One function for float
//! inference, the fixed-point oracle, the dealer and the servers' shares alike: it is a
//! public linear map, so the servers apply it to their shares locally.

/// Writes the columns of output rows `row0..row0 + rows` into `out`: a
/// `(c * k * k) x (rows * w)` row-major matrix whose row `(ci, dy, dx)` holds
/// `x[ci][y + dy - k/2][x + dx - k/2]` for every output pixel (y, x), 0 outside the image.
/// Zero padding is public, so it is the same zero in every share.
#[allow(clippy::too_many_arguments)]
pub fn im2col<T: Copy + Default>(
    x: &[T],
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    row0: usize,
    rows: usize,
    out: &mut Vec<T>,
) {
    debug_assert_eq!(x.len(), c * h * w);
    debug_assert!(k % 2 == 1 && row0 + rows <= h);
    let n = rows * w;
    let r = (k / 2) as isize;
    out.clear();
    out.resize(c * k * k * n, T::default());
    for ci in 0..c {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for dy in 0..k {
            for dx in 0..k {
                let orow = &mut out[((ci * k + dy) * k + dx) * n..][..n];
                let ox = dx as isize - r;
                // Output columns whose source column is inside the image.
                let x_lo = (-ox).max(0) as usize;
                let x_hi = (w as isize - ox).clamp(0, w as isize) as usize;
                for yy in 0..rows {
                    let sy = (row0 + yy) as isize + dy as isize - r;
                    if sy < 0 || sy >= h as isize || x_lo >= x_hi {
                        continue;
                    }
                    let src = &plane[sy as usize * w..(sy as usize + 1) * w];
                    let dst = &mut orow[yy * w..(yy + 1) * w];
                    let (s0, s1) = ((x_lo as isize + ox) as usize, (x_hi as isize + ox) as usize);
                    dst[x_lo..x_hi].copy_from_slice(&src[s0..s1]);
                }
            }
        }
    }
}

/// Output rows per block when a convolution is computed block by block: keeps the columns
/// of one block near `target` values (at least one row).
pub fn rows_per_block(c: usize, k: usize, w: usize, target: usize) -> usize {
    (target / (c * k * k * w).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_match_a_direct_correlation() {
        let (c, h, w, k) = (2, 5, 4, 3);
        let x: Vec<i64> = (0..(c * h * w) as i64).map(|v| v * 7 % 11 - 5).collect();
        let wts: Vec<i64> = (0..(c * k * k) as i64).map(|v| v % 5 - 2).collect();
        let get = |ci: usize, y: isize, xx: isize| {
            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                0
            } else {
                x[ci * h * w + y as usize * w + xx as usize]
            }
        };
        for (row0, rows) in [(0, h), (1, 2), (4, 1)] {
            let mut cols = Vec::new();
            im2col(&x, c, h, w, k, row0, rows, &mut cols);
            let n = rows * w;
            for p in 0..n {
                let (y, xx) = ((row0 + p / w) as isize, (p % w) as isize);
                let got: i64 = (0..c * k * k).map(|r| wts[r] * cols[r * n + p]).sum();
                let mut want = 0;
                for ci in 0..c {
                    for dy in 0..k {
                        for dx in 0..k {
                            want += wts[(ci * k + dy) * k + dx]
                                * get(ci, y + dy as isize - 1, xx + dx as isize - 1);
                        }
                    }
                }
                assert_eq!(got, want, "pixel {p} of rows {row0}+{rows}");
            }
        }
    }
}
