//! A graph's convolutions as matrix products, for any element type given its product:
//! im2col at any stride, dilation and pads (a transposed conv: the product, then a col2im
//! scatter), in blocks of output rows. The float path runs it on f64 with ndarray's product;
//! the servers' and the dealer's products on ring elements with the blocked ring kernel
//! (`ring::graph::conv`). The direct loops of [`super::map::conv`] stay the fixed-point
//! oracle's, so every secure == oracle test checks one against the other.

use super::map::{conv_transpose_dims, window_dims, Map, Scalar};
use crate::model::graph::{ConvOp, Window};

/// c += a b, with a: m x k, b: k x n, c: m x n, row-major: (a, b, c, m, k, n).
pub type Gemm<'a, T> = &'a dyn Fn(&[T], &[T], &mut [T], usize, usize, usize);

/// Values of one block of columns or of its product (as the CNN's row blocks): a layer never
/// holds all of its columns at once, nor a second copy of its output.
pub const BLOCK_VALUES: usize = 1 << 22;

/// Output channels per group below which the direct loops are faster (a depthwise conv's
/// product would be a 1-row matrix).
pub const MIN_GEMM_ROWS: usize = 4;

/// `w` (x) `x`, biases zero, in blocks of about `block` values: the direct loops of
/// [`super::map::conv`] and [`super::map::conv_transpose`]'s sums.
pub fn conv<T: Scalar>(op: &ConvOp, w: &[T], x: &Map<T>, block: usize, gemm: Gemm<T>) -> Map<T> {
    let cout_g = op.cout / op.groups;
    let zero = || vec![T::default(); op.cout];
    match (op.transposed, cout_g >= MIN_GEMM_ROWS) {
        (false, true) => forward(op, w, x, block, gemm),
        (true, true) => transposed(op, w, x, block, gemm),
        (false, false) => super::map::conv(op, w, &zero(), x),
        (true, false) => super::map::conv_transpose(op, w, &zero(), x),
    }
}

/// Rows of output per block of `per_row` values each.
fn rows_per_block(per_row: usize, rows: usize, block: usize) -> usize {
    (block / per_row.max(1)).clamp(1, rows.max(1))
}

/// A convolution: per group and block of output rows, W_g (cout/g x cin/g*kh*kw) times the
/// block's columns.
fn forward<T: Scalar>(op: &ConvOp, w: &[T], x: &Map<T>, block: usize, gemm: Gemm<T>) -> Map<T> {
    let win = &op.window;
    let (oh, ow) = window_dims(win, x.h, x.w);
    let (cin_g, cout_g) = (op.cin / op.groups, op.cout / op.groups);
    let fan = cin_g * win.kernel[0] * win.kernel[1];
    let mut out: Map<T> = Map::zeros(op.cout, oh, ow);
    // A block's columns (fan rows) and its product (cout/g rows) both stay near `block`.
    let rows = rows_per_block(fan.max(cout_g) * ow, oh, block);
    let (mut cols, mut z) = (Vec::new(), Vec::new());
    for g in 0..op.groups {
        let wg = &w[g * cout_g * fan..(g + 1) * cout_g * fan];
        for y0 in (0..oh).step_by(rows) {
            let n = rows.min(oh - y0) * ow;
            columns(
                x,
                win,
                g * cin_g..(g + 1) * cin_g,
                y0..y0 + n / ow,
                ow,
                &mut cols,
            );
            z.clear();
            z.resize(cout_g * n, T::default());
            gemm(wg, &cols, &mut z, cout_g, fan, n);
            for (o, zr) in z.chunks_exact(n).enumerate() {
                out.v[(g * cout_g + o) * oh * ow + y0 * ow..][..n].copy_from_slice(zr);
            }
        }
    }
    out
}

/// The columns of output rows `ys` (each `ow` wide) from channels `chans`: row (ci, ky, kx)
/// holds the input each output position's tap reads, 0 where it reads padding (public, so
/// the same zero in every share).
fn columns<T: Scalar>(
    x: &Map<T>,
    win: &Window,
    chans: std::ops::Range<usize>,
    ys: std::ops::Range<usize>,
    ow: usize,
    out: &mut Vec<T>,
) {
    let [kh, kw] = win.kernel;
    let [s0, s1] = win.stride;
    let [d0, d1] = win.dilation;
    let (top, left) = (win.pads[0] as isize, win.pads[1] as isize);
    let n = ys.len() * ow;
    out.clear();
    out.resize(chans.len() * kh * kw * n, T::default());
    for (ci, c) in chans.enumerate() {
        let plane = x.plane(c);
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut out[((ci * kh + ky) * kw + kx) * n..][..n];
                // Input column of output column 0, and the outputs whose input is inside.
                let off = (kx * d1) as isize - left;
                let lo = ((-off).max(0) as usize).div_ceil(s1).min(ow);
                let hi = ((x.w as isize - off).max(0) as usize).div_ceil(s1).min(ow);
                for (yy, y) in ys.clone().enumerate() {
                    let iy = (y * s0 + ky * d0) as isize - top;
                    if iy < 0 || iy >= x.h as isize || lo >= hi {
                        continue;
                    }
                    let src = &plane[iy as usize * x.w..][..x.w];
                    let dst = &mut row[yy * ow..][lo..hi];
                    let first = (lo * s1) as isize + off;
                    if s1 == 1 {
                        dst.copy_from_slice(&src[first as usize..][..hi - lo]);
                    } else {
                        let taps = src[first as usize..].iter().step_by(s1);
                        dst.iter_mut().zip(taps).for_each(|(d, &v)| *d = v);
                    }
                }
            }
        }
    }
}

