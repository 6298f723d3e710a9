//! The fixed-point plan of a CNN graph and its plaintext oracle (docs/graph.md, milestone
//! 2): the integers the secure graph protocol is to compute. Every tensor has a scale
//! (fractional bits): the image enters at `s`; a convolution, an affine map or an average
//! multiplies by weights at `ws` and adds `ws`; a join aligns its inputs up to the larger
//! scale by shifts (exact); a ReLU-like circuit truncates back to `s` exactly
//! (`floor(z / 2^sh)`, `sh` = the input's scale - `s`); a comparison (max pooling, clip)
//! works at `s`. Where a scale would grow past what the ring holds for values below
//! 2^(k-1-s), an explicit `Trunc` step (the rescaling circuit, without the ReLU) brings its
//! input back to `s` first. Nothing is probabilistic: the oracle is exact integer arithmetic
//! mod 2^64, and its distance to float is the encodings' and the floors' (tested below).

pub mod bound;
pub mod conv;
pub mod costs;
pub mod uses;
pub mod width;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::Array2;

use crate::inference::graph::{self as kern, Map};
use crate::model::cnn::{denormalize, normalize};
use crate::model::graph::reach::Reach;
use crate::model::graph::{ConvOp, Graph, Inputs, Interp, MapInput, Op, Resize, Window};
use crate::model::preprocess::Preprocess;
use crate::ring::cnn::CnnFixed;
use crate::ring::fixed::{bits_signed, decode, encode, low_bits, out_of_range, relu_trunc};

pub use self::bound::{error_bounds, step_bound, Bound};
use self::uses::per_channel;

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// The image's planes (step 0).
    Input {
        channels: usize,
    },
    /// The noise map: `channels` planes at 1/`block` of the image's resolution.
    NoiseMap {
        channels: usize,
        block: usize,
    },
    /// floor(x / 2^sh), kept as a signed k-bit value: the exact rescaling circuit.
    Trunc {
        sh: u32,
    },
    /// A convolution (or transposed one): weights at `ws`, biases at the output's scale.
    Conv {
        op: ConvOp,
        w: Vec<u64>,
        b: Vec<u64>,
    },
    /// The inputs, each shifted left by its `shift` (scales aligned), added.
    Add {
        shift: [u32; 2],
    },
    Sub {
        shift: [u32; 2],
    },
    Concat {
        shift: Vec<u32>,
    },
    /// x a + b per channel (one value: all), `a` at `ws`, `b` at the output's scale.
    Affine {
        a: Vec<u64>,
        b: Vec<u64>,
    },
    /// The window's sum times 1/count at `ws`.
    AvgPool {
        window: Window,
        count_pad: bool,
    },
    /// max(a, b) = a + ReLU(b - a), in the window's order, at scale `s`.
    MaxPool {
        window: Window,
    },
    /// Tap weights at `bits` fractional bits (exact for whole power-of-two scales).
    Resize {
        r: Resize,
        bits: u32,
    },
    DepthToSpace {
        block: usize,
        crd: bool,
    },
    SpaceToDepth {
        block: usize,
    },
    /// max(0, floor(z / 2^sh)): at `s`.
    Relu {
        sh: u32,
    },
    /// t = floor(z / 2^sh), r = max(0, t): r 2^ws + alpha (t - r), at `s + ws`.
    LeakyRelu {
        sh: u32,
        alpha: u64,
    },
    PRelu {
        sh: u32,
        slope: Vec<u64>,
    },
    /// lo + ReLU(x - lo), then hi - ReLU(hi - y), at `s`.
    Clip {
        lo: Option<u64>,
        hi: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: Kind,
    pub inputs: Vec<usize>,
    /// Fractional bits of its output.
    pub scale: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GraphPlan {
    pub params: CnnFixed,
    pub steps: Vec<Step>,
    pub output: usize,
    /// The graph's total stride (an image is padded to a multiple).
    pub stride: [usize; 2],
    /// How many image rows above and below an output row it depends on (tiles' halos).
    pub reach: Reach,
    /// The step that computes each node of the graph (the others are `Trunc` steps).
    pub nodes: Vec<usize>,
}

impl GraphPlan {
    /// The plan of `g` at `params`, with its rescalings placed.
    pub fn from_graph(g: &Graph, params: CnnFixed) -> Result<GraphPlan, String> {
        params.validate()?;
        let stride = g.total_stride()?;
        let reach = g.reach(0)?;
        let mut b = Builder {
            p: params,
            steps: vec![Step {
                kind: Kind::Input {
                    channels: g.colours,
                },
                inputs: vec![],
                scale: params.s,
            }],
            truncated: HashMap::new(),
        };
        let mut at = vec![0; g.nodes.len()];
        for (i, node) in g.nodes.iter().enumerate().skip(1) {
            let ins: Vec<usize> = node.inputs.iter().map(|&t| at[t]).collect();
            at[i] = b.node(&node.op, &ins);
        }
        let mut plan = GraphPlan {
            params,
            output: at[g.output],
            steps: b.steps,
            stride,
            reach,
            nodes: at,
        };
        plan.per_channel_values();
        Ok(plan)
    }

    /// Bits of the output the receiver reads: held mod 2^out_bits, as a CNN chain's
    /// ([`CnnFixed::out_bits_at`] of the output step's scale), so that the products that
    /// reach it are opened at about the width of every other, not at 64.
    pub fn out_bits(&self) -> u32 {
        self.params.out_bits_at(self.steps[self.output].scale)
    }

    /// How far the output is shifted left so that its out_bits fill the word.
    pub fn out_shift(&self) -> u32 {
        64 - self.out_bits()
    }

    /// Scale of the output as the receiver decodes it: the output step's, shifted.
    pub fn out_scale(&self) -> u32 {
        self.steps[self.output].scale + self.out_shift()
    }

    /// The job's output from the output step's map (or a share of it: linear, so each
    /// party applies it to its own): shifted left by [`Self::out_shift`], so the bits above
    /// out_bits, which shares do not agree on, are gone. Returns how many values leave the
    /// signed out_bits range (plain values only).
    pub fn output_of(&self, out: &mut Map<u64>) -> u64 {
        crate::ring::fixed::hold_at_top(&mut out.v, self.out_shift())
    }

    /// Planes of the image it takes and gives.
    pub fn colours(&self) -> usize {
        match self.steps[0].kind {
            Kind::Input { channels } => channels,
            _ => unreachable!("step 0 is the input"),
        }
    }

    /// What its input holds (the map's node: its step).
    pub fn inputs(&self) -> Inputs {
        let map = self
            .steps
            .iter()
            .enumerate()
            .find_map(|(node, st)| match st.kind {
                Kind::NoiseMap { channels, block } => Some(MapInput {
                    node,
                    channels,
                    block,
                }),
                _ => None,
            });
        Inputs {
            colours: self.colours(),
            map,
        }
    }

    /// A padded input ([`Inputs::len`] values) as the maps of the steps that hold it.
    pub fn input_maps<T: kern::Scalar>(
        &self,
        input: &[T],
        h: usize,
        w: usize,
    ) -> Vec<(usize, Map<T>)> {
        kern::input_maps(self.inputs(), input, h, w)
    }

    /// Rescaling circuits the plan placed (each a circuit run per value of its map).
    pub fn truncations(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.kind, Kind::Trunc { .. }))
            .count()
    }
}

