//! A graph's convolutions on ring maps as matrix products, for the secure products and the
//! dealer's triples, on the blocked ring kernel. Its sums are those of [`kern::conv`] and
//! [`kern::conv_transpose`] (exact mod 2^64, so the order of the terms changes no bit), at
//! the kernel's rate instead of a tap-by-tap loop. The oracle keeps the direct kernels, so
//! every secure == oracle test also checks these against them.
//!
//! A server's Beaver product is two convolutions, U (x) own + A_i (x) V ([`conv_pair`]): per
//! group, one product of [U_g | A_g] with both maps' columns stacked, the columns packed
//! straight from the maps (`ring::matmul::ConvCols`: no im2col copy), the weights packed
//! once per group rather than per block of rows.
//!
//! [`kern::conv`]: crate::inference::graph::conv
//! [`kern::conv_transpose`]: crate::inference::graph::conv_transpose

use crate::inference::conv_gemm::{scatter_taps, BLOCK_VALUES, MIN_GEMM_ROWS};
use crate::inference::graph::{self as kern, conv_transpose_dims, window_dims, Map};
use crate::model::graph::ConvOp;
use crate::ring::matmul::{ConvCols, PackedA, Rhs};

/// `w` (x) `x`, biases zero: [`kern::conv`] or [`kern::conv_transpose`] by `op`.
pub fn conv(op: &ConvOp, w: &[u64], x: &Map<u64>) -> Map<u64> {
    conv_sum(op, &[w], &[x], BLOCK_VALUES)
}

/// `w[0]` (x) `x[0]` + `w[1]` (x) `x[1]` (wrapping), biases zero, as one matrix product per
/// group and block: a Beaver product's U (x) own + A_i (x) V. The maps have one shape.
pub fn conv_pair(op: &ConvOp, w: [&[u64]; 2], x: [&Map<u64>; 2]) -> Map<u64> {
    conv_sum(op, &w, &x, BLOCK_VALUES)
}

/// The sum over p of `ws[p]` (x) `xs[p]`, in blocks of about `block` values.
fn conv_sum(op: &ConvOp, ws: &[&[u64]], xs: &[&Map<u64>], block: usize) -> Map<u64> {
    assert!(!xs.is_empty() && xs.len() == ws.len());
    assert!(xs
        .iter()
        .all(|x| (x.c, x.h, x.w) == (xs[0].c, xs[0].h, xs[0].w)));
    if op.cout / op.groups < MIN_GEMM_ROWS {
        // A depthwise conv's product would be a 1-row matrix: the direct loops.
        let zero = vec![0; op.cout];
        let direct = |w: &[u64], x: &Map<u64>| match op.transposed {
            false => kern::conv(op, w, &zero, x),
            true => kern::conv_transpose(op, w, &zero, x),
        };
        let mut out = direct(ws[0], xs[0]);
        for (w, x) in ws.iter().zip(xs).skip(1) {
            let more = direct(w, x);
            out.v
                .iter_mut()
                .zip(&more.v)
                .for_each(|(o, m)| *o = o.wrapping_add(*m));
        }
        return out;
    }
    match op.transposed {
        false => forward(op, ws, xs, block),
        true => transposed(op, ws, xs, block),
    }
}

/// Rows of output per block of `per_row` values each.
fn rows_per_block(per_row: usize, rows: usize, block: usize) -> usize {
    (block / per_row.max(1)).clamp(1, rows.max(1))
}

/// A convolution: per group, [W_g of each part] (cout/g x parts * cin/g*kh*kw) packed once,
/// times each block's stacked columns, packed from the maps.
fn forward(op: &ConvOp, ws: &[&[u64]], xs: &[&Map<u64>], block: usize) -> Map<u64> {
    let win = &op.window;
    let x0 = xs[0];
    let (oh, ow) = window_dims(win, x0.h, x0.w);
    let (cin_g, cout_g) = (op.cin / op.groups, op.cout / op.groups);
    let fan = cin_g * win.kernel[0] * win.kernel[1];
    let mut out: Map<u64> = Map::zeros(op.cout, oh, ow);
    // The product of a block stays near `block`; so do its columns when they are made
    // whole (a product of a few rows streams them).
    let rows = rows_per_block((xs.len() * fan).max(cout_g) * ow, oh, block);
    let plane = x0.h * x0.w;
    let mut z = Vec::new();
    for g in 0..op.groups {
        let parts: Vec<&[u64]> = ws
            .iter()
            .map(|w| &w[g * cout_g * fan..][..cout_g * fan])
            .collect();
        let pa = PackedA::new(&parts, cout_g, &vec![fan; parts.len()]);
        let maps: Vec<&[u64]> = xs
            .iter()
            .map(|x| &x.v[g * cin_g * plane..][..cin_g * plane])
            .collect();
        for y0 in (0..oh).step_by(rows) {
            let r = rows.min(oh - y0);
            let cols = ConvCols {
                maps: maps.clone(),
                chans: cin_g,
                h: x0.h,
                w: x0.w,
                kernel: win.kernel,
                stride: win.stride,
                dilation: win.dilation,
                pads: [win.pads[0], win.pads[1]],
                y0,
                rows: r,
                ow,
            };
            let n = r * ow;
            z.clear();
            z.resize(cout_g * n, 0);
            pa.gemm_acc(Rhs::Cols(&cols), &mut z);
            for (o, zr) in z.chunks_exact(n).enumerate() {
                out.v[(g * cout_g + o) * oh * ow + y0 * ow..][..n].copy_from_slice(zr);
            }
        }
    }
    out
}

