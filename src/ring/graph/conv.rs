//! A graph's convolutions on ring maps as matrix products, for the secure products and the
//! dealer's triples: the sums of [`kern::conv`] and [`kern::conv_transpose`] (exact mod
//! 2^64, so the order of the terms changes no bit), at the blocked kernel's rate instead of
//! a tap-by-tap loop. The oracle keeps the direct kernels, so every secure == oracle test
//! also checks these against them.

use crate::inference::graph::{self as kern, conv_transpose_dims, window_dims, Map};
use crate::model::graph::{ConvOp, Window};
use crate::ring::matmul::gemm_acc;

/// Values of one block of columns or of its product (as the CNN's row blocks): a layer never
/// holds all of its columns at once, nor a second copy of its output.
const BLOCK_VALUES: usize = 1 << 22;

/// Output channels per group below which the direct kernel is faster (a depthwise conv's
/// product would be a 1-row matrix).
const MIN_GEMM_ROWS: usize = 4;

/// `w` (x) `x`, biases zero: [`kern::conv`] or [`kern::conv_transpose`] by `op`.
pub fn conv(op: &ConvOp, w: &[u64], x: &Map<u64>) -> Map<u64> {
    conv_in_blocks(op, w, x, BLOCK_VALUES)
}

fn conv_in_blocks(op: &ConvOp, w: &[u64], x: &Map<u64>, block: usize) -> Map<u64> {
    let cout_g = op.cout / op.groups;
    match (op.transposed, cout_g >= MIN_GEMM_ROWS) {
        (false, true) => forward(op, w, x, block),
        (true, true) => transposed(op, w, x, block),
        (false, false) => kern::conv(op, w, &vec![0; op.cout], x),
        (true, false) => kern::conv_transpose(op, w, &vec![0; op.cout], x),
    }
}

/// Rows of output per block of `per_row` values each.
fn rows_per_block(per_row: usize, rows: usize, block: usize) -> usize {
    (block / per_row.max(1)).clamp(1, rows.max(1))
}