struct Builder {
    p: CnnFixed,
    steps: Vec<Step>,
    /// Steps already truncated to `s` (a map read by two consumers is rescaled once).
    truncated: HashMap<usize, usize>,
}

impl Builder {
    fn scale(&self, t: usize) -> u32 {
        self.steps[t].scale
    }

    /// Largest scale a map may have: values below 2^(k-1-s) in magnitude, as a truncated
    /// activation's, then still fit in 63 bits.
    fn max_scale(&self) -> u32 {
        62 - (self.p.k - 1).saturating_sub(self.p.s)
    }

    fn push(&mut self, kind: Kind, inputs: Vec<usize>, scale: u32) -> usize {
        self.steps.push(Step {
            kind,
            inputs,
            scale,
        });
        self.steps.len() - 1
    }

    /// `t` at scale `s` (a `Trunc` step unless it is there already).
    fn at_s(&mut self, t: usize) -> usize {
        let f = self.scale(t);
        if f == self.p.s {
            return t;
        }
        if let Some(&done) = self.truncated.get(&t) {
            return done;
        }
        let done = self.push(Kind::Trunc { sh: f - self.p.s }, vec![t], self.p.s);
        self.truncated.insert(t, done);
        done
    }

    /// `t`, rescaled first when multiplying it by `bits` more would pass the largest scale.
    fn room(&mut self, t: usize, bits: u32) -> usize {
        if self.scale(t) + bits > self.max_scale() {
            self.at_s(t)
        } else {
            t
        }
    }

