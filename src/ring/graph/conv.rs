//! A graph's convolutions on ring maps as matrix products, for the secure products and the
//! dealer's triples: [`conv_gemm`] with the blocked ring kernel. Its sums are those of
//! [`kern::conv`] and [`kern::conv_transpose`] (exact mod 2^64, so the order of the terms
//! changes no bit), at the kernel's rate instead of a tap-by-tap loop. The oracle keeps the
//! direct kernels, so every secure == oracle test also checks these against them.

use crate::inference::conv_gemm::{self, BLOCK_VALUES};
use crate::inference::graph::Map;
use crate::model::graph::ConvOp;
use crate::ring::matmul::gemm_acc;

/// `w` (x) `x`, biases zero: [`kern::conv`] or [`kern::conv_transpose`] by `op`.
pub fn conv(op: &ConvOp, w: &[u64], x: &Map<u64>) -> Map<u64> {
    conv_in_blocks(op, w, x, BLOCK_VALUES)
}

fn conv_in_blocks(op: &ConvOp, w: &[u64], x: &Map<u64>, block: usize) -> Map<u64> {
    conv_gemm::conv(op, w, x, block, &gemm_acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::conv_gemm::MIN_GEMM_ROWS;
    use crate::inference::graph::{self as kern, conv_transpose_dims, window_dims};
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
