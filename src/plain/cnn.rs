//! Convolutional denoisers (DnCNN-class): a stack of same-padded k x k convolutions with
//! bias and ReLU between them, run on the whole image. Batch norm is folded into the
//! convolutions before a model is written (`scripts/import-dncnn.py`).
//!
//! `.npz` layout: `K1..KL` (out x in x k x k, row-major correlation as PyTorch's conv2d)
//! and `b1..bL`, plus optional scalars `sigma`, `residual`, `unshuffle` and `noise_map`.
//! Pixels enter as p/255 (times sigma*/sigma when the noise level is scaled); with
//! `residual` the network predicts the noise and the result is `input - net(input)`, as
//! DnCNN does. With `unshuffle` = r and `noise_map` = 1 (FFDNet) the stack runs on the r*r
//! sub-images and the noise-level map ([`crate::plain::frame`]).

use std::fs::File;
use std::path::Path;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array0, Array1, Array2, Array4, ArrayView2, ArrayViewMut2, Ix0};
use ndarray_npy::{NpzReader, NpzWriter};
use serde::{Deserialize, Serialize};

use crate::plain::frame::Frame;
use crate::plain::image::window::DeclaredWindow;
use crate::plain::model::ModelError;
use crate::plain::noise_map::NoiseLevel;
use crate::plain::par_conv::{by_row_blocks, BLOCK_VALUES};
use crate::plain::preprocess::Preprocess;

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
        let (cin, cout) = (self.frame.in_channels(), self.frame.sub_images());
        if self.convs[0].cin != cin || self.convs[nl - 1].cout != cout {
            return Err(inv(format!(
                "{}: the stack must map {cin} channel(s) to {cout}; this one maps {} to {}",
                describe_frame(&self.frame),
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
        let m = Cnn {
            convs,
            meta,
            frame,
            fixed_point,
            window,
        };
        m.validate(path)?;
        Ok(m)
    }

    /// True when the file holds a CNN (`K1`, a 4-D tensor, an ONNX graph of convolutions)
    /// rather than an MLP.
    pub fn is_cnn_file(path: &Path) -> Result<bool, ModelError> {
        if super::onnx::is_onnx(path) {
            return Ok(matches!(super::onnx::load(path)?, super::onnx::Net::Cnn(_)));
        }
        if super::safetensors::is_safetensors(path)? {
            return super::safetensors::cnn::holds_conv(path);
        }
        // Names only: no array is read, so no size check (a loader runs it).
        let file = File::open(path).map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, names) = open_npz(path, file)?;
        Ok(names.iter().any(|n| n == "K1"))
    }

    pub fn load(path: &Path) -> Result<Cnn, ModelError> {
        if super::onnx::is_onnx(path) {
            return match super::onnx::load(path)? {
                super::onnx::Net::Cnn(m) => Ok(m),
                super::onnx::Net::Mlp(_) => Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    msg: "holds an MLP where a CNN was expected".into(),
                }),
            };
        }
        if super::safetensors::is_safetensors(path)? {
            return super::safetensors::cnn::load(path);
        }
        let (mut npz, names) = open_npz(path, super::npz::open_checked(path)?)?;
        let has = |n: &str| names.iter().any(|x| x == n);
        let err = |name: &str, msg: String| ModelError::Array {
            path: path.to_path_buf(),
            name: name.to_string(),
            msg,
        };
        let mut convs = Vec::new();
        while has(&format!("K{}", convs.len() + 1)) {
            let n = convs.len() + 1;
            if n > MAX_CONV_LAYERS {
                return Err(err(
                    &format!("K{n}"),
                    format!("more than {MAX_CONV_LAYERS} layers"),
                ));
            }
            let (kn, bn) = (format!("K{n}"), format!("b{n}"));
            let k: Array4<f64> = read_any(&mut npz, path, &kn)?;
            if !has(&bn) {
                return Err(err(&bn, format!("missing ({kn} is present)")));
            }
            let b: Array1<f64> = read_any(&mut npz, path, &bn)?;
            let (cout, cin, kh, kw) = k.dim();
            if kh != kw {
                return Err(err(
                    &kn,
                    format!("has a {kh}x{kw} kernel (square expected)"),
                ));
            }
            convs.push(Conv {
                cin,
                cout,
                k: kh,
                w: k.iter().copied().collect(),
                b: b.to_vec(),
            });
        }
        if convs.is_empty() {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                msg: format!("no array K1 found (arrays present: {})", names.join(", ")),
            });
        }
        let mut meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        if has("sigma") {
            meta.sigma = read_any::<Ix0>(&mut npz, path, "sigma")?.into_scalar();
        }
        if has("residual") {
            meta.residual = read_any::<Ix0>(&mut npz, path, "residual")?.into_scalar() != 0.0;
        }
        let mut frame = Frame::PLAIN;
        if has("unshuffle") {
            let r = read_any::<Ix0>(&mut npz, path, "unshuffle")?.into_scalar();
            if !(r.fract() == 0.0 && (1.0..=crate::plain::frame::MAX_UNSHUFFLE as f64).contains(&r))
            {
                return Err(err(
                    "unshuffle",
                    format!(
                        "is {r} (an integer 1 to {} expected)",
                        crate::plain::frame::MAX_UNSHUFFLE
                    ),
                ));
            }
            frame.unshuffle = r as usize;
        }
        if has("noise_map") {
            frame.noise_map = match read_any::<Ix0>(&mut npz, path, "noise_map")?.into_scalar() {
                0.0 => false,
                1.0 => true,
                v => return Err(err("noise_map", format!("is {v} (0 or 1 expected)"))),
            };
        }
        let mut fixed_point = None;
        if has("fixed_point") {
            let a: Array1<f64> = read_any(&mut npz, path, "fixed_point")?;
            fixed_point = Some(fixed_point_of(&a.to_vec()).map_err(|e| err("fixed_point", e))?);
        }
        let window = super::model::npz_window(&mut npz, path, &names)?;
        Cnn::checked(convs, meta, frame, fixed_point, window, path)
    }

    /// Writes the model as `.npz` (f64 arrays), atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::formats::atomic::write_with(path, |f| {
            let mut npz = NpzWriter::new(f);
            for (i, c) in self.convs.iter().enumerate() {
                let k = Array4::from_shape_vec((c.cout, c.cin, c.k, c.k), c.w.clone())?;
                npz.add_array(format!("K{}", i + 1), &k)?;
                npz.add_array(format!("b{}", i + 1), &Array1::from(c.b.clone()))?;
            }
            let scalar = |v: f64| Array0::from_elem((), v);
            npz.add_array("sigma", &scalar(self.meta.sigma))?;
            npz.add_array("residual", &scalar(self.meta.residual as u8 as f64))?;
            npz.add_array("unshuffle", &scalar(self.frame.unshuffle as f64))?;
            npz.add_array("noise_map", &scalar(self.frame.noise_map as u8 as f64))?;
            if let Some(f) = self.fixed_point {
                npz.add_array("fixed_point", &Array1::from(f.map(f64::from).to_vec()))?;
            }
            if let Some(d) = &self.window {
                npz.add_array(d.npz_key(), &Array1::from(vec![d.window.lo, d.window.hi]))?;
            }
            npz.finish()?;
            Ok(())
        })
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
            noise.stack_map(&self.frame, h, w)
        } else {
            Vec::new()
        }
    }

    /// Float inference on a noisy image (0..255, H x W) with its noise map's values
    /// ([`Cnn::noise_map`]); returns the denoised image on the same scale, not clipped.
    /// The convolutions run in f32, as PyTorch's float forward does: twice the multiply-adds
    /// per cycle of f64, and a result within a millionth of a grey level of f64's.
    pub fn denoise_float(&self, image: &Array2<f64>, pre: &Preprocess, map: &[f64]) -> Array2<f64> {
        let (h, w) = image.dim();
        let input: Vec<f64> = image.iter().map(|&p| normalize(pre, p)).collect();
        let stack = self.frame.stack_input(&input, map, h, w);
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
        let out = self.frame.image_from_stack(&x, h, w);
        Array2::from_shape_vec((h, w), out.iter().map(|&v| denormalize(pre, v)).collect())
            .expect("image-sized output")
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
    let f = crate::ring::cnn::CnnFixed {
        s: a[0] as u32,
        ws: a[1] as u32,
        k: a[2] as u32,
    };
    f.validate()?;
    Ok([f.s, f.ws, f.k])
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

/// `file`, opened from `path`, as an npz reader and its entry names.
fn open_npz(path: &Path, file: File) -> Result<(NpzReader<File>, Vec<String>), ModelError> {
    let not_npz = |e: ndarray_npy::ReadNpzError| ModelError::NotNpz {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut npz = NpzReader::new(file).map_err(not_npz)?;
    let names = npz.names().map_err(not_npz)?;
    Ok((npz, names))
}

/// Reads an f64 or f32 array of dimension `D`, widening f32.
fn read_any<D: ndarray::Dimension>(
    npz: &mut NpzReader<File>,
    path: &Path,
    name: &str,
) -> Result<ndarray::Array<f64, D>, ModelError> {
    match npz.by_name::<ndarray::OwnedRepr<f64>, D>(name) {
        Ok(a) => Ok(a),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f32>, D>(name)
            .map(|a| a.mapv(f64::from))
            .map_err(|e| ModelError::Array {
                path: path.to_path_buf(),
                name: name.to_string(),
                msg: e.to_string(),
            }),
    }
}

/// A random CNN (for tests and benchmarks): `channels` = 1, c1, ..., 1, k x k kernels,
/// He-scaled weights so activations keep their magnitude through the layers.
pub fn random_cnn(channels: &[usize], k: usize, seed: u64, meta: CnnMeta) -> Cnn {
    random_framed_cnn(channels, k, seed, meta, Frame::PLAIN)
}

/// [`random_cnn`] inside a frame: `channels` starts with the frame's input channels and
/// ends with its sub-images (5, ..., 4 for FFDNet).
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
    Cnn {
        convs,
        meta,
        frame,
        fixed_point: None,
        window: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let meta = CnnMeta {
            sigma: 15.0,
            residual: true,
        };
        let m = random_cnn(&[1, 4, 3, 1], 3, 7, meta);
        let p = dir.path().join("cnn.npz");
        m.save(&p).unwrap();
        assert!(Cnn::is_cnn_file(&p).unwrap());
        assert_eq!(Cnn::load(&p).unwrap(), m);

        let mut bad = m.clone();
        bad.convs[1].cin = 5;
        bad.convs[1].w = vec![0.0; 3 * 5 * 9];
        let e = bad.validate(&p).unwrap_err().to_string();
        assert!(e.contains("K2") && e.contains("do not chain"), "{e}");
        let mut bad = m.clone();
        bad.convs[0].b[0] = f64::NAN;
        let e = bad.validate(&p).unwrap_err().to_string();
        assert!(e.contains("b1") && e.contains("non-finite"), "{e}");
    }

    /// The f32 forward, by parallel row blocks (three here), against a direct f64 loop.
    #[test]
    fn float_forward_matches_a_direct_loop() {
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        let m = random_cnn(&[1, 8, 8, 1], 3, 3, meta);
        let (h, w) = (130usize, 64);
        assert!(h.div_ceil(crate::plain::im2col::rows_per_block(8, 3, w, BLOCK_VALUES)) >= 3);
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