    /// Inputs aligned up to the larger scale: their shifts and that scale.
    fn align(&self, ins: &[usize]) -> (Vec<u32>, u32) {
        let f = ins.iter().map(|&t| self.scale(t)).max().unwrap_or(self.p.s);
        (ins.iter().map(|&t| f - self.scale(t)).collect(), f)
    }

    fn node(&mut self, op: &Op, ins: &[usize]) -> usize {
        let (s, ws) = (self.p.s, self.p.ws);
        let enc = |v: &[f64], f: u32| v.iter().map(|&x| encode(x, f)).collect::<Vec<u64>>();
        match op {
            Op::Input => unreachable!("node 0 only"),
            &Op::NoiseMap { channels, block } => {
                self.push(Kind::NoiseMap { channels, block }, vec![], s)
            }
            Op::Conv(c) => {
                // A conv reads at most s + ws (one deferred truncation), else from s.
                let x = if self.scale(ins[0]) > s + ws {
                    self.at_s(ins[0])
                } else {
                    self.room(ins[0], ws)
                };
                let f = self.scale(x) + ws;
                let public = ConvOp {
                    w: Vec::new(),
                    b: Vec::new(),
                    ..c.clone()
                };
                let kind = Kind::Conv {
                    op: public,
                    w: enc(&c.w[..], ws),
                    b: enc(&c.b[..], f),
                };
                self.push(kind, vec![x], f)
            }
            Op::Add | Op::Sub | Op::Concat => {
                let (shift, f) = self.align(ins);
                let kind = match op {
                    Op::Add => Kind::Add {
                        shift: [shift[0], shift[1]],
                    },
                    Op::Sub => Kind::Sub {
                        shift: [shift[0], shift[1]],
                    },
                    _ => Kind::Concat { shift },
                };
                self.push(kind, ins.to_vec(), f)
            }
            Op::Affine { scale, shift } => {
                let x = self.room(ins[0], ws);
                let f = self.scale(x) + ws;
                let kind = Kind::Affine {
                    a: enc(&scale[..], ws),
                    b: enc(&shift[..], f),
                };
                self.push(kind, vec![x], f)
            }
            Op::AvgPool { window, count_pad } => {
                let x = self.room(ins[0], ws);
                let f = self.scale(x) + ws;
                let kind = Kind::AvgPool {
                    window: *window,
                    count_pad: *count_pad,
                };
                self.push(kind, vec![x], f)
            }
            Op::MaxPool { window } => {
                let x = self.at_s(ins[0]);
                self.push(Kind::MaxPool { window: *window }, vec![x], s)
            }
            Op::Resize(r) => {
                let bits = match r.interp {
                    Interp::Nearest(_) => 0,
                    Interp::Linear => exact_bits(r).unwrap_or(ws),
                };
                let x = self.room(ins[0], bits);
                let f = self.scale(x) + bits;
                self.push(Kind::Resize { r: *r, bits }, vec![x], f)
            }
            Op::DepthToSpace { block, crd } => {
                let f = self.scale(ins[0]);
                let kind = Kind::DepthToSpace {
                    block: *block,
                    crd: *crd,
                };
                self.push(kind, ins.to_vec(), f)
            }
            Op::SpaceToDepth { block } => {
                let f = self.scale(ins[0]);
                self.push(Kind::SpaceToDepth { block: *block }, ins.to_vec(), f)
            }
            Op::Relu => {
                let sh = self.scale(ins[0]) - s;
                self.push(Kind::Relu { sh }, ins.to_vec(), s)
            }
            Op::LeakyRelu { alpha } => {
                let sh = self.scale(ins[0]) - s;
                let kind = Kind::LeakyRelu {
                    sh,
                    alpha: encode(*alpha, ws),
                };
                self.push(kind, ins.to_vec(), s + ws)
            }
            Op::PRelu { slope } => {
                let sh = self.scale(ins[0]) - s;
                let kind = Kind::PRelu {
                    sh,
                    slope: enc(&slope[..], ws),
                };
                self.push(kind, ins.to_vec(), s + ws)
            }
            Op::Clip { lo, hi } => {
                let x = self.at_s(ins[0]);
                let kind = Kind::Clip {
                    lo: lo.map(|v| encode(v, s)),
                    hi: hi.map(|v| encode(v, s)),
                };
                self.push(kind, vec![x], s)
            }
        }
    }
}

