//! The plaintext fixed-point oracle: computes, in the clear, exactly the integers the secure
//! protocol computes (same encodings, same truncation rule, same activation algebra).

use ndarray::Array2;
use rayon::prelude::*;

use crate::circuit::activation::ActConsts;
use crate::model::geometry::Geometry;
use crate::model::preprocess::Preprocess;
use crate::ring::fixed::{bits_signed, decode, encode, low_bits, out_of_range, relu_trunc};
use crate::ring::matmul::gemm_acc_serial;
use crate::ring::plan::{Hidden, Plan};

/// What the activation circuit reveals, as boolean-shared bits, about one pre-activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The low L bits (L = bit length of b) of |x|', the one's-complement magnitude
    /// (x for x >= 0, -x-1 below); equal to |x|' wherever it matters (|x|' <= b).
    pub tc: u64,
    /// |x|' <= a.
    pub r1: bool,
    /// a < |x|' <= b.
    pub r2: bool,
    pub s1: bool,
    pub s2: bool,
    /// x < 0.
    pub sgn: bool,
}

/// The activation circuit's function on the reconstructed pre-activation `v` (a ring value
/// at the product scale): exact floor truncation by `sh`, then comparisons and clipping.
pub fn select(c: &ActConsts, v: u64) -> Selection {
    let x = bits_signed(low_bits(v, c.sh + c.k), c.sh, c.k);
    let sgn = (x as i64) < 0;
    let t = low_bits(if sgn { !x } else { x }, c.k - 1);
    let r1 = t <= c.a_fix;
    let r2full = t <= c.b_fix;
    let r2 = r2full && !r1;
    Selection {
        // Outside [0, b] both g1 and g2 vanish, so tc need not be clipped: low bits suffice.
        tc: low_bits(t, c.tc_bits()),
        r1,
        r2,
        s1: r1 && sgn,
        s2: r2 && sgn,
        sgn,
    }
}

/// Signed region indicators g_i = ind_i (1 - 2 sgn) in the ring, from the arithmetic bits.
/// The secure protocol applies this same linear map to arithmetic shares of the bits.
pub fn signed_indicators(r1: u64, r2: u64, s1: u64, s2: u64, sgn: u64, party_one: u64) -> [u64; 3] {
    let g1 = r1.wrapping_sub(s1.wrapping_mul(2));
    let g2 = r2.wrapping_sub(s2.wrapping_mul(2));
    // region 3: ind3 = 1 - r1 - r2, ind3 & sgn = sgn - s1 - s2.
    let ind3 = party_one.wrapping_sub(r1).wrapping_sub(r2);
    let ind3s = sgn.wrapping_sub(s1).wrapping_sub(s2);
    [g1, g2, ind3.wrapping_sub(ind3s.wrapping_mul(2))]
}

/// The polynomial pieces p_i = N_i tc^2 + C_i tc + D_i (D added by one party only).
pub fn pieces(c: &ActConsts, tc: u64, tc2: u64, party_one: u64) -> [u64; 2] {
    let p = |i: usize| {
        c.n[i]
            .wrapping_mul(tc2)
            .wrapping_add(c.c[i].wrapping_mul(tc))
            .wrapping_add(c.d[i].wrapping_mul(party_one))
    };
    [p(0), p(1)]
}

/// tanh* in fixed point: y = g1 p1 + g2 p2 + g3 K, at scale F = 2q + cs.
pub fn activation(c: &ActConsts, v: u64) -> u64 {
    let sel = select(c, v);
    let b = |x: bool| x as u64;
    let g = signed_indicators(b(sel.r1), b(sel.r2), b(sel.s1), b(sel.s2), b(sel.sgn), 1);
    let p = pieces(c, sel.tc, sel.tc.wrapping_mul(sel.tc), 1);
    g[0].wrapping_mul(p[0])
        .wrapping_add(g[1].wrapping_mul(p[1]))
        .wrapping_add(g[2].wrapping_mul(c.sat))
}

/// Hidden layer `li`'s activation of the pre-activation `v` as the protocol computes it, and
/// whether its truncation fell outside the circuit's signed range.
pub fn hidden_activation(plan: &Plan, li: usize, v: u64) -> (u64, bool) {
    match plan.hidden {
        Hidden::TanhStar => {
            let c = &plan.acts[li];
            (activation(c, v), out_of_range(c.sh, c.k, v))
        }
        Hidden::Relu => {
            let t = plan.params.relu_trunc();
            (relu_trunc(t.sh, t.k, v), out_of_range(t.sh, t.k, v))
        }
    }
}