/// A transposed convolution: per group and block of input rows, Wᵀ_g (cout/g*kh*kw x cin/g)
/// times the block's values, each product's row then added where its tap lands.
fn transposed<T: Scalar>(op: &ConvOp, w: &[T], x: &Map<T>, block: usize, gemm: Gemm<T>) -> Map<T> {
    let win = &op.window;
    let [kh, kw] = win.kernel;
    let (oh, ow) = conv_transpose_dims(op, x.h, x.w);
    let (cin_g, cout_g) = (op.cin / op.groups, op.cout / op.groups);
    let taps = cout_g * kh * kw;
    let mut out: Map<T> = Map::zeros(op.cout, oh, ow);
    let rows = rows_per_block((taps + cin_g) * x.w, x.h, block);
    let (mut xs, mut z) = (Vec::new(), Vec::new());
    for g in 0..op.groups {
        // ONNX's layout is cin x cout/g x kh x kw: group g's block, transposed.
        let wg = &w[g * cin_g * taps..(g + 1) * cin_g * taps];
        let wt: Vec<T> = (0..taps)
            .flat_map(|t| (0..cin_g).map(move |ci| wg[ci * taps + t]))
            .collect();
        for y0 in (0..x.h).step_by(rows) {
            let r = rows.min(x.h - y0);
            let n = r * x.w;
            xs.clear();
            for c in g * cin_g..(g + 1) * cin_g {
                xs.extend_from_slice(&x.plane(c)[y0 * x.w..][..n]);
            }
            z.clear();
            z.resize(taps * n, T::default());
            gemm(&wt, &xs, &mut z, taps, cin_g, n);
            scatter_taps(op, &mut out, g, &z, x.w, y0);
        }
    }
    out
}

/// Adds group `g`'s tap products `z` (cout/g * kh * kw rows, one per output channel and tap,
/// of the input rows y0.. of width `in_w`) where each tap lands in the transposed
/// convolution's output `out`: the scatter after the product, whatever computed it.
pub fn scatter_taps<T: Scalar>(
    op: &ConvOp,
    out: &mut Map<T>,
    g: usize,
    z: &[T],
    in_w: usize,
    y0: usize,
) {
    let win = &op.window;
    let [kh, kw] = win.kernel;
    let [s0, s1] = win.stride;
    let [d0, d1] = win.dilation;
    let (top, left) = (win.pads[0] as isize, win.pads[1] as isize);
    let (oh, ow) = (out.h, out.w);
    let cout_g = op.cout / op.groups;
    let n = z.len() / (cout_g * kh * kw);
    for (t, zr) in z.chunks_exact(n).enumerate() {
        let (oc, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
        let plane = &mut out.v[(g * cout_g + oc) * oh * ow..][..oh * ow];
        for (yy, zrow) in zr.chunks_exact(in_w).enumerate() {
            let oy = ((y0 + yy) * s0 + ky * d0) as isize - top;
            if oy < 0 || oy >= oh as isize {
                continue;
            }
            let dst = &mut plane[oy as usize * ow..][..ow];
            for (ix, &v) in zrow.iter().enumerate() {
                let ox = (ix * s1 + kx * d1) as isize - left;
                if (0..ow as isize).contains(&ox) {
                    let d = &mut dst[ox as usize];
                    *d = d.plus(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_gemm(a: &[f64], b: &[f64], c: &mut [f64], m: usize, k: usize, n: usize) {
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
    }

    /// On f64, plain and transposed, strided, dilated, grouped, unevenly padded, in blocks of
    /// one row and in one block: the direct loops' values up to rounding.
    #[test]
    fn float_products_are_the_direct_loops() {
        let mut tried = 0;
        for (i, &(transposed, groups, k, s, d, pads)) in [
            (false, 1, 3, 1, 1, [1, 1, 1, 1]),
            (false, 2, 3, 2, 1, [0, 1, 2, 0]),
            (false, 1, 2, 1, 2, [1, 0, 0, 1]),
            (true, 1, 2, 2, 1, [0, 0, 0, 0]),
            (true, 2, 3, 2, 1, [1, 0, 0, 1]),
            (true, 1, 4, 3, 2, [2, 1, 0, 0]),
        ]
        .iter()
        .enumerate()
        {
            let (cin, cout) = (2 * groups, 4 * groups);
            let n = cin * cout / groups * k * k;
            let op = ConvOp {
                cin,
                cout,
                groups,
                window: Window {
                    kernel: [k, k],
                    stride: [s, s],
                    dilation: [d, d],
                    pads,
                },
                output_padding: [0, 0],
                transposed,
                w: (0..n)
                    .map(|j| ((j * 37 + i) % 11) as f64 / 7.0 - 0.7)
                    .collect(),
                b: vec![0.0; cout],
            };
            let x = Map {
                c: cin,
                h: 9,
                w: 7,
                v: (0..cin * 63)
                    .map(|j| ((j * 13) % 17) as f64 / 5.0 - 1.5)
                    .collect(),
            };
            let want = if transposed {
                super::super::map::conv_transpose(&op, &op.w, &op.b, &x)
            } else {
                super::super::map::conv(&op, &op.w, &op.b, &x)
            };
            for block in [1, BLOCK_VALUES] {
                let got = conv(&op, &op.w, &x, block, &f64_gemm);
                assert_eq!((got.c, got.h, got.w), (want.c, want.h, want.w));
                let worst = got
                    .v
                    .iter()
                    .zip(&want.v)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 1e-12, "{op:?}: {worst}");
            }
            tried += 1;
        }
        assert_eq!(tried, 6);
    }
}
