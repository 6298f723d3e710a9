//! Float inference of a CNN graph ([`crate::model::graph`]): each node in order, on
//! channel-major maps, in f64, with every op as ONNX defines it (onnxruntime is the reference:
//! tests/suite/models/graph_float.rs). Direct loops, parallel over output channels, but for the
//! convolutions, which run as matrix products (`conv_gemm`); the fixed-point oracle keeps
//! the direct loops.
//! The linear kernels are generic over [`Scalar`], so that the fixed-point oracle runs the
//! same loops on ring elements (wrapping u64), as the CNN's float and oracle share im2col.

use ndarray::Array2;
use rayon::prelude::*;

use crate::model::cnn::{denormalize, normalize};
use crate::model::graph::{ConvOp, Coords, Graph, Inputs, Interp, Op, Resize, Rounding, Window};
use crate::model::preprocess::Preprocess;

use super::map::tap;
pub use super::map::{
    conv, conv_dims, conv_transpose, conv_transpose_dims, window_dims, Map, Scalar,
};

impl Graph {
    /// The graph's output on a normalised input: the image's planes (h x w each, row-major),
    /// then the noise map's channels at its block, sides multiples of the total stride
    /// ([`Graph::padded_size`], [`Inputs::pad`]). Each tensor is dropped after its last
    /// reader.
    pub fn run_float(&self, input: &[f64], h: usize, w: usize) -> Result<Map, String> {
        self.run_float_each(input, h, w, |_, _| {})
    }

    /// [`Graph::run_float`], showing `each` every node's output (node index, map) as it is
    /// made: the fixed-point oracle's error bound is checked node by node against these.
    pub fn run_float_each(
        &self,
        input: &[f64],
        h: usize,
        w: usize,
        mut each: impl FnMut(usize, &Map),
    ) -> Result<Map, String> {
        if self.padded_size(h, w)? != (h, w) || input.len() != self.inputs().len(h, w) {
            return Err(format!(
                "{} values for a {h} x {w} input whose sides are not multiples of the total \
                 stride {:?}",
                input.len(),
                self.total_stride()?
            ));
        }
        let n = self.nodes.len();
        let mut last = vec![0; n];
        for (i, node) in self.nodes.iter().enumerate() {
            node.inputs.iter().for_each(|&t| last[t] = i);
        }
        last[self.output] = usize::MAX;
        let mut maps: Vec<Option<Map>> = vec![None; n];
        for (at, m) in input_maps(self.inputs(), input, h, w) {
            maps[at] = Some(m);
        }
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            if maps[i].is_some() {
                continue;
            }
            let ins: Vec<&Map> = node
                .inputs
                .iter()
                .map(|&t| maps[t].as_ref().expect("made before and not yet dropped"))
                .collect();
            let out = eval(&node.op, &ins);
            each(i, &out);
            maps[i] = Some(out);
            for &t in &node.inputs {
                if last[t] == i {
                    maps[t] = None;
                }
            }
        }
        Ok(maps[self.output].take().expect("the output is kept"))
    }

    /// Float denoising of a noisy image (0..255; a colour one's planes stacked, (C h) x w)
    /// and its noise map (the map's channels at [`crate::model::graph::MapInput::dims`];
    /// empty without one): normalised as `pre` says, padded as [`Inputs::pad`] says,
    /// run, cropped and put back on the 0..255 scale (not clipped).
    pub fn denoise_float(
        &self,
        image: &Array2<f64>,
        pre: &Preprocess,
        map: &[f64],
    ) -> Result<Array2<f64>, String> {
        let (rows, w) = image.dim();
        let h = rows / self.colours;
        let (ph, pw) = self.padded_size(h, w)?;
        let input: Vec<f64> = image
            .iter()
            .map(|&p| normalize(pre, p))
            .chain(map.iter().copied())
            .collect();
        let inputs = self.inputs();
        if input.len() != inputs.len(h, w) {
            return Err(format!(
                "a noise map of {} values for a {h} x {w} image ({} expected)",
                map.len(),
                inputs.len(h, w) - self.colours * h * w
            ));
        }
        let out = self.run_float(&inputs.pad(&input, (h, w), (ph, pw)), ph, pw)?;
        Ok(Array2::from_shape_fn((rows, w), |(y, x)| {
            denormalize(pre, out.v[((y / h) * ph + y % h) * pw + x])
        }))
    }

    /// How an image at noise level `sigma` enters the network: scaled by sigma*/sigma when
    /// `scale_noise`, as a CNN without a noise map.
    pub fn preprocess(&self, sigma: f64, scale_noise: bool) -> Preprocess {
        Preprocess::new(sigma, self.sigma, scale_noise)
    }
}