/// Encodes a 0..255 image (row-major) as the gateway does: normalise, then scale s.
pub fn encode_image(image: &Array2<f64>, pre: &Preprocess, s: u32) -> Vec<u64> {
    image.iter().map(|&p| encode(pre.normalize(p), s)).collect()
}

/// Batches computed in parallel before their outputs are added to the canvas.
const BATCHES_AT_ONCE: usize = 16;

/// Result of an oracle run: the output canvas sums (what the servers' shares add up to)
/// and diagnostics.
pub struct OracleRun {
    pub canvas: Vec<u64>,
    /// Pre-activations whose truncated value fell outside the circuit's signed range.
    pub out_of_range: u64,
}

/// Runs the plan on an encoded image (row-major, image-sized, scale s).
pub fn run(plan: &Plan, geo: &Geometry, input: &[u64], batch: usize) -> OracleRun {
    let batch = batch.max(1);
    let padded = geo.pad(input);
    let nin = plan.layers[0].inputs;
    let centre = geo.centre_indices();
    let mut canvas = vec![0u64; geo.canvas_h * geo.canvas_w];
    let weights = geo.patch.window_weights();
    let mut out_of_range = 0u64;
    let np = geo.num_patches();
    let last = plan.layers.len() - 1;
    // One batch of patches through the plan: (outputs x n, out-of-range count).
    let forward = |start: usize| {
        let n = batch.min(np - start);
        let mut window = vec![0u64; nin];
        // X: inputs x n, column j = patch start + j.
        let mut x = vec![0u64; nin * n];
        for j in 0..n {
            geo.extract(&padded, start + j, &mut window);
            for (r, &v) in window.iter().enumerate() {
                x[r * n + j] = v;
            }
        }
        let input_x = x.clone();
        let mut out_of_range = 0u64;
        for (li, l) in plan.layers.iter().enumerate() {
            let mut z: Vec<u64> =
                l.b.iter()
                    .flat_map(|&b| std::iter::repeat_n(b, n))
                    .collect();
            gemm_acc_serial(&l.w, &x, &mut z, l.outputs, l.inputs, n);
            if li < last {
                for v in z.iter_mut() {
                    let (y, out) = hidden_activation(plan, li, *v);
                    out_of_range += out as u64;
                    *v = y;
                }
            } else if plan.residual {
                let shift = l.prod_scale - plan.params.s;
                for (r, &ci) in centre.iter().enumerate() {
                    for j in 0..n {
                        let add = input_x[ci * n + j] << shift;
                        z[r * n + j] = z[r * n + j].wrapping_add(add);
                    }
                }
            }
            x = z;
        }
        (x, out_of_range)
    };
    // Batches in parallel, a few at a time, each product on its own thread; the canvas sums
    // wrap, so their order does not matter, but they are added in patch order all the same.
    let starts: Vec<usize> = (0..np).step_by(batch).collect();
    for group in starts.chunks(BATCHES_AT_ONCE) {
        let outs: Vec<(Vec<u64>, u64)> = group.par_iter().map(|&s| forward(s)).collect();
        for (&start, (x, oor)) in group.iter().zip(&outs) {
            let n = batch.min(np - start);
            out_of_range += oor;
            for j in 0..n {
                for (r, idx) in geo.output_indices(start + j).enumerate() {
                    canvas[idx] = canvas[idx].wrapping_add(x[r * n + j].wrapping_mul(weights[r]));
                }
            }
        }
    }
    OracleRun {
        canvas,
        out_of_range,
    }
}

/// The whole plaintext fixed-point pipeline on an image (0..255 scale): encode, every patch
/// through the plan, aggregate, decode. Returns the decoded image and how many
/// pre-activations fell outside the circuit's range (see [`OracleRun`]).
pub fn denoise(
    plan: &Plan,
    image: &Array2<f64>,
    pre: &Preprocess,
    stride: usize,
) -> (Array2<f64>, u64) {
    let (h, w) = image.dim();
    let geo = Geometry::new(h, w, plan.patch, stride);
    let r = run(plan, &geo, &encode_image(image, pre, plan.params.s), 256);
    (
        decode_canvas(&r.canvas, &geo, pre, plan.out_scale),
        r.out_of_range,
    )
}

