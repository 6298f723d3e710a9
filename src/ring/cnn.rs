//! The fixed-point settings of a CNN (`CnnFixed`, a graph's too) and a chain CNN's plan and
//! plaintext oracle: exactly the integers the secure job computes on the chain's graph
//! (`Graph::from_cnn`; tests hold the two to the same bits), kept as the reference of
//! `denoise --arith fixed` and of the tests.
//!
//! Scales: input pixels and hidden activations at `s`; weights at `ws`; a layer's products
//! and biases at `s + ws`. A hidden layer's activation is max(0, floor(z / 2^ws)) of its
//! pre-activation z, kept in `k` signed bits (an exact truncation, folded into the ReLU
//! circuit). The last layer is not truncated: with `residual` the output is
//! `input * 2^ws - z`, at scale `s + ws`, which the receiver decodes.
//!
//! A job's input is the encoded image followed by its noise map's values (FFDNet); the
//! plan's frame turns it into the stack's input and the stack's output into the image
//! ([`crate::model::frame`]).

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::inference::par_conv::{by_row_blocks, BLOCK_VALUES};
use crate::model::cnn::{
    self, describe_colour_frame, Cnn, MAX_CHANNELS, MAX_CONV_LAYERS, MAX_KERNEL,
};
use crate::model::frame::Frame;
use crate::model::preprocess::Preprocess;
use crate::ring::fixed::{decode, encode};
use crate::ring::matmul::gemm_acc_serial;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnFixed {
    /// Fractional bits of the input and of hidden activations.
    pub s: u32,
    /// Fractional bits of the weights (the bits each ReLU circuit drops).
    pub ws: u32,
    /// Signed bits of a truncated pre-activation: |floor(z / 2^ws)| < 2^(k-1).
    pub k: u32,
}

impl Default for CnnFixed {
    fn default() -> Self {
        // DnCNN-S sigma 15/25/50 on set12 (docs/cnn.md): ws = 10 loses up to 0.13 dB at
        // sigma 50, ws = 13 stays within 0.006 dB of float; s = 10 is enough. Activations
        // stayed below 2^3 everywhere, k = 18 leaves 2^7 (at scale s, 2^13 < 2^17).
        // Every bit of ws costs one AND per ReLU, every bit of k two.
        CnnFixed {
            s: 10,
            ws: 13,
            k: 18,
        }
    }
}

/// The least signed range of a CNN's output, in bits at its real scale: ±32, where the
/// activations' range ±2^(k - 1 - s) is narrower (k - 1 - s < 5), else that range. A model
/// with a noise map takes every image at about 0..1 (pixels / 255, a DICOM slice clipped to
/// its window), so its output lies near 0..1; ±32 is FFDNet's own activations' range (k =
/// 19, s = 13), so its output is read at every hidden map's width. A model scaled by
/// sigma*/sigma (DnCNN) takes larger inputs, bounded by the owner's sweep, which counts an
/// output outside the range as it counts a hidden value (a graph has no sweep: only
/// `denoise --arith fixed` counts its wraps). ±512 until wire revision 5.
pub const OUT_RANGE_BITS: u32 = 6;

impl CnnFixed {
    /// The settings a model's file recommends (measured for it), else the defaults.
    pub fn for_model(model: &Cnn) -> CnnFixed {
        match model.fixed_point {
            Some([s, ws, k]) => CnnFixed { s, ws, k },
            None => CnnFixed::default(),
        }
    }

