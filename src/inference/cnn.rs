//! Float inference of a CNN: the convolution stack in f32 inside its frame, as PyTorch's
//! float forward runs it (the baseline the secure CNN is measured against).

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::inference::par_conv::{by_row_blocks, BLOCK_VALUES};
use crate::model::cnn::{denormalize, normalize, Cnn, Conv};
use crate::model::preprocess::Preprocess;

impl Cnn {
    /// Float inference on a noisy image (0..255, H x W) with its noise map's values
    /// ([`Cnn::noise_map`]); returns the denoised image on the same scale, not clipped.
    /// The convolutions run in f32, as PyTorch's float forward does: twice the multiply-adds
    /// per cycle of f64, and a result within a millionth of a grey level of f64's.
    /// A colour model takes its image's planes stacked, (C*H) x W.
    pub fn denoise_float(&self, image: &Array2<f64>, pre: &Preprocess, map: &[f64]) -> Array2<f64> {
        let (rows, w) = image.dim();
        let (c, h) = (self.colours, rows / self.colours);
        let input: Vec<f64> = image.iter().map(|&p| normalize(pre, p)).collect();
        let stack = self.frame.stack_input_of(c, &input, map, h, w);
        let (sh, sw) = self.frame.stack_dims(h, w);
        let mut x: Vec<f32> = stack.iter().map(|&v| v as f32).collect();
        let mut next = Vec::new();
        let last = self.convs.len() - 1;
        for (l, c) in self.convs.iter().enumerate() {
            conv_float(c, &x, sh, sw, l < last, &mut next);
            std::mem::swap(&mut x, &mut next);
        }
        let mut x: Vec<f64> = x.into_iter().map(f64::from).collect();
        if self.meta.residual {
            x.iter_mut().zip(&stack).for_each(|(n, a)| *n = a - *n);
        }
        let out = self.frame.image_from_stack_of(c, &x, h, w);
        Array2::from_shape_vec(
            (rows, w),
            out.iter().map(|&v| denormalize(pre, v)).collect(),
        )
        .expect("image-sized output")
    }
}

/// One float convolution of a channel-major map into `out`, with ReLU when `relu`: row
/// blocks in parallel, each an f32 product through ndarray (matrixmultiply) on its thread.
/// `out` is the previous layer's buffer, reused: every value is written, and a fresh 64 MB
/// map per layer cost its page faults and zeroing (a tenth of the time).
fn conv_float(c: &Conv, x: &[f32], h: usize, w: usize, relu: bool, out: &mut Vec<f32>) {
    let wf: Vec<f32> = c.w.iter().map(|&v| v as f32).collect();
    let wm = ArrayView2::from_shape((c.cout, c.fan_in()), &wf).expect("validated shape");
    out.resize(c.cout * h * w, 0.0);
    by_row_blocks(x, c.cin, h, w, c.k, out, BLOCK_VALUES, |cols, n, z, dst| {
        let cm = ArrayView2::from_shape((c.fan_in(), n), cols).expect("column block");
        z.resize(c.cout * n, 0.0);
        let mut zm = ArrayViewMut2::from_shape((c.cout, n), &mut z[..]).expect("block product");
        general_mat_mul(1.0, &wm, &cm, 0.0, &mut zm);
        for ((d, zrow), &b) in dst.iter_mut().zip(z.chunks_exact(n)).zip(&c.b) {
            let b = b as f32;
            for (d, &v) in d.iter_mut().zip(zrow) {
                let v = v + b;
                *d = if relu { v.max(0.0) } else { v };
            }
        }
        0
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cnn::{random_cnn, CnnMeta};

    /// The f32 forward, by parallel row blocks (three here), against a direct f64 loop.
    #[test]
    fn float_forward_matches_a_direct_loop() {
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        let m = random_cnn(&[1, 8, 8, 1], 3, 3, meta);
        let (h, w) = (130usize, 64);
        assert!(
            h.div_ceil(crate::inference::im2col::rows_per_block(
                8,
                3,
                w,
                BLOCK_VALUES
            )) >= 3
        );
        let img = Array2::from_shape_fn((h, w), |(y, x)| ((y * 31 + x * 17) % 256) as f64);
        let pre = Preprocess::identity();
        let got = m.denoise_float(&img, &pre, &[]);
        let x: Vec<f64> = img.iter().map(|&p| p / 255.0).collect();
        let conv = |c: &Conv, src: &[f64], relu: bool| {
            let mut out = vec![0.0; c.cout * h * w];
            for o in 0..c.cout {
                for y in 0..h as isize {
                    for xx in 0..w as isize {
                        let mut s = c.b[o];
                        for ci in 0..c.cin {
                            for dy in -1..=1isize {
                                for dx in -1..=1isize {
                                    let (sy, sx) = (y + dy, xx + dx);
                                    if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                        continue;
                                    }
                                    let wi = ((o * c.cin + ci) * 3 + (dy + 1) as usize) * 3
                                        + (dx + 1) as usize;
                                    s += c.w[wi] * src[ci * h * w + sy as usize * w + sx as usize];
                                }
                            }
                        }
                        out[o * h * w + y as usize * w + xx as usize] =
                            if relu { s.max(0.0) } else { s };
                    }
                }
            }
            out
        };
        let mut a = x.clone();
        for (l, c) in m.convs.iter().enumerate() {
            a = conv(c, &a, l + 1 < m.convs.len());
        }
        let mut worst = 0.0f64;
        for (i, g) in got.iter().enumerate() {
            let want = (x[i] - a[i]) * 255.0;
            worst = worst.max((g - want).abs());
        }
        // f32 carries 24 bits: a few millionths of the 0..255 scale after three layers.
        assert!(worst < 1e-3, "largest difference {worst} grey levels");
        assert!(
            worst > 0.0,
            "the forward is expected to run in f32, not f64"
        );
    }
}