/// Fractional bits that hold every 2-D tap weight of a linear resize exactly (at most 16),
/// if any do.
fn exact_bits(r: &Resize) -> Option<u32> {
    // The taps repeat with the scale's period: two periods of a long axis show them all.
    let ty = kern::resize_taps(r, 4, 0);
    let tx = kern::resize_taps(r, 4, 1);
    (0..=16).find(|&e| {
        let m = (e as f64).exp2();
        ty.iter().flatten().all(|&(_, a)| {
            tx.iter()
                .flatten()
                .all(|&(_, b)| (a * b * m).fract() == 0.0)
        })
    })
}

/// The oracle's result: the output map held at the word's top ([`GraphPlan::output_of`], at
/// [`GraphPlan::out_scale`]), and the values a circuit saw outside the k-bit range it keeps
/// and the outputs outside out_bits (the secure run would wrap them as the oracle does).
pub struct GraphRun {
    pub output: Map<u64>,
    pub out_of_range: u64,
}

/// Runs the plan on an encoded input (h x w at scale `s`, sides multiples of the stride).
pub fn run(plan: &GraphPlan, input: &[u64], h: usize, w: usize) -> GraphRun {
    run_each(plan, input, h, w, |_, _| {})
}

/// [`run`], showing `each` every step's output (step index, map) as it is made.
pub fn run_each(
    plan: &GraphPlan,
    input: &[u64],
    h: usize,
    w: usize,
    mut each: impl FnMut(usize, &Map<u64>),
) -> GraphRun {
    assert_eq!(
        input.len(),
        plan.inputs().len(h, w),
        "image planes, then map channels"
    );
    let p = plan.params;
    let n = plan.steps.len();
    let mut last = vec![0; n];
    for (i, st) in plan.steps.iter().enumerate() {
        st.inputs.iter().for_each(|&t| last[t] = i);
    }
    last[plan.output] = usize::MAX;
    let oor = AtomicU64::new(0);
    let count = |v: bool| {
        if v {
            oor.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut maps: Vec<Option<Map<u64>>> = vec![None; n];
    for (at, m) in plan.input_maps(input, h, w) {
        maps[at] = Some(m);
    }
    for (i, st) in plan.steps.iter().enumerate().skip(1) {
        if maps[i].is_some() {
            continue;
        }
        let ins: Vec<&Map<u64>> = st
            .inputs
            .iter()
            .map(|&t| maps[t].as_ref().expect("made before and not yet dropped"))
            .collect();
        let out = step(&st.kind, &ins, p, &count);
        each(i, &out);
        maps[i] = Some(out);
        for &t in &st.inputs {
            if last[t] == i {
                maps[t] = None;
            }
        }
    }
    let mut output = maps[plan.output].take().expect("the output is kept");
    let wrapped = plan.output_of(&mut output);
    GraphRun {
        output,
        out_of_range: oor.into_inner() + wrapped,
    }
}

/// floor(z / 2^sh) as the circuit keeps it: k signed bits.
fn trunc(p: CnnFixed, sh: u32, z: u64, count: &(impl Fn(bool) + Sync)) -> u64 {
    count(out_of_range(sh, p.k, z));
    bits_signed(low_bits(z, sh + p.k), sh, p.k)
}

/// max(0, floor(z / 2^sh)), counted.
fn relu(p: CnnFixed, sh: u32, z: u64, count: &(impl Fn(bool) + Sync)) -> u64 {
    count(out_of_range(sh, p.k, z));
    relu_trunc(sh, p.k, z)
}

fn step(kind: &Kind, ins: &[&Map<u64>], p: CnnFixed, count: &(impl Fn(bool) + Sync)) -> Map<u64> {
    if let Some(out) = linear_step(kind, ins, p) {
        return out;
    }
    let x = ins[0];
    match kind {
        Kind::Trunc { sh } => x.map(|_, v| trunc(p, *sh, v, count)),
        Kind::Conv { op, w, b } if op.transposed => kern::conv_transpose(op, w, b, x),
        Kind::Conv { op, w, b } => kern::conv(op, w, b, x),
        Kind::Affine { a, b } => x.map(|c, v| {
            v.wrapping_mul(per_channel(a, c))
                .wrapping_add(per_channel(b, c))
        }),
        Kind::MaxPool { window } => kern::pool(window, x, |vals, _| {
            vals[1..].iter().fold(vals[0], |m, &v| {
                m.wrapping_add(relu(p, 0, v.wrapping_sub(m), count))
            })
        }),
        Kind::Relu { sh } => x.map(|_, v| relu(p, *sh, v, count)),
        Kind::LeakyRelu { sh, alpha } => x.map(|_, v| leaky(p, *sh, *alpha, v, count)),
        Kind::PRelu { sh, slope } => x.map(|c, v| leaky(p, *sh, per_channel(slope, c), v, count)),
        Kind::Clip { lo, hi } => x.map(|_, v| {
            let v = lo.map_or(v, |l| l.wrapping_add(relu(p, 0, v.wrapping_sub(l), count)));
            hi.map_or(v, |h| h.wrapping_sub(relu(p, 0, h.wrapping_sub(v), count)))
        }),
        _ => unreachable!("linear steps are made above"),
    }
}

/// A step that is a public linear map of its inputs (joins with their aligning shifts,
/// average pooling, resizes, pixel (un)shuffles): the oracle applies it to the values, each
/// server to its own shares, so both compute it here. `None` for the other steps.
pub fn linear_step(kind: &Kind, ins: &[&Map<u64>], p: CnnFixed) -> Option<Map<u64>> {
    let x = ins[0];
    let shifted = |m: &Map<u64>, by: u32| m.map(|_, v| v << by);
    Some(match kind {
        Kind::Add { shift } => kern::zip(x, ins[1], |a, b| {
            (a << shift[0]).wrapping_add(b << shift[1])
        }),
        Kind::Sub { shift } => kern::zip(x, ins[1], |a, b| {
            (a << shift[0]).wrapping_sub(b << shift[1])
        }),
        Kind::Concat { shift } => {
            let parts: Vec<Map<u64>> = ins.iter().zip(shift).map(|(m, &s)| shifted(m, s)).collect();
            kern::concat(&parts.iter().collect::<Vec<_>>())
        }
        Kind::AvgPool { window, count_pad } => kern::pool(window, x, |vals, all| {
            let n = if *count_pad { all } else { vals.len() };
            let sum = vals.iter().fold(0u64, |s, &v| s.wrapping_add(v));
            sum.wrapping_mul(encode(1.0 / n as f64, p.ws))
        }),
        Kind::Resize { r, bits } => kern::resize(r, x, |t| encode(t, *bits)),
        Kind::DepthToSpace { block, crd } => kern::depth_to_space(x, *block, *crd),
        Kind::SpaceToDepth { block } => kern::space_to_depth(x, *block),
        _ => return None,
    })
}

/// t = floor(z / 2^sh) and r = max(0, t) (the secure run: two circuits); r 2^ws + slope (t - r).
fn leaky(p: CnnFixed, sh: u32, slope: u64, z: u64, count: &(impl Fn(bool) + Sync)) -> u64 {
    let t = trunc(p, sh, z, count);
    let r = if (t as i64) < 0 { 0 } else { t };
    (r << p.ws).wrapping_add(slope.wrapping_mul(t.wrapping_sub(r)))
}

/// An h x w image's sides rounded up to multiples of `stride` (what a graph runs on).
pub fn padded_dims(stride: [usize; 2], h: usize, w: usize) -> (usize, usize) {
    (
        h.div_ceil(stride[0]) * stride[0],
        w.div_ceil(stride[1]) * stride[1],
    )
}

pub use crate::model::graph::pad_edges;

/// The whole fixed-point graph on an image (0..255; a colour one's planes stacked,
/// (C h) x w) and its noise map (sigma/255 per position at the map's block; empty without
/// one): encoded at `s`, padded by replication to the stride, run, cropped, decoded.
/// Returns the image and the out-of-range count.
pub fn denoise(
    plan: &GraphPlan,
    image: &Array2<f64>,
    map: &[f64],
    pre: &Preprocess,
) -> (Array2<f64>, u64) {
    let (rows, w) = image.dim();
    let h = rows / plan.colours();
    let (ph, pw) = padded_dims(plan.stride, h, w);
    let s = plan.params.s;
    let enc: Vec<u64> = image
        .iter()
        .map(|&p| encode(normalize(pre, p), s))
        .chain(map.iter().map(|&v| encode(v, s)))
        .collect();
    let input = plan.inputs().pad(&enc, (h, w), (ph, pw));
    let r = run(plan, &input, ph, pw);
    let f = plan.out_scale();
    let out = Array2::from_shape_fn((rows, w), |(y, x)| {
        let at = ((y / h) * ph + y % h) * pw + x;
        denormalize(pre, decode(r.output.v[at], f))
    });
    (out, r.out_of_range)
}

#[cfg(test)]
mod tests;
