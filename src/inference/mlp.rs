//! Plaintext float inference: the paper's baseline.

use ndarray::{Array2, Axis};
use rayon::prelude::*;

use crate::model::geometry::Geometry;
use crate::model::mlp::{Activation, Model};
use crate::model::preprocess::Preprocess;
use crate::model::tanhstar::TanhStar;

/// Patches processed per matrix product.
const BATCH: usize = 512;
/// Batches computed in parallel before their outputs are summed (about 19 MB of outputs
/// for the shipped model).
const BATCHES_AT_ONCE: usize = 16;

/// Runs the model on a noisy image (0..255 scale, H x W) and returns the denoised image
/// (0..255 scale, not clipped). `activation` overrides the model's own when given.
pub fn denoise_float(
    model: &Model,
    image: &Array2<f64>,
    pre: &Preprocess,
    stride: usize,
    activation: Option<Activation>,
    tanh_star: &TanhStar,
) -> Array2<f64> {
    let (h, w) = image.dim();
    let geo = Geometry::new(h, w, model.patch_shape(), stride);
    let act = activation.unwrap_or(model.meta.activation);
    let norm: Vec<f64> = image.iter().map(|&p| pre.normalize(p)).collect();
    let padded = geo.pad(&norm);
    let centre = geo.centre_indices();
    let nin = geo.patch.input * geo.patch.input;
    let mut sums = vec![0.0f64; geo.canvas_h * geo.canvas_w];
    let weights = geo.patch.window_weights();
    let np = geo.num_patches();
    let last = model.layers.len() - 1;
    // One batch of patches through the network: (hidden output rows x n).
    let forward = |start: usize| {
        let n = BATCH.min(np - start);
        let mut window = vec![0.0f64; nin];
        let mut x = Array2::<f64>::zeros((nin, n));
        for j in 0..n {
            geo.extract(&padded, start + j, &mut window);
            let mut col = x.column_mut(j);
            for (d, &v) in col.iter_mut().zip(&window) {
                *d = v;
            }
        }
        let mut hcur = x.clone();
        if model.meta.mean_shift {
            let mean = hcur.mean_axis(Axis(0)).expect("non-empty patch");
            hcur -= &mean.insert_axis(Axis(0));
        }
        for (i, l) in model.layers.iter().enumerate() {
            let mut z = l.w.dot(&hcur);
            z += &l.b.view().insert_axis(Axis(1));
            if i < last {
                match act {
                    Activation::Tanh => z.mapv_inplace(f64::tanh),
                    Activation::TanhStar => z.mapv_inplace(|v| tanh_star.eval(v)),
                    Activation::Relu => z.mapv_inplace(|v| v.max(0.0)),
                }
            }
            hcur = z;
        }
        if model.meta.residual {
            for (k, &c) in centre.iter().enumerate() {
                let mut row = hcur.row_mut(k);
                row += &x.row(c);
            }
        }
        hcur
    };
    // Batches run in parallel, a few at a time; their outputs are added to the canvas in
    // patch order, so the sums (and the image) are the same to the bit as one batch after
    // the other.
    let starts: Vec<usize> = (0..np).step_by(BATCH).collect();
    for group in starts.chunks(BATCHES_AT_ONCE) {
        let outs: Vec<Array2<f64>> = group.par_iter().map(|&s| forward(s)).collect();
        for (&start, hcur) in group.iter().zip(&outs) {
            for j in 0..hcur.ncols() {
                for (k, idx) in geo.output_indices(start + j).enumerate() {
                    sums[idx] += weights[k] as f64 * hcur[(k, j)];
                }
            }
        }
    }
    let counts = geo.weight_sums();
    let avg: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| pre.denormalize(s / c as f64))
        .collect();
    Array2::from_shape_vec((h, w), geo.crop(&avg)).expect("crop has image size")
}
