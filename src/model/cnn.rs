//! Convolutional denoisers (DnCNN-class): a stack of same-padded k x k convolutions with
//! bias and ReLU between them, run on the whole image. Batch norm is folded into the
//! convolutions before a model is written (`scripts/import-dncnn.py`).
//!
//! `.npz` layout: `K1..KL` (out x in x k x k, row-major correlation as PyTorch's conv2d)
//! and `b1..bL`, plus optional scalars `sigma`, `residual`, `unshuffle` and `noise_map`.
//! Pixels enter as p/255 (times sigma*/sigma when the noise level is scaled); with
//! `residual` the network predicts the noise and the result is `input - net(input)`, as
//! DnCNN does. With `unshuffle` = r and `noise_map` = 1 (FFDNet) the stack runs on the r*r
//! sub-images and the noise-level map ([`crate::model::frame`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::image::window::DeclaredWindow;
use crate::model::frame::Frame;
use crate::model::mlp::ModelError;
use crate::model::noise_map::NoiseLevel;
use crate::model::preprocess::Preprocess;

/// Most convolution layers a CNN may have.
pub const MAX_CONV_LAYERS: usize = 64;
/// Most channels of one layer.
pub const MAX_CHANNELS: usize = 512;
/// Largest kernel side.
pub const MAX_KERNEL: usize = 7;

#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    /// Kernel side (odd).
    pub k: usize,
    /// cout x (cin * k * k), row-major: the filter of output o is row o.
    pub w: Vec<f64>,
    pub b: Vec<f64>,
}