/// A transposed convolution: per group, [Wᵀ_g of each part] (cout/g*kh*kw x parts * cin/g)
/// packed once, times each block of input rows of every map stacked, each product's row then
/// added where its tap lands.
fn transposed(op: &ConvOp, ws: &[&[u64]], xs: &[&Map<u64>], block: usize) -> Map<u64> {
    let win = &op.window;
    let x0 = xs[0];
    let [kh, kw] = win.kernel;
    let (oh, ow) = conv_transpose_dims(op, x0.h, x0.w);
    let (cin_g, cout_g) = (op.cin / op.groups, op.cout / op.groups);
    let taps = cout_g * kh * kw;
    let mut out: Map<u64> = Map::zeros(op.cout, oh, ow);
    let rows = rows_per_block((taps + xs.len() * cin_g) * x0.w, x0.h, block);
    let mut z = Vec::new();
    for g in 0..op.groups {
        // ONNX's layout is cin x cout/g x kh x kw: group g's block, transposed.
        let wt: Vec<Vec<u64>> = ws
            .iter()
            .map(|w| {
                let wg = &w[g * cin_g * taps..(g + 1) * cin_g * taps];
                (0..taps)
                    .flat_map(|t| (0..cin_g).map(move |ci| wg[ci * taps + t]))
                    .collect()
            })
            .collect();
        let parts: Vec<&[u64]> = wt.iter().map(|w| w.as_slice()).collect();
        let pa = PackedA::new(&parts, taps, &vec![cin_g; parts.len()]);
        for y0 in (0..x0.h).step_by(rows) {
            let r = rows.min(x0.h - y0);
            let n = r * x0.w;
            // Each map's channels of the group, rows y0.., as B's rows (no copy).
            let brows: Vec<&[u64]> = xs
                .iter()
                .flat_map(|x| {
                    (g * cin_g..(g + 1) * cin_g).map(move |c| &x.plane(c)[y0 * x.w..][..n])
                })
                .collect();
            z.clear();
            z.resize(taps * n, 0);
            pa.gemm_acc(Rhs::Rows { parts: &brows, n }, &mut z);
            scatter_taps(op, &mut out, g, &z, x0.w, y0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::Window;
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
                let got = conv_sum(&op, &[&wts], &[&x], block);
                assert_eq!(
                    (got.c, got.h, got.w),
                    (want.c, want.h, want.w),
                    "{op:?} on {h}x{w}"
                );
                assert!(got.v == want.v, "{op:?} on {h}x{w}, blocks of {block}");
            }
            // Two maps and two weights at once (a Beaver product's U own + A_i V): the sum
            // of the two direct kernels.
            let x2 = Map {
                v: (0..x.v.len()).map(|_| rng.gen()).collect(),
                ..x
            };
            let w2: Vec<u64> = (0..wts.len()).map(|_| rng.gen()).collect();
            let want2 = if transposed {
                kern::conv_transpose(&op, &w2, &zero, &x2)
            } else {
                kern::conv(&op, &w2, &zero, &x2)
            };
            let sum: Vec<u64> = want
                .v
                .iter()
                .zip(&want2.v)
                .map(|(a, b)| a.wrapping_add(*b))
                .collect();
            for block in [1, 37, BLOCK_VALUES] {
                let got = conv_sum(&op, &[&wts, &w2], &[&x, &x2], block);
                assert!(
                    got.v == sum,
                    "{op:?} on {h}x{w}, two parts, blocks of {block}"
                );
            }
            assert!(conv_pair(&op, [&wts, &w2], [&x, &x2]).v == sum);
            tried[transposed as usize] += (op.cout / op.groups >= MIN_GEMM_ROWS) as usize;
        }
        // The matrix paths, not only the direct fallback, were exercised.
        assert!(tried.iter().all(|&t| t > 50), "{tried:?}");
    }
}