/// A convolution: per group and block of output rows, W_g (cout/g x cin/g*kh*kw) times the
/// block's columns.
fn forward(op: &ConvOp, w: &[u64], x: &Map<u64>, block: usize) -> Map<u64> {
    let win = &op.window;
    let (oh, ow) = window_dims(win, x.h, x.w);
    let (cin_g, cout_g) = (op.cin / op.groups, op.cout / op.groups);
    let fan = cin_g * win.kernel[0] * win.kernel[1];
    let mut out: Map<u64> = Map::zeros(op.cout, oh, ow);
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
            z.resize(cout_g * n, 0);
            gemm_acc(wg, &cols, &mut z, cout_g, fan, n);
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
fn columns(
    x: &Map<u64>,
    win: &Window,
    chans: std::ops::Range<usize>,
    ys: std::ops::Range<usize>,
    ow: usize,
    out: &mut Vec<u64>,
) {
    let [kh, kw] = win.kernel;
    let [s0, s1] = win.stride;
    let [d0, d1] = win.dilation;
    let (top, left) = (win.pads[0] as isize, win.pads[1] as isize);
    let n = ys.len() * ow;
    out.clear();
    out.resize(chans.len() * kh * kw * n, 0);
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
fn transposed(op: &ConvOp, w: &[u64], x: &Map<u64>, block: usize) -> Map<u64> {
    let win = &op.window;
    let [kh, kw] = win.kernel;
    let [s0, s1] = win.stride;
    let [d0, d1] = win.dilation;
    let (top, left) = (win.pads[0] as isize, win.pads[1] as isize);
    let (oh, ow) = conv_transpose_dims(op, x.h, x.w);
    let (cin_g, cout_g) = (op.cin / op.groups, op.cout / op.groups);
    let taps = cout_g * kh * kw;
    let mut out: Map<u64> = Map::zeros(op.cout, oh, ow);
    let rows = rows_per_block((taps + cin_g) * x.w, x.h, block);
    let (mut xs, mut z) = (Vec::new(), Vec::new());
    for g in 0..op.groups {
        // ONNX's layout is cin x cout/g x kh x kw: group g's block, transposed.
        let wg = &w[g * cin_g * taps..(g + 1) * cin_g * taps];
        let wt: Vec<u64> = (0..taps)
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
            z.resize(taps * n, 0);
            gemm_acc(&wt, &xs, &mut z, taps, cin_g, n);
            for (t, zr) in z.chunks_exact(n).enumerate() {
                let (oc, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
                let plane = &mut out.v[(g * cout_g + oc) * oh * ow..][..oh * ow];
                for (yy, zrow) in zr.chunks_exact(x.w).enumerate() {
                    let oy = ((y0 + yy) * s0 + ky * d0) as isize - top;
                    if oy < 0 || oy >= oh as isize {
                        continue;
                    }
                    let dst = &mut plane[oy as usize * ow..][..ow];
                    for (ix, &v) in zrow.iter().enumerate() {
                        let ox = (ix * s1 + kx * d1) as isize - left;
                        if (0..ow as isize).contains(&ox) {
                            let d = &mut dst[ox as usize];
                            *d = d.wrapping_add(v);
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn op(rng: &mut ChaCha8Rng, transposed: bool) -> ConvOp {
        let groups = [1, 1, 2][rng.gen_range(0..3)];
        let cin = groups * rng.gen_range(1..4);
        let cout = groups * [1, 4, 5, 8][rng.gen_range(0..4)];
        let kernel = [rng.gen_range(1..5), rng.gen_range(1..5)];
        let stride = [rng.gen_range(1..4), rng.gen_range(1..4)];
        let dilation = [rng.gen_range(1..3), rng.gen_range(1..3)];
        let pads = [0; 4].map(|_| rng.gen_range(0..3));
        let output_padding = if transposed {
            [0, 1].map(|a| rng.gen_range(0..stride[a].max(dilation[a])))
        } else {
            [0, 0]
        };
        let n = if transposed {
            cin * (cout / groups)
        } else {
            cout * (cin / groups)
        } * kernel[0]
            * kernel[1];
        ConvOp {
            cin,
            cout,
            groups,
            window: Window {
                kernel,
                stride,
                dilation,
                pads,
            },
            output_padding,
            transposed,
            w: vec![0.0; n],
            b: vec![0.0; cout],
        }
    }

    /// Random shapes of every kind (strides, dilations, unequal pads, groups, output
    /// padding), in blocks of a few rows and in one block: the direct kernels' bits.
    #[test]
    fn matrix_products_are_the_direct_kernels_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(47);
        let mut tried = [0; 2];
        for case in 0..400 {
            let transposed = case % 2 == 1;
            let op = op(&mut rng, transposed);
            let (h, w) = (rng.gen_range(1..14), rng.gen_range(1..14));
            let dims = if transposed {
                conv_transpose_dims(&op, h, w)
            } else {
                window_dims(&op.window, h, w)
            };
            if dims.0 == 0 || dims.1 == 0 {
                continue;
            }
            let x = Map {
                c: op.cin,
                h,
                w,
                v: (0..op.cin * h * w).map(|_| rng.gen()).collect(),
            };
            let wts: Vec<u64> = (0..op.w.len()).map(|_| rng.gen()).collect();
            let zero = vec![0; op.cout];
            let want = if transposed {
                kern::conv_transpose(&op, &wts, &zero, &x)
            } else {
                kern::conv(&op, &wts, &zero, &x)
            };
            for block in [1, 37, BLOCK_VALUES] {
                let got = conv_in_blocks(&op, &wts, &x, block);
                assert_eq!(
                    (got.c, got.h, got.w),
                    (want.c, want.h, want.w),
                    "{op:?} on {h}x{w}"
                );
                assert!(got.v == want.v, "{op:?} on {h}x{w}, blocks of {block}");
            }
            tried[transposed as usize] += (op.cout / op.groups >= MIN_GEMM_ROWS) as usize;
        }
        // The matrix paths, not only the direct fallback, were exercised.
        assert!(tried.iter().all(|&t| t > 50), "{tried:?}");
    }
}