/// The receiver's step: weighted canvas sums (at `scale`, the plan's `out_scale`) ->
/// averaged, denormalised, cropped image.
pub fn decode_canvas(canvas: &[u64], geo: &Geometry, pre: &Preprocess, scale: u32) -> Array2<f64> {
    let counts = geo.weight_sums();
    let avg: Vec<f64> = canvas
        .iter()
        .zip(&counts)
        .map(|(&v, &c)| pre.denormalize(decode(v, scale) / c as f64))
        .collect();
    Array2::from_shape_vec((geo.height, geo.width), geo.crop(&avg)).expect("crop has image size")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mlp::{random_model, ModelMeta};
    use crate::ring::matmul::gemm;
    use crate::ring::plan::FixedParams;

    /// The oracle one batch after the other, product then bias: what [`run`] computed before
    /// its batches ran in parallel.
    fn run_serially(plan: &Plan, geo: &Geometry, input: &[u64], batch: usize) -> OracleRun {
        let padded = geo.pad(input);
        let nin = plan.layers[0].inputs;
        let centre = geo.centre_indices();
        let mut canvas = vec![0u64; geo.canvas_h * geo.canvas_w];
        let weights = geo.patch.window_weights();
        let mut out_of_range = 0u64;
        let np = geo.num_patches();
        let mut window = vec![0u64; nin];
        for start in (0..np).step_by(batch) {
            let n = batch.min(np - start);
            let mut x = vec![0u64; nin * n];
            for j in 0..n {
                geo.extract(&padded, start + j, &mut window);
                for (r, &v) in window.iter().enumerate() {
                    x[r * n + j] = v;
                }
            }
            let input_x = x.clone();
            let last = plan.layers.len() - 1;
            for (li, l) in plan.layers.iter().enumerate() {
                let mut z = gemm(&l.w, &x, l.outputs, l.inputs, n);
                for (r, row) in z.chunks_mut(n).enumerate() {
                    for v in row {
                        *v = v.wrapping_add(l.b[r]);
                    }
                }
                if li < last {
                    for v in z.iter_mut() {
                        let (y, out) = hidden_activation(plan, li, *v);
                        out_of_range += out as u64;
                        *v = y;
                    }
                } else if plan.residual {
                    let shift = l.prod_scale - plan.params.s;
                    for (r, &ci) in centre.iter().enumerate() {
                        for j in 0..n {
                            z[r * n + j] = z[r * n + j].wrapping_add(input_x[ci * n + j] << shift);
                        }
                    }
                }
                x = z;
            }
            for j in 0..n {
                for (r, idx) in geo.output_indices(start + j).enumerate() {
                    canvas[idx] = canvas[idx].wrapping_add(x[r * n + j].wrapping_mul(weights[r]));
                }
            }
        }
        OracleRun {
            canvas,
            out_of_range,
        }
    }

    /// Parallel batches give the serial oracle's canvas and out-of-range count bit for bit,
    /// for batches of one patch, an odd size and more than all patches; weights scaled up
    /// put some pre-activations out of range.
    #[test]
    fn parallel_batches_equal_the_serial_oracle() {
        let meta = ModelMeta {
            residual: true,
            ..ModelMeta::default()
        };
        for scale in [1.0, 2000.0] {
            let mut model = random_model(&[49, 8, 9], 3, meta.clone());
            model.layers[0].w.mapv_inplace(|v| v * scale);
            let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
            let (h, w) = (23, 17);
            let img = Array2::from_shape_fn((h, w), |(y, x)| ((y * 41 + x * 23) % 256) as f64);
            let geo = Geometry::new(h, w, model.patch_shape(), 2);
            let input = encode_image(&img, &Preprocess::identity(), plan.params.s);
            let want = run_serially(&plan, &geo, &input, 64);
            assert_eq!(want.out_of_range > 0, scale > 1.0);
            for batch in [1, 37, 10_000] {
                let got = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap()
                    .install(|| run(&plan, &geo, &input, batch));
                assert_eq!(got.canvas, want.canvas, "batch {batch}, scale {scale}");
                assert_eq!(got.out_of_range, want.out_of_range, "batch {batch}");
            }
        }
    }
}