/// A padded input (image planes, then the map's channels: [`Inputs::pad`]) as the maps of
/// the tensors that hold it: tensor 0 the image's planes of h x w, and the map's tensor when
/// there is one.
pub fn input_maps<T: Scalar>(
    inputs: Inputs,
    input: &[T],
    h: usize,
    w: usize,
) -> Vec<(usize, Map<T>)> {
    let colours = inputs.colours;
    let (image, rest) = input.split_at(colours * h * w);
    let mut out = vec![(
        0,
        Map {
            c: colours,
            h,
            w,
            v: image.to_vec(),
        },
    )];
    if let Some(m) = inputs.map {
        let (at, c, b) = (m.node, m.channels, m.block);
        out.push((
            at,
            Map {
                c,
                h: h / b,
                w: w / b,
                v: rest.to_vec(),
            },
        ));
    }
    out
}

/// One node's output from its inputs' maps (the fixed-point oracle's tests apply it to the
/// oracle's own decoded inputs, to hold each step to its own rounding).
pub fn eval(op: &Op, ins: &[&Map]) -> Map {
    let x = ins[0];
    match op {
        Op::Input | Op::NoiseMap { .. } => unreachable!("the inputs are given"),
        Op::Conv(c) => conv_float(c, x),
        Op::Add => zip(x, ins[1], |a, b| a + b),
        Op::Sub => zip(x, ins[1], |a, b| a - b),
        Op::Concat => concat(ins),
        Op::Affine { scale, shift } => {
            let at = |v: &[f64], c: usize| v[if v.len() == 1 { 0 } else { c }];
            x.map(|c, v| v * at(&scale[..], c) + at(&shift[..], c))
        }
        Op::AvgPool { window, count_pad } => pool(window, x, |vals, all| {
            let n = if *count_pad { all } else { vals.len() };
            vals.iter().sum::<f64>() / n as f64
        }),
        Op::MaxPool { window } => pool(window, x, |vals, _| {
            vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        }),
        Op::Resize(r) => resize(r, x, |t| t),
        Op::DepthToSpace { block, crd } => depth_to_space(x, *block, *crd),
        Op::SpaceToDepth { block } => space_to_depth(x, *block),
        Op::Relu => x.map(|_, v| v.max(0.0)),
        Op::LeakyRelu { alpha } => x.map(|_, v| if v < 0.0 { alpha * v } else { v }),
        Op::PRelu { slope } => x.map(|c, v| {
            let a = slope[if slope.len() == 1 { 0 } else { c }];
            if v < 0.0 {
                a * v
            } else {
                v
            }
        }),
        Op::Clip { lo, hi } => x.map(|_, v| {
            let v = lo.map_or(v, |l| v.max(l));
            hi.map_or(v, |h| v.min(h))
        }),
    }
}

/// A conv (plain or transposed) in float: im2col and ndarray's product
/// ([`super::conv_gemm`]), then its biases. The same sums as the direct loops, in another
/// order (tests/suite/models/graph_float.rs holds both to onnxruntime's).
fn conv_float(c: &ConvOp, x: &Map) -> Map {
    use ndarray::linalg::general_mat_mul;
    use ndarray::{ArrayView2, ArrayViewMut2};
    let gemm = |a: &[f64], b: &[f64], out: &mut [f64], m: usize, k: usize, n: usize| {
        let a = ArrayView2::from_shape((m, k), a).expect("the block's weights");
        let b = ArrayView2::from_shape((k, n), b).expect("the block's columns");
        let mut out = ArrayViewMut2::from_shape((m, n), out).expect("the block's product");
        general_mat_mul(1.0, &a, &b, 1.0, &mut out);
    };
    let y = super::conv_gemm::conv(c, &c.w, x, super::conv_gemm::BLOCK_VALUES, &gemm);
    y.map(|o, v| v + c.b[o])
}

/// `f` of two maps' values, pairwise.
pub fn zip<T: Scalar>(a: &Map<T>, b: &Map<T>, f: impl Fn(T, T) -> T) -> Map<T> {
    Map {
        v: a.v.iter().zip(&b.v).map(|(&x, &y)| f(x, y)).collect(),
        ..*a
    }
}

/// The maps' channels one after the other.
pub fn concat<T: Scalar>(ins: &[&Map<T>]) -> Map<T> {
    Map {
        c: ins.iter().map(|m| m.c).sum(),
        v: ins.iter().flat_map(|m| m.v.iter().copied()).collect(),
        ..*ins[0]
    }
}

/// A pooling: `f` of the window's values inside the map, and the window's full size.
pub fn pool<T: Scalar>(win: &Window, x: &Map<T>, f: impl Fn(&[T], usize) -> T + Sync) -> Map<T> {
    let (oh, ow) = window_dims(win, x.h, x.w);
    let [kh, kw] = win.kernel;
    let mut out = Map::zeros(x.c, oh, ow);
    out.v
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(c, plane)| {
            let src = x.plane(c);
            let mut at = Vec::with_capacity(kh * kw);
            let mut vals = Vec::with_capacity(kh * kw);
            for y in 0..oh {
                for xo in 0..ow {
                    window_at(win, x.h, x.w, y, xo, &mut at);
                    vals.clear();
                    vals.extend(at.iter().map(|&i| src[i]));
                    plane[y * ow + xo] = f(&vals, kh * kw);
                }
            }
        });
    out
}