    /// The settings a CNN graph's file recommends, else the defaults (what `share-model`
    /// shares it at when no setting is given).
    pub fn for_graph(g: &crate::model::graph::Graph) -> CnnFixed {
        match g.fixed_point {
            Some([s, ws, k]) => CnnFixed { s, ws, k },
            None => CnnFixed::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        crate::model::cnn::check_fixed_point(self.s, self.ws, self.k)
    }

    /// Bits of the output the receiver reads: the network's output (at scale s + ws) is
    /// held mod 2^out_bits, at least the activations' range ±2^(k - 1 - s) and at least
    /// ±2^(OUT_RANGE_BITS - 1) (an image's values are about 0..1 at this scale), so that
    /// the last layer's input is opened at about the width of every other layer's, not at
    /// 64 (docs/protocol.md, "Ring width"). The oracle counts an output outside it as out
    /// of range, as it counts a hidden value outside k bits.
    pub fn out_bits(&self) -> u32 {
        self.out_bits_at(self.s + self.ws)
    }

    /// [`Self::out_bits`] of an output at scale `scale` (a graph's may end at s or s + ws):
    /// its fractional bits and the range's.
    pub fn out_bits_at(&self, scale: u32) -> u32 {
        (scale + self.k.saturating_sub(self.s).max(OUT_RANGE_BITS)).min(64)
    }

    /// How far the output is shifted left so that its out_bits fill the 64-bit word: the
    /// receiver adds the two shares and reads a signed value, with no sign extension of its
    /// own, and the bits above out_bits, which the shares do not agree on, are gone.
    pub fn out_shift(&self) -> u32 {
        64 - self.out_bits()
    }

    /// Scale of the output values (the canvas the receiver decodes): s + ws, shifted.
    pub fn out_scale(&self) -> u32 {
        self.s + self.ws + self.out_shift()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CnnLayer {
    pub cin: usize,
    pub cout: usize,
    pub ksize: usize,
    /// cout x (cin * ksize^2), row-major, at scale ws (empty in a public plan).
    pub w: Vec<u64>,
    /// At scale s + ws (empty in a public plan).
    pub b: Vec<u64>,
}

impl CnnLayer {
    pub fn fan_in(&self) -> usize {
        self.cin * self.ksize * self.ksize
    }

    pub fn weight_count(&self) -> usize {
        self.cout * self.fan_in()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CnnPlan {
    pub params: CnnFixed,
    pub layers: Vec<CnnLayer>,
    /// clean = input - net(input).
    pub residual: bool,
    /// Sub-images and noise map around the stack (absent in plans written before FFDNet:
    /// the identity).
    #[serde(default)]
    pub frame: Frame,
}

impl CnnPlan {
    pub fn from_cnn(model: &Cnn, params: CnnFixed) -> Result<CnnPlan, String> {
        params.validate()?;
        let ps = params.s + params.ws;
        let layers = model
            .convs
            .iter()
            .map(|c| CnnLayer {
                cin: c.cin,
                cout: c.cout,
                ksize: c.k,
                w: c.w.iter().map(|&v| encode(v, params.ws)).collect(),
                b: c.b.iter().map(|&v| encode(v, ps)).collect(),
            })
            .collect();
        let plan = CnnPlan {
            params,
            layers,
            residual: model.meta.residual,
            frame: model.frame,
        };
        plan.check_shape()?;
        if plan.colours() != model.colours {
            return Err(format!(
                "a model of {} colour plane(s) whose layers map {} planes",
                model.colours,
                plan.colours()
            ));
        }
        Ok(plan)
    }

    /// Colour planes of the images it takes (1 gray, 3 RGB): what its last layer gives, r*r
    /// sub-images per plane. Implied by the shapes (`check_shape` holds the first layer to it).
    pub fn colours(&self) -> usize {
        self.layers
            .last()
            .map_or(1, |l| l.cout / self.frame.out_channels(1).max(1))
            .max(1)
    }

    fn check_shape(&self) -> Result<(), String> {
        let nl = self.layers.len();
        if nl == 0 || nl > MAX_CONV_LAYERS {
            return Err(format!(
                "{nl} convolutions (1 to {MAX_CONV_LAYERS} supported)"
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.ksize % 2 == 0 || l.ksize > MAX_KERNEL {
                return Err(format!(
                    "layer {i}: kernel side {} (odd, up to {MAX_KERNEL})",
                    l.ksize
                ));
            }
            if l.cin == 0 || l.cout == 0 || l.cin > MAX_CHANNELS || l.cout > MAX_CHANNELS {
                return Err(format!(
                    "layer {i}: {} to {} channels (1 to {MAX_CHANNELS})",
                    l.cin, l.cout
                ));
            }
            if i > 0 && l.cin != self.layers[i - 1].cout {
                return Err(format!(
                    "layer {i} takes {} channels but layer {} gives {}",
                    l.cin,
                    i - 1,
                    self.layers[i - 1].cout
                ));
            }
        }
        self.frame.validate()?;
        let colours = self.colours();
        if !matches!(colours, 1 | 3) {
            return Err(format!("{colours} colour planes (1 or 3)"));
        }
        let (cin, cout) = (
            self.frame.in_channels_of(colours),
            self.frame.out_channels(colours),
        );
        let maps = self.frame.map_channels_of(colours, self.layers[0].cin);
        if maps.is_none() || self.layers[nl - 1].cout != cout {
            return Err(format!(
                "{} maps {cin} channel(s){} to {cout}; this plan maps {} to {}",
                describe_colour_frame(&self.frame, colours),
                crate::model::cnn::per_colour_alternative(&self.frame, colours),
                self.layers[0].cin,
                self.layers[nl - 1].cout
            ));
        }
        // Each bound above keeps this sum far from overflow; the cap keeps a 32-byte seed
        // share from expanding into more than 1 GiB.
        if self.num_values() > crate::ring::plan::MAX_MODEL_VALUES {
            return Err(format!(
                "{} weights and biases (at most {} supported)",
                self.num_values(),
                crate::ring::plan::MAX_MODEL_VALUES
            ));
        }
        Ok(())
    }

    /// The stack's input from a job's input (image then map: plain values or one party's
    /// shares, [`CnnPlan::input_len`] of them) for an h x w image, what a residual model
    /// keeps of it to subtract its output from (the sub-images; empty otherwise), and the
    /// stack's height and width.
    pub fn stack_of(
        &self,
        input: &[u64],
        h: usize,
        w: usize,
    ) -> (Vec<u64>, Vec<u64>, (usize, usize)) {
        let colours = self.colours();
        let (image, map) = input.split_at(colours * h * w);
        let stack = self.frame.stack_input_of(colours, image, map, h, w);
        let dims = self.frame.stack_dims(h, w);
        let resid = if self.residual {
            stack[..self.frame.out_channels(colours) * dims.0 * dims.1].to_vec()
        } else {
            Vec::new()
        };
        (stack, resid, dims)
    }

    /// Bits of layer `l`'s masked-input opening: a hidden layer's output only reaches its
    /// ReLU circuit, which reads it mod 2^(ws + k); the last layer's is the output, read
    /// mod 2^out_bits (docs/protocol.md, "Ring width").
    pub fn open_bits(&self, l: usize) -> u32 {
        self.product_bits(l)
    }

    /// Bits of layer `l`'s product (its pre-activation map) that its readers read: a hidden
    /// layer's only its ReLU circuit, mod 2^(ws + k); the last layer's is the output, read
    /// mod 2^[`CnnFixed::out_bits`]. The width of the dealer's explicit C of the layer's
    /// matrix triples.
    pub fn product_bits(&self, l: usize) -> u32 {
        if l + 1 < self.layers.len() {
            (self.params.ws + self.params.k).min(64)
        } else {
            self.params.out_bits()
        }
    }

    /// The job's output from the last layer's map `z` (or shares of it; linear, so each
    /// party applies it to its own): subtracted from the shifted input `resid` for a
    /// residual model, shifted left by [`CnnFixed::out_shift`], and laid out as the
    /// ih x iw image. Returns it and how many of its values lie outside the signed
    /// out_bits range (plain values only: those the shift wraps).
    pub fn output_of(
        &self,
        mut z: Vec<u64>,
        resid: &[u64],
        ih: usize,
        iw: usize,
    ) -> (Vec<u64>, u64) {
        let p = self.params;
        if self.residual {
            for (o, &i) in z.iter_mut().zip(resid) {
                *o = (i << p.ws).wrapping_sub(*o);
            }
        }
        let wrapped = crate::ring::fixed::hold_at_top(&mut z, p.out_shift());
        (
            self.frame.image_from_stack_of(self.colours(), &z, ih, iw),
            wrapped,
        )
    }

    /// Values of a job's input for an h x w image: the image (its planes), then its noise
    /// map's.
    pub fn input_len(&self, h: usize, w: usize) -> usize {
        self.colours() * h * w + self.map_channels() * self.frame.map_len(h, w)
    }

    /// Noise-map channels it takes: 0, 1, or one per colour plane (its first layer's
    /// inputs say which, as its last layer's outputs say the colours).
    pub fn map_channels(&self) -> usize {
        self.frame
            .map_channels_of(self.colours(), self.layers[0].cin)
            .unwrap_or(0)
    }

    /// Channels of every activation map, input first.
    pub fn channels(&self) -> Vec<usize> {
        let mut v = vec![self.layers[0].cin];
        v.extend(self.layers.iter().map(|l| l.cout));
        v
    }

    /// Weights and biases of all layers (the length of a model share).
    pub fn num_values(&self) -> usize {
        self.layers.iter().map(|l| l.weight_count() + l.cout).sum()
    }
}

/// A hidden layer's activation on the reconstructed pre-activation `z` (scale s + ws):
/// max(0, floor(z / 2^ws)) of the k-bit signed truncation.
pub fn relu_trunc(p: &CnnFixed, z: u64) -> u64 {
    crate::ring::fixed::relu_trunc(p.ws, p.k, z)
}

/// Encodes a 0..255 image (row-major) as the gateway does for a CNN: p/255 at scale s,
/// followed by the noise map's values (sigma/255, [`Cnn::noise_map`]; empty without one).
pub fn encode_image(image: &Array2<f64>, map: &[f64], pre: &Preprocess, s: u32) -> Vec<u64> {
    image
        .iter()
        .map(|&p| encode(cnn::normalize(pre, p), s))
        .chain(map.iter().map(|&v| encode(v, s)))
        .collect()
}

pub struct CnnOracleRun {
    /// Image-sized output at the plan's out_scale.
    pub output: Vec<u64>,
    /// Truncated pre-activations outside the k-bit signed range, and outputs outside the
    /// out_bits signed range ([`CnnPlan::output_of`]).
    pub out_of_range: u64,
}

/// Runs the plan on an encoded image (h x w, scale s) and its map ([`encode_image`]). Each
/// layer's row blocks run in parallel ([`by_row_blocks`]); the products are exact, so the
/// blocking changes no bit of the result.
pub fn run(plan: &CnnPlan, h: usize, w: usize, input: &[u64]) -> CnnOracleRun {
    run_in_blocks(plan, h, w, input, BLOCK_VALUES)
}

/// [`run`] with row blocks of about `target` column values.
fn run_in_blocks(plan: &CnnPlan, h: usize, w: usize, input: &[u64], target: usize) -> CnnOracleRun {
    assert_eq!(input.len(), plan.input_len(h, w), "image and map values");
    let p = plan.params;
    let (ih, iw) = (h, w);
    let (mut x, resid, (h, w)) = plan.stack_of(input, h, w);
    let mut out_of_range = 0;
    let last = plan.layers.len() - 1;
    // The previous layer's map, reused: every value is written (a fresh map per layer cost
    // its page faults and zeroing).
    let mut next = Vec::new();
    for (li, l) in plan.layers.iter().enumerate() {
        next.resize(l.cout * h * w, 0);
        let hidden = li < last;
        out_of_range += by_row_blocks(
            &x,
            l.cin,
            h,
            w,
            l.ksize,
            &mut next,
            target,
            |cols, n, z, dst| {
                z.clear();
                z.extend(l.b.iter().flat_map(|&b| std::iter::repeat_n(b, n)));
                gemm_acc_serial(&l.w, cols, z, l.cout, l.fan_in(), n);
                let mut oor = 0;
                for (d, zrow) in dst.iter_mut().zip(z.chunks_exact(n)) {
                    if hidden {
                        for (d, &v) in d.iter_mut().zip(zrow) {
                            oor += out_of_range_of(&p, v) as u64;
                            *d = relu_trunc(&p, v);
                        }
                    } else {
                        d.copy_from_slice(zrow);
                    }
                }
                oor
            },
        );
        std::mem::swap(&mut x, &mut next);
    }
    let (output, wrapped) = plan.output_of(x, &resid, ih, iw);
    CnnOracleRun {
        output,
        out_of_range: out_of_range + wrapped,
    }
}

/// Whether a hidden pre-activation's truncation floor(z / 2^ws) falls outside the k-bit
/// signed range that the ReLU circuit keeps.
fn out_of_range_of(p: &CnnFixed, z: u64) -> bool {
    crate::ring::fixed::out_of_range(p.ws, p.k, z)
}

/// The whole plaintext fixed-point CNN on an image (0..255 scale) and its noise map's values
/// ([`Cnn::noise_map`]): encode, run, decode. Returns the decoded image and the
/// out-of-range count (see [`run`]).
pub fn denoise(
    plan: &CnnPlan,
    image: &Array2<f64>,
    map: &[f64],
    pre: &Preprocess,
) -> (Array2<f64>, u64) {
    // A colour image's planes come stacked, (C*h) x w.
    let (rows, w) = image.dim();
    let h = rows / plan.colours();
    let r = run(plan, h, w, &encode_image(image, map, pre, plan.params.s));
    (
        decode_output(&r.output, rows, w, pre, plan.params.out_scale()),
        r.out_of_range,
    )
}

/// The receiver's step: output values at `scale` -> 0..255 image (not clipped).
pub fn decode_output(out: &[u64], h: usize, w: usize, pre: &Preprocess, scale: u32) -> Array2<f64> {
    Array2::from_shape_vec(
        (h, w),
        out.iter()
            .map(|&v| cnn::denormalize(pre, decode(v, scale)))
            .collect(),
    )
    .expect("image-sized output")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cnn::{random_cnn, CnnMeta};

    #[test]
    fn oracle_follows_float_inference() {
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        let m = random_cnn(&[1, 8, 8, 1], 3, 11, meta);
        let (h, w) = (13, 9);
        let img = Array2::from_shape_fn((h, w), |(y, x)| ((y * 37 + x * 11) % 256) as f64);
        let pre = Preprocess::identity();
        let want = m.denoise_float(&img, &pre, &[]);
        let plan = CnnPlan::from_cnn(
            &m,
            CnnFixed {
                s: 20,
                ws: 20,
                k: 32,
            },
        )
        .unwrap();
        let run = run(&plan, h, w, &encode_image(&img, &[], &pre, plan.params.s));
        assert_eq!(run.out_of_range, 0);
        let got = decode_output(&run.output, h, w, &pre, plan.params.out_scale());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 0.05, "max error {err} grey levels");
    }

    /// The oracle one row block after the other (blocks of about 2^22 column values, each
    /// by im2col and one product, then put in place): what [`run`] computed before its
    /// blocks ran in parallel.
    fn run_serially(plan: &CnnPlan, h: usize, w: usize, input: &[u64]) -> CnnOracleRun {
        use crate::inference::im2col::{im2col, rows_per_block};
        use crate::ring::matmul::gemm_acc;
        let p = plan.params;
        let (mut x, resid, (sh, sw)) = plan.stack_of(input, h, w);
        let mut out_of_range = 0;
        let last = plan.layers.len() - 1;
        let mut cols = Vec::new();
        for (li, l) in plan.layers.iter().enumerate() {
            let hw = sh * sw;
            let mut next = vec![0u64; l.cout * hw];
            let per = rows_per_block(l.cin, l.ksize, sw, 1 << 22);
            for row0 in (0..sh).step_by(per) {
                let rows = per.min(sh - row0);
                im2col(&x, l.cin, sh, sw, l.ksize, row0, rows, &mut cols);
                let n = rows * sw;
                let mut z: Vec<u64> =
                    l.b.iter()
                        .flat_map(|&b| std::iter::repeat_n(b, n))
                        .collect();
                gemm_acc(&l.w, &cols, &mut z, l.cout, l.fan_in(), n);
                if li < last {
                    for v in z.iter_mut() {
                        out_of_range += out_of_range_of(&p, *v) as u64;
                        *v = relu_trunc(&p, *v);
                    }
                }
                for (o, src) in z.chunks_exact(n).enumerate() {
                    next[o * hw + row0 * sw..][..n].copy_from_slice(src);
                }
            }
            x = next;
        }
        let (output, wrapped) = plan.output_of(x, &resid, h, w);
        CnnOracleRun {
            output,
            out_of_range: out_of_range + wrapped,
        }
    }

    /// The output is held mod 2^out_bits at the word's top: values inside the signed range
    /// keep every bit (decoded at out_scale they are the values at s + ws), values outside
    /// it wrap and are counted; the residual comes first. FFDNet's and the default settings.
    #[test]
    fn the_output_is_held_at_out_bits_and_a_wrap_is_counted() {
        // FFDNet gray's: the output at ws + k bits, the activations' range ±32.
        let ffd = CnnFixed {
            s: 13,
            ws: 14,
            k: 19,
        };
        assert_eq!(
            (ffd.out_bits(), ffd.out_shift(), ffd.out_scale()),
            (33, 31, 58)
        );
        // Below ±32, the least range bounds it.
        let def = CnnFixed::default();
        assert_eq!((def.out_bits(), def.out_scale()), (31, 56));
        let narrow = CnnFixed {
            s: 12,
            ws: 12,
            k: 16,
        };
        assert_eq!(narrow.out_bits(), 12 + 12 + OUT_RANGE_BITS);
        // A wide k: ws + k bounds it.
        let wide = CnnFixed {
            s: 8,
            ws: 12,
            k: 30,
        };
        assert_eq!(wide.out_bits(), 42);
        let meta = CnnMeta {
            sigma: 25.0,
            residual: false,
        };
        let m = random_cnn(&[1, 1], 1, 3, meta);
        let plan = CnnPlan::from_cnn(&m, ffd).unwrap();
        let top = (1u64 << 32) - 1;
        let z = vec![
            0,
            5,
            top,
            top + 1,
            3u64.wrapping_neg(),
            (1u64 << 32).wrapping_neg(),
            (1u64 << 32).wrapping_neg() - 1,
            1 << 36,
        ];
        let (out, wrapped) = plan.output_of(z.clone(), &[], 1, z.len());
        assert_eq!(wrapped, 3, "2^32, -2^32 - 1 and 2^36 leave 33 signed bits");
        for (i, (&o, &v)) in out.iter().zip(&z).enumerate() {
            let back = ((o as i64) >> 31) as u64;
            assert_eq!(back == v, ![3, 6, 7].contains(&i), "value {i}");
            assert_eq!(o & ((1 << 31) - 1), 0);
        }
        assert_eq!(decode(out[1], ffd.out_scale()), decode(5, ffd.s + ffd.ws));
        // A residual model subtracts from the input shifted by ws first.
        let mut r = CnnPlan::from_cnn(&m, ffd).unwrap();
        r.residual = true;
        let (out, wrapped) = r.output_of(vec![7], &[2], 1, 1);
        assert_eq!((out, wrapped), (vec![((2u64 << 14) - 7) << 31], 0));
    }

    /// Parallel row blocks of every size give the serial oracle's bits, out-of-range counts
    /// included (a small k puts many pre-activations out of range), with and without a
    /// frame (FFDNet's sub-images and noise map).
    #[test]
    fn parallel_blocks_equal_the_serial_oracle() {
        use crate::model::cnn::random_framed_cnn;
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        for (frame, chans) in [
            (Frame::PLAIN, vec![1, 6, 5, 1]),
            (Frame::FFDNET, vec![5, 6, 4]),
        ] {
            let m = random_framed_cnn(&chans, 3, 21, meta, frame);
            let (h, w) = (22, 14);
            let img = Array2::from_shape_fn((h, w), |(y, x)| ((y * 53 + x * 29) % 256) as f64);
            let map = vec![25.0 / 255.0; frame.map_len(h, w)];
            let pre = Preprocess::identity();
            for k in [6, 30] {
                let params = CnnFixed { s: 10, ws: 12, k };
                let plan = CnnPlan::from_cnn(&m, params).unwrap();
                let enc = encode_image(&img, &map, &pre, params.s);
                let want = run_serially(&plan, h, w, &enc);
                assert_eq!(want.out_of_range > 0, k == 6);
                for target in [1, 200, BLOCK_VALUES] {
                    let got = in_pool(2, || run_in_blocks(&plan, h, w, &enc, target));
                    assert_eq!(got.output, want.output, "k {k}, blocks of {target}");
                    assert_eq!(got.out_of_range, want.out_of_range, "k {k}, {target}");
                }
            }
        }
    }

    fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn relu_trunc_is_floor_then_relu() {
        let p = CnnFixed {
            s: 12,
            ws: 12,
            k: 20,
        };
        for v in [
            -1i64,
            0,
            4095,
            4096,
            -4096,
            -4097,
            1 << 30,
            (1 << 30) + 5000,
        ] {
            assert_eq!(
                relu_trunc(&p, v as u64) as i64,
                v.div_euclid(4096).max(0),
                "{v}"
            );
        }
    }
}
