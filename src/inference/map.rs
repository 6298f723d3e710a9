//! Channel-major maps and what the kernels compute on (f64, or ring elements), with a
//! window's geometry and the direct convolution loops: the floor under the graph's float
//! path (`graph`), its matrix-product convolutions (`conv_gemm`) and the fixed-point oracle.

use rayon::prelude::*;

use crate::model::graph::{ConvOp, Window};

/// What the kernels compute on: f64, or ring elements (wrapping u64).
pub trait Scalar: Copy + Default + Send + Sync {
    /// self + w x.
    fn mul_add(self, w: Self, x: Self) -> Self;
    /// self + x.
    fn plus(self, x: Self) -> Self;
}

impl Scalar for f64 {
    fn mul_add(self, w: f64, x: f64) -> f64 {
        self + w * x
    }
    fn plus(self, x: f64) -> f64 {
        self + x
    }
}

impl Scalar for u64 {
    fn mul_add(self, w: u64, x: u64) -> u64 {
        self.wrapping_add(w.wrapping_mul(x))
    }
    fn plus(self, x: u64) -> u64 {
        self.wrapping_add(x)
    }
}

/// A channel-major map: `c` planes of `h` x `w`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Map<T = f64> {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub v: Vec<T>,
}

impl<T: Scalar> Map<T> {
    pub fn zeros(c: usize, h: usize, w: usize) -> Map<T> {
        Map {
            c,
            h,
            w,
            v: vec![T::default(); c * h * w],
        }
    }

    pub fn plane(&self, c: usize) -> &[T] {
        &self.v[c * self.h * self.w..(c + 1) * self.h * self.w]
    }

    /// `f(channel, value)` of every value.
    pub fn map(&self, f: impl Fn(usize, T) -> T) -> Map<T> {
        let hw = self.h * self.w;
        Map {
            v: self
                .v
                .iter()
                .enumerate()
                .map(|(i, &x)| f(i / hw, x))
                .collect(),
            ..*self
        }
    }
}

/// Output size of a pooling (or a convolution's) window over an h x w map.
pub fn window_dims(win: &Window, h: usize, w: usize) -> (usize, usize) {
    (out_len(h, win, 0), out_len(w, win, 1))
}

/// Output size of a transposed convolution of an h x w map.
pub fn conv_transpose_dims(c: &ConvOp, h: usize, w: usize) -> (usize, usize) {
    let win = &c.window;
    let size = |n: usize, a: usize| {
        ((n.max(1) - 1) * win.stride[a]
            + win.dilation[a] * (win.kernel[a] - 1)
            + c.output_padding[a]
            + 1)
        .saturating_sub(win.pads[a] + win.pads[a + 2])
    };
    (size(h, 0), size(w, 1))
}

/// Output size of a convolution (plain or transposed) of an h x w map.
pub fn conv_dims(c: &ConvOp, h: usize, w: usize) -> (usize, usize) {
    if c.transposed {
        conv_transpose_dims(c, h, w)
    } else {
        window_dims(&c.window, h, w)
    }
}

/// Output positions of a window on an axis of `n` (ONNX's floor rule); 0 where the window
/// does not fit once (refused before any run: `Graph::padded_size`, `GraphPlan::dims`).
fn out_len(n: usize, w: &Window, a: usize) -> usize {
    let span = w.dilation[a] * (w.kernel[a] - 1) + 1;
    (n + w.pads[a] + w.pads[a + 2])
        .checked_sub(span)
        .map_or(0, |d| d / w.stride[a] + 1)
}

/// Input positions a window's tap `t` reads for output `o` (None: padding).
pub(crate) fn tap(o: usize, t: usize, w: &Window, a: usize, n: usize) -> Option<usize> {
    let i = (o * w.stride[a] + t * w.dilation[a]) as isize - w.pads[a] as isize;
    (0..n as isize).contains(&i).then_some(i as usize)
}

/// A convolution of `x` with the shape of `c` and weights `w`, biases `b` (`c`'s layout).
pub fn conv<T: Scalar>(c: &ConvOp, w: &[T], b: &[T], x: &Map<T>) -> Map<T> {
    let win = &c.window;
    let (oh, ow) = window_dims(win, x.h, x.w);
    let [kh, kw] = win.kernel;
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let mut out = Map::zeros(c.cout, oh, ow);
    out.v
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(o, plane)| {
            plane.fill(b[o]);
            let g = o / cout_g;
            for ci in 0..cin_g {
                let src = x.plane(g * cin_g + ci);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = w[((o * cin_g + ci) * kh + ky) * kw + kx];
                        for y in 0..oh {
                            let Some(iy) = tap(y, ky, win, 0, x.h) else {
                                continue;
                            };
                            let row = &src[iy * x.w..(iy + 1) * x.w];
                            for (xo, d) in plane[y * ow..(y + 1) * ow].iter_mut().enumerate() {
                                if let Some(ix) = tap(xo, kx, win, 1, x.w) {
                                    *d = d.mul_add(wv, row[ix]);
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}

/// ONNX's ConvTranspose: each input value scatters its kernel into the output.
pub fn conv_transpose<T: Scalar>(c: &ConvOp, w: &[T], b: &[T], x: &Map<T>) -> Map<T> {
    let win = &c.window;
    let [kh, kw] = win.kernel;
    let [s0, s1] = win.stride;
    let [d0, d1] = win.dilation;
    let (oh, ow) = conv_transpose_dims(c, x.h, x.w);
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let (p0, p1) = (win.pads[0] as isize, win.pads[1] as isize);
    let mut out = Map::zeros(c.cout, oh, ow);
    out.v
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(o, plane)| {
            plane.fill(b[o]);
            let (g, oc) = (o / cout_g, o % cout_g);
            for ci in g * cin_g..(g + 1) * cin_g {
                let src = x.plane(ci);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wv = w[((ci * cout_g + oc) * kh + ky) * kw + kx];
                        for iy in 0..x.h {
                            let oy = (iy * s0 + ky * d0) as isize - p0;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            let dst = &mut plane[oy as usize * ow..(oy as usize + 1) * ow];
                            for (ix, &v) in src[iy * x.w..(iy + 1) * x.w].iter().enumerate() {
                                let ox = (ix * s1 + kx * d1) as isize - p1;
                                if (0..ow as isize).contains(&ox) {
                                    let d = &mut dst[ox as usize];
                                    *d = d.mul_add(wv, v);
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}