/// The positions in an h x w plane that the window of output (y, xo) reads, padding left
/// out, in the order a pooling sees them (row by row): the secure max pooling compares them
/// in this order, so its result is the oracle's bit for bit, out of range included.
pub fn window_at(win: &Window, h: usize, w: usize, y: usize, xo: usize, out: &mut Vec<usize>) {
    out.clear();
    let [kh, kw] = win.kernel;
    for ky in 0..kh {
        let Some(iy) = tap(y, ky, win, 0, h) else {
            continue;
        };
        for kx in 0..kw {
            if let Some(ix) = tap(xo, kx, win, 1, w) {
                out.push(iy * w + ix);
            }
        }
    }
}

/// For each output position on an axis of `n` up-sampled by `r`: the source positions and
/// their weights (ONNX's Resize with constant whole scales).
pub fn resize_taps(r: &Resize, n: usize, a: usize) -> Vec<[(usize, f64); 2]> {
    let s = r.scale[a];
    let len = n * s;
    (0..len)
        .map(|i| {
            let x = match r.coords {
                Coords::HalfPixel => (i as f64 + 0.5) / s as f64 - 0.5,
                Coords::PytorchHalfPixel if len > 1 => (i as f64 + 0.5) / s as f64 - 0.5,
                Coords::PytorchHalfPixel => 0.0,
                Coords::Asymmetric => i as f64 / s as f64,
            };
            let last = (n - 1) as f64;
            match r.interp {
                Interp::Nearest(mode) => {
                    let f = x.floor();
                    let half = x - f == 0.5;
                    let j = match mode {
                        Rounding::RoundPreferFloor if half => f,
                        Rounding::RoundPreferCeil if half => f + 1.0,
                        Rounding::RoundPreferFloor | Rounding::RoundPreferCeil => x.round(),
                        Rounding::Floor => f,
                        Rounding::Ceil => x.ceil(),
                    };
                    [(j.clamp(0.0, last) as usize, 1.0), (0, 0.0)]
                }
                Interp::Linear => {
                    let x = x.clamp(0.0, last);
                    let x0 = x.floor() as usize;
                    let x1 = (x0 + 1).min(n - 1);
                    let t = x - x0 as f64;
                    [(x0, 1.0 - t), (x1, t)]
                }
            }
        })
        .collect()
}

/// A resize whose tap weights are `weight(t)` in `T`.
pub fn resize<T: Scalar>(r: &Resize, x: &Map<T>, weight: impl Fn(f64) -> T + Sync) -> Map<T> {
    let (ty, tx) = (resize_taps(r, x.h, 0), resize_taps(r, x.w, 1));
    let (oh, ow) = (ty.len(), tx.len());
    let mut out = Map::zeros(x.c, oh, ow);
    out.v
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(c, plane)| {
            let src = x.plane(c);
            for (y, wy) in ty.iter().enumerate() {
                for (xo, wx) in tx.iter().enumerate() {
                    let mut s = T::default();
                    for &(iy, a) in wy {
                        for &(ix, b) in wx {
                            if a != 0.0 && b != 0.0 {
                                s = s.mul_add(weight(a * b), src[iy * x.w + ix]);
                            }
                        }
                    }
                    plane[y * ow + xo] = s;
                }
            }
        });
    out
}

/// ONNX's DepthToSpace: output channel c, offset (i, j) in its block, from input channel
/// (i b + j) C' + c (DCR) or c b^2 + i b + j (CRD).
pub fn depth_to_space<T: Scalar>(x: &Map<T>, b: usize, crd: bool) -> Map<T> {
    let c2 = x.c / (b * b);
    let (oh, ow) = (x.h * b, x.w * b);
    let mut out = Map::zeros(c2, oh, ow);
    for c in 0..c2 {
        for i in 0..b {
            for j in 0..b {
                let from = if crd {
                    c * b * b + i * b + j
                } else {
                    (i * b + j) * c2 + c
                };
                let src = x.plane(from);
                for y in 0..x.h {
                    for xx in 0..x.w {
                        out.v[(c * oh + y * b + i) * ow + xx * b + j] = src[y * x.w + xx];
                    }
                }
            }
        }
    }
    out
}

/// ONNX's SpaceToDepth: output channel (i b + j) C + c holds offset (i, j) of every block
/// of input channel c.
pub fn space_to_depth<T: Scalar>(x: &Map<T>, b: usize) -> Map<T> {
    let (oh, ow) = (x.h / b, x.w / b);
    let mut out = Map::zeros(x.c * b * b, oh, ow);
    for i in 0..b {
        for j in 0..b {
            for c in 0..x.c {
                let to = (i * b + j) * x.c + c;
                let src = x.plane(c);
                for y in 0..oh {
                    for xx in 0..ow {
                        out.v[(to * oh + y) * ow + xx] = src[(y * b + i) * x.w + xx * b + j];
                    }
                }
            }
        }
    }
    out
}
