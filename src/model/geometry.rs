//! Patch geometry: mirror padding so that every pixel of any image size is covered by the
//! 17x17 outputs of 39x39 windows at the chosen stride, and averaging of overlaps.
//!
//! The canvas is the image extended at the bottom/right so that output windows tile it
//! exactly at the stride; the padded input adds the model's margin on every side. Padding is
//! a public index map, so servers apply it to their shares locally.

use serde::{Deserialize, Serialize};

use crate::model::mlp::PatchShape;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub height: usize,
    pub width: usize,
    pub patch: PatchShape,
    pub stride: usize,
    /// Canvas size (>= image size), tiled exactly by output windows.
    pub canvas_h: usize,
    pub canvas_w: usize,
    /// Patch grid.
    pub rows: usize,
    pub cols: usize,
}

fn extend(n: usize, out: usize, stride: usize) -> usize {
    let c = n.max(out);
    c + (stride - (c - out) % stride) % stride
}

/// numpy 'symmetric' padding (c b a | a b c d | d c b) for any offset: the edge sample is
/// repeated, as in the training pipeline's evaluation and MATLAB's padarray 'symmetric'.
pub fn mirror(i: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - 1 - m }) as usize
}

impl Geometry {
    pub fn new(height: usize, width: usize, patch: PatchShape, stride: usize) -> Geometry {
        assert!(stride >= 1 && height >= 1 && width >= 1);
        let canvas_h = extend(height, patch.output, stride);
        let canvas_w = extend(width, patch.output, stride);
        Geometry {
            height,
            width,
            patch,
            stride,
            canvas_h,
            canvas_w,
            rows: (canvas_h - patch.output) / stride + 1,
            cols: (canvas_w - patch.output) / stride + 1,
        }
    }

    pub fn num_patches(&self) -> usize {
        self.rows * self.cols
    }

    pub fn padded_h(&self) -> usize {
        self.canvas_h + 2 * self.patch.margin()
    }

    pub fn padded_w(&self) -> usize {
        self.canvas_w + 2 * self.patch.margin()
    }

    /// For every padded pixel (row-major), the source pixel index in the image (row-major).
    pub fn padding_map(&self) -> Vec<u32> {
        let m = self.patch.margin() as isize;
        let mut v = Vec::with_capacity(self.padded_h() * self.padded_w());
        for i in 0..self.padded_h() {
            let si = mirror(i as isize - m, self.height);
            for j in 0..self.padded_w() {
                let sj = mirror(j as isize - m, self.width);
                v.push((si * self.width + sj) as u32);
            }
        }
        v
    }

    /// Applies the padding map to a row-major image-sized vector.
    pub fn pad<T: Copy>(&self, image: &[T]) -> Vec<T> {
        assert_eq!(image.len(), self.height * self.width);
        self.padding_map()
            .into_iter()
            .map(|s| image[s as usize])
            .collect()
    }

    /// Top-left corner of patch `p` (in padded-input and in canvas coordinates alike).
    pub fn patch_origin(&self, p: usize) -> (usize, usize) {
        (p / self.cols * self.stride, p % self.cols * self.stride)
    }

    /// Writes the input window of patch `p` from the padded image into `out` (row-major).
    pub fn extract<T: Copy>(&self, padded: &[T], p: usize, out: &mut [T]) {
        let (r0, c0) = self.patch_origin(p);
        let n = self.patch.input;
        let pw = self.padded_w();
        for a in 0..n {
            let row = (r0 + a) * pw + c0;
            out[a * n..(a + 1) * n].copy_from_slice(&padded[row..row + n]);
        }
    }

    /// Canvas indices (row-major) covered by the output of patch `p`, in output order.
    pub fn output_indices(&self, p: usize) -> impl Iterator<Item = usize> + '_ {
        let (r0, c0) = self.patch_origin(p);
        let n = self.patch.output;
        (0..n * n).map(move |k| (r0 + k / n) * self.canvas_w + c0 + k % n)
    }

    /// How many patch outputs cover each canvas pixel.
    pub fn counts(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.canvas_h * self.canvas_w];
        for p in 0..self.num_patches() {
            for i in self.output_indices(p) {
                c[i] += 1;
            }
        }
        c
    }

    /// Sum of the aggregation weights of the outputs covering each canvas pixel: what the
    /// weighted canvas sums are divided by.
    pub fn weight_sums(&self) -> Vec<u64> {
        let w = self.patch.window_weights();
        let mut c = vec![0u64; self.canvas_h * self.canvas_w];
        for p in 0..self.num_patches() {
            for (k, i) in self.output_indices(p).enumerate() {
                c[i] += w[k];
            }
        }
        c
    }

    /// Crops a canvas-sized row-major vector to the image.
    pub fn crop<T: Copy>(&self, canvas: &[T]) -> Vec<T> {
        let mut v = Vec::with_capacity(self.height * self.width);
        for i in 0..self.height {
            v.extend_from_slice(&canvas[i * self.canvas_w..i * self.canvas_w + self.width]);
        }
        v
    }

    /// Indices of the output-sized centre inside an input window (row-major).
    pub fn centre_indices(&self) -> Vec<usize> {
        let (n, o, m) = (self.patch.input, self.patch.output, self.patch.margin());
        (0..o * o).map(|k| (m + k / o) * n + m + k % o).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_numpy_symmetric() {
        let n = 4;
        let got: Vec<usize> = (-5..9).map(|i| mirror(i, n)).collect();
        assert_eq!(got, vec![3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]);
        assert_eq!(mirror(-3, 1), 0);
    }

    #[test]
    fn every_pixel_is_covered() {
        let ps = PatchShape {
            input: 39,
            output: 17,
            window_milli: 0,
        };
        for &(h, w) in &[(97, 131), (17, 17), (5, 3), (512, 512), (18, 40)] {
            let g = Geometry::new(h, w, ps, 3);
            let c = g.counts();
            let crop = g.crop(&c);
            assert!(crop.iter().all(|&k| k >= 1), "{h}x{w}");
            assert_eq!((g.canvas_h - 17) % 3, 0);
        }
        assert_eq!(Geometry::new(512, 512, ps, 3).num_patches(), 166 * 166);
    }

    #[test]
    fn gaussian_window_weights() {
        let ps = PatchShape {
            input: 39,
            output: 17,
            window_milli: 4000,
        };
        let w = ps.window_weights();
        assert_eq!(w.len(), 289);
        // Centre 32, symmetric, every position at least 1 (so every canvas pixel is covered).
        assert_eq!(w[8 * 17 + 8], 32);
        assert_eq!(
            &w[8 * 17..9 * 17],
            &[4, 7, 10, 15, 19, 24, 28, 31, 32, 31, 28, 24, 19, 15, 10, 7, 4]
        );
        assert!(w.iter().all(|&v| v >= 1));
        for k in 0..289 {
            assert_eq!(w[k], w[288 - k]);
            assert_eq!(w[k], w[(k % 17) * 17 + k / 17]);
        }
        assert_eq!(w.iter().sum::<u64>(), 2988);
        let uniform = PatchShape {
            window_milli: 0,
            ..ps
        };
        assert!(uniform.window_weights().iter().all(|&v| v == 1));
        // Weight sums: plain averaging gives the counts; Gaussian sums are positive.
        let g = Geometry::new(40, 23, uniform, 3);
        let counts: Vec<u64> = g.counts().iter().map(|&c| c as u64).collect();
        assert_eq!(g.weight_sums(), counts);
        let g = Geometry::new(40, 23, ps, 3);
        assert!(g.weight_sums().iter().all(|&s| s >= 1));
    }
}