impl Conv {
    pub fn fan_in(&self) -> usize {
        self.cin * self.k * self.k
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CnnMeta {
    /// The noise level the model was trained for (sigma*), on the 0..255 scale.
    pub sigma: f64,
    /// The network predicts the noise: clean = input - net(input).
    pub residual: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cnn {
    pub convs: Vec<Conv>,
    pub meta: CnnMeta,
    /// Sub-images and noise map around the stack (identity for DnCNN).
    pub frame: Frame,
    /// Colour planes of the images it takes: 1 (gray) or 3 (RGB; `colours` in the file).
    pub colours: usize,
    /// The fixed-point settings measured for this model (s, ws, k: `fixed_point` in the
    /// file), used when none are given; `None`: the project's defaults.
    pub fixed_point: Option<[u32; 3]>,
    /// The window of image values it was trained on, when its file declares one (public:
    /// it travels in the model's header).
    pub window: Option<DeclaredWindow>,
}

/// A pixel (0..255) as the CNN takes it.
pub fn normalize(pre: &Preprocess, pix: f64) -> f64 {
    pre.noise_scale * pix / 255.0
}

pub fn denormalize(pre: &Preprocess, v: f64) -> f64 {
    v * 255.0 / pre.noise_scale
}

impl Cnn {
    /// Channels of every activation map, input first (1, c1, ..., 1).
    pub fn channels(&self) -> Vec<usize> {
        let mut v = vec![self.convs[0].cin];
        v.extend(self.convs.iter().map(|c| c.cout));
        v
    }

    /// Side of the square window of input pixels one output pixel depends on.
    pub fn receptive_field(&self) -> usize {
        1 + self.convs.iter().map(|c| c.k - 1).sum::<usize>()
    }

    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let inv = |msg: String| ModelError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let arr = |name: String, msg: String| ModelError::Array {
            path: path.to_path_buf(),
            name,
            msg,
        };
        let nl = self.convs.len();
        if nl == 0 || nl > MAX_CONV_LAYERS {
            return Err(inv(format!(
                "{nl} convolutions (1 to {MAX_CONV_LAYERS} supported)"
            )));
        }
        for (i, c) in self.convs.iter().enumerate() {
            let n = i + 1;
            if c.k % 2 == 0 || c.k > MAX_KERNEL {
                return Err(arr(
                    format!("K{n}"),
                    format!("has a {0}x{0} kernel (odd, up to {MAX_KERNEL})", c.k),
                ));
            }
            if c.cin == 0 || c.cout == 0 || c.cin > MAX_CHANNELS || c.cout > MAX_CHANNELS {
                return Err(arr(
                    format!("K{n}"),
                    format!(
                        "maps {} to {} channels (1 to {MAX_CHANNELS} supported)",
                        c.cin, c.cout
                    ),
                ));
            }
            if i > 0 && c.cin != self.convs[i - 1].cout {
                return Err(arr(
                    format!("K{n}"),
                    format!(
                        "takes {} channels but layer {i} gives {} (layers do not chain)",
                        c.cin,
                        self.convs[i - 1].cout
                    ),
                ));
            }
            if c.w.len() != c.cout * c.fan_in() {
                return Err(arr(
                    format!("K{n}"),
                    "has the wrong number of values".into(),
                ));
            }
            if c.b.len() != c.cout {
                return Err(arr(
                    format!("b{n}"),
                    format!("has {} entries but K{n} has {} filters", c.b.len(), c.cout),
                ));
            }
            if let Some(bad) = c.w.iter().position(|v| !v.is_finite()) {
                return Err(arr(
                    format!("K{n}"),
                    format!("non-finite value at flat index {bad}"),
                ));
            }
            if let Some(bad) = c.b.iter().position(|v| !v.is_finite()) {
                return Err(arr(
                    format!("b{n}"),
                    format!("non-finite value at index {bad}"),
                ));
            }
        }
        self.frame.validate().map_err(inv)?;
        if !matches!(self.colours, 1 | 3) {
            return Err(inv(format!(
                "colours is {} (1 for gray or 3 for RGB expected)",
                self.colours
            )));
        }
        let (cin, cout) = (
            self.frame.in_channels_of(self.colours),
            self.frame.out_channels(self.colours),
        );
        let maps = self.frame.map_channels_of(self.colours, self.convs[0].cin);
        if maps.is_none() || self.convs[nl - 1].cout != cout {
            return Err(inv(format!(
                "{}: the stack must map {cin} channel(s){} to {cout}; this one maps {} to {}",
                describe_colour_frame(&self.frame, self.colours),
                per_colour_alternative(&self.frame, self.colours),
                self.convs[0].cin,
                self.convs[nl - 1].cout
            )));
        }
        if !(self.meta.sigma.is_finite() && self.meta.sigma > 0.0) {
            return Err(inv(format!(
                "sigma must be positive, got {}",
                self.meta.sigma
            )));
        }
        Ok(())
    }

    /// A CNN from its parts, checked ([`Cnn::validate`]) as every reader leaves it.
    pub fn checked(
        convs: Vec<Conv>,
        meta: CnnMeta,
        frame: Frame,
        fixed_point: Option<[u32; 3]>,
        window: Option<DeclaredWindow>,
        path: &Path,
    ) -> Result<Cnn, ModelError> {
        Cnn::checked_colour(convs, meta, (frame, 1), fixed_point, window, path)
    }

    /// [`Cnn::checked`] of a model of `colours` planes.
    pub fn checked_colour(
        convs: Vec<Conv>,
        meta: CnnMeta,
        (frame, colours): (Frame, usize),
        fixed_point: Option<[u32; 3]>,
        window: Option<DeclaredWindow>,
        path: &Path,
    ) -> Result<Cnn, ModelError> {
        let m = Cnn {
            convs,
            meta,
            frame,
            colours,
            fixed_point,
            window,
        };
        m.validate(path)?;
        Ok(m)
    }

    /// Whether it takes colour images.
    pub fn is_colour(&self) -> bool {
        self.colours > 1
    }

    /// Noise-map channels it takes: 0, 1, or one per colour plane (its first layer's
    /// inputs say which; checked by [`Cnn::validate`]).
    pub fn map_channels(&self) -> usize {
        self.frame
            .map_channels_of(self.colours, self.convs[0].cin)
            .unwrap_or(0)
    }

    /// How an image at noise level `sigma` enters the network: a model with a noise map
    /// takes p/255 as it is (the map carries the level); another one is scaled by
    /// sigma*/sigma when `scale_noise`.
    pub fn preprocess(&self, sigma: f64, scale_noise: bool) -> Preprocess {
        if self.frame.noise_map {
            Preprocess::identity()
        } else {
            Preprocess::new(sigma, self.meta.sigma, scale_noise)
        }
    }

    /// The noise-map channel's values for an h x w image at noise level `noise` (empty for
    /// a model without one).
    pub fn noise_map(&self, noise: &NoiseLevel, h: usize, w: usize) -> Vec<f64> {
        if self.frame.noise_map {
            noise.stack_map(&self.frame, self.map_channels(), h, w)
        } else {
            Vec::new()
        }
    }
}

/// The fixed-point settings a model file records (s, ws, k), checked.
pub fn fixed_point_of(a: &[f64]) -> Result<[u32; 3], String> {
    let ok = a.len() == 3
        && a.iter()
            .all(|v| v.fract() == 0.0 && (1.0..=63.0).contains(v));
    if !ok {
        return Err("must hold three integers 1..63: s, ws, k".into());
    }
    let [s, ws, k] = [a[0] as u32, a[1] as u32, a[2] as u32];
    check_fixed_point(s, ws, k)?;
    Ok([s, ws, k])
}

/// Checks fixed-point settings a CNN may run at: `s` fractional bits of the input and hidden
/// activations, `ws` of the weights, `k` signed bits of a truncated pre-activation (the
/// settings of `ring::cnn::CnnFixed`, and what a model file may record).
pub fn check_fixed_point(s: u32, ws: u32, k: u32) -> Result<(), String> {
    if !(4..=24).contains(&s) || !(4..=24).contains(&ws) {
        return Err(format!(
            "CNN fixed-point scales s {s} and ws {ws} out of range (4..24)"
        ));
    }
    if !(2..=40).contains(&k) {
        return Err(format!("CNN activation bits k {k} out of range (2..40)"));
    }
    if ws + k > 63 {
        return Err(format!(
            "ws + k = {} leaves no room in the 64-bit ring",
            ws + k
        ));
    }
    Ok(())
}

/// The same, written as text in a file's metadata ("10,13,18").
pub fn fixed_point_text(v: &str) -> Result<[u32; 3], String> {
    let a: Vec<f64> = v
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("is {v:?}; expected three integers s,ws,k"))?;
    fixed_point_of(&a)
}

/// Folds an inference-mode batch norm into the filters before it: with per-channel scale,
/// shift, running mean and variance `p` and g = scale / sqrt(var + eps), w' = w g and
/// b' = (b - mean) g + shift. `w` holds one row of `w.len() / b.len()` weights per filter.
pub fn fold_batch_norm(
    w: &mut [f64],
    b: &mut [f64],
    p: [&[f64]; 4],
    eps: f64,
) -> Result<(), String> {
    let fan = w.len() / b.len().max(1);
    let [scale, shift, mean, var] = p;
    for (o, (row, bias)) in w.chunks_mut(fan).zip(b.iter_mut()).enumerate() {
        let v = var[o] + eps;
        let g = scale[o] / v.sqrt();
        if v <= 0.0 || !g.is_finite() {
            return Err(format!("channel {o}: variance + eps = {v} is not positive"));
        }
        row.iter_mut().for_each(|x| *x *= g);
        *bias = (*bias - mean[o]) * g + shift[o];
    }
    Ok(())
}

/// Puts the first convolution's input channels and the last one's filters in the frame's
/// order: input channel i of the result is channel `first_in[i]` of the given weights, and
/// filter j is filter `last_out[j]` (a permutation of weights, exact).
pub fn reorder_channels(convs: &mut [Conv], first_in: &[usize], last_out: &[usize]) {
    let first = &mut convs[0];
    assert_eq!(first_in.len(), first.cin, "one source per input channel");
    let kk = first.k * first.k;
    let mut w = Vec::with_capacity(first.w.len());
    for o in 0..first.cout {
        for &c in first_in {
            let at = (o * first.cin + c) * kk;
            w.extend_from_slice(&first.w[at..at + kk]);
        }
    }
    first.w = w;
    let last = convs.last_mut().expect("a layer");
    assert_eq!(last_out.len(), last.cout, "one source per filter");
    let fan = last.fan_in();
    let w = last_out
        .iter()
        .flat_map(|&c| last.w[c * fan..(c + 1) * fan].iter().copied())
        .collect();
    last.b = last_out.iter().map(|&c| last.b[c]).collect();
    last.w = w;
}

/// How a frame around `colours` planes reads in messages.
pub fn describe_colour_frame(f: &Frame, colours: usize) -> String {
    if colours == 1 {
        describe_frame(f)
    } else {
        format!(
            "a colour ({colours} planes) {}",
            describe_frame(f).trim_start_matches("a ")
        )
    }
}

/// ", or C r*r + C with a map per colour" where a colour frame with a map may take that.
pub fn per_colour_alternative(f: &Frame, colours: usize) -> String {
    if f.noise_map && colours > 1 {
        format!(
            " (or {} with a noise map per colour)",
            colours * f.sub_images() + colours
        )
    } else {
        String::new()
    }
}

/// How a frame reads in messages.
pub fn describe_frame(f: &Frame) -> String {
    match (f.unshuffle, f.noise_map) {
        (1, false) => "a whole-image CNN (DnCNN-like)".into(),
        (r, m) => format!(
            "a CNN on {} sub-images{}",
            r * r,
            if m {
                " and a noise map (FFDNet-like)"
            } else {
                ""
            }
        ),
    }
}

/// A random CNN (for tests and benchmarks): `channels` = 1, c1, ..., 1, k x k kernels,
/// He-scaled weights so activations keep their magnitude through the layers.
pub fn random_cnn(channels: &[usize], k: usize, seed: u64, meta: CnnMeta) -> Cnn {
    random_framed_cnn(channels, k, seed, meta, Frame::PLAIN)
}

/// [`random_cnn`] inside a frame: `channels` starts with the frame's input channels and
/// ends with its sub-images (5, ..., 4 for FFDNet; 13, ..., 12 for colour FFDNet, whose
/// colour count the last layer's width tells).
pub fn random_framed_cnn(
    channels: &[usize],
    k: usize,
    seed: u64,
    meta: CnnMeta,
    frame: Frame,
) -> Cnn {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let convs = channels
        .windows(2)
        .map(|p| {
            let fan = p[0] * k * k;
            let r = (6.0 / fan as f64).sqrt();
            Conv {
                cin: p[0],
                cout: p[1],
                k,
                w: (0..p[1] * fan).map(|_| rng.gen_range(-r..r)).collect(),
                b: (0..p[1]).map(|_| rng.gen_range(-0.05..0.05)).collect(),
            }
        })
        .collect();
    // The colours the channels imply (the stack maps C r*r (+ map) to C r*r channels).
    let colours = (channels[channels.len() - 1] / frame.sub_images()).max(1);
    Cnn {
        convs,
        meta,
        frame,
        colours,
        fixed_point: None,
        window: None,
    }
}
