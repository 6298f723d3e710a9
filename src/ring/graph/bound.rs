//! How far the fixed-point oracle may be from float, node by node (docs/graph.md, "Error
//! bound"). For every step of a plan and every channel of its output, two numbers in the
//! float run's normalised domain: `magnitude` bounds |float value| and `error` bounds
//! |oracle value (decoded at the step's scale) - float value|. They are derived from the
//! plan, the float weights and the input's range alone, before anything runs:
//!
//! - the input: its encoding at `s` rounds, half an ulp;
//! - a floor (a `Trunc`, a ReLU-like circuit dropping bits) adds less than one ulp at `s`;
//! - a weight or constant adds its own encoding error times its input's magnitude
//!   (float magnitude plus error: the oracle multiplies its own value);
//! - a linear map passes errors on through the sum of |w| of one output (an L1 gain, per
//!   output channel; a transposed conv's output is reached by one phase of its taps);
//! - a join adds its inputs' bounds; max, ReLU and clip are 1-Lipschitz; a leaky ReLU is
//!   max(1, |slope|)-Lipschitz.
//!
//! The bound holds while no circuit's input is out of its k-bit range (the oracle counts
//! those) and is a worst case over every input of that range: errors of one sign meeting
//! weights of that sign everywhere. Random weights cancel, so on deep graphs the bound is
//! far above what is measured (numbers in docs/graph.md); on a shallow graph it is reached.

use crate::model::cnn::{denormalize, normalize};
use crate::model::graph::{ConvOp, Graph, Interp, Op, Resize};
use crate::model::preprocess::Preprocess;
use crate::ring::fixed::{decode, encode};

use super::{GraphPlan, Kind};
use crate::ring::cnn::CnnFixed;

/// Per channel: |float| ≤ `magnitude`, |oracle - float| ≤ `error` (normalised units).
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub magnitude: Vec<f64>,
    pub error: Vec<f64>,
}

impl Bound {
    pub fn uniform(c: usize, magnitude: f64, error: f64) -> Bound {
        Bound {
            magnitude: vec![magnitude; c],
            error: vec![error; c],
        }
    }

    /// The largest error over channels.
    pub fn max_error(&self) -> f64 {
        self.error.iter().copied().fold(0.0, f64::max)
    }

    fn each(&self, f: impl Fn(f64, f64) -> (f64, f64)) -> Bound {
        let (magnitude, error) = self
            .magnitude
            .iter()
            .zip(&self.error)
            .map(|(&m, &e)| f(m, e))
            .unzip();
        Bound { magnitude, error }
    }

    /// Channels `from[c]` of `self` taken as channel `c` (public rearrangements).
    fn pick(&self, from: impl Iterator<Item = usize>) -> Bound {
        let (magnitude, error) = from.map(|c| (self.magnitude[c], self.error[c])).unzip();
        Bound { magnitude, error }
    }
}

fn ulp(f: u32) -> f64 {
    (-(f as f64)).exp2()
}

/// |decode(encode(v, f)) - v|: what encoding `v` at `f` fractional bits loses.
fn enc_err(v: f64, f: u32) -> f64 {
    (decode(encode(v, f), f) - v).abs()
}

/// The bound of every step of `plan` (made from `g`) for inputs of magnitude at most
/// `input_max` (normalised: an image of 0..255 under `Preprocess` p gives p.noise_scale).
pub fn error_bounds(g: &Graph, plan: &GraphPlan, input_max: f64) -> Vec<Bound> {
    let mut origin = vec![None; plan.steps.len()];
    for (i, &st) in plan.nodes.iter().enumerate() {
        origin[st] = Some(i);
    }
    let mut out: Vec<Bound> = Vec::with_capacity(plan.steps.len());
    for (i, st) in plan.steps.iter().enumerate() {
        let b = match st.kind {
            Kind::Input { channels } => {
                Bound::uniform(channels, input_max, ulp(plan.params.s) / 2.0)
            }
            // sigma/255 of a sigma on the 0..255 scale.
            Kind::NoiseMap { channels, .. } => {
                Bound::uniform(channels, 1.0, ulp(plan.params.s) / 2.0)
            }
            _ => {
                let ins: Vec<&Bound> = st.inputs.iter().map(|&t| &out[t]).collect();
                let op = origin[i].map(|n| &g.nodes[n].op);
                step_bound(plan.params, &st.kind, op, &ins, st.scale)
            }
        };
        out.push(b);
    }
    out
}

/// One step's bound from its inputs' (`op`: the graph node it computes; none for a
/// `Trunc`), at output scale `scale`. With inputs of error 0 it is the step's own rounding.
pub fn step_bound(p: CnnFixed, kind: &Kind, op: Option<&Op>, ins: &[&Bound], scale: u32) -> Bound {
    // A floor that drops bits (sh > 0) loses less than an ulp at s; sh = 0 keeps the value.
    let floor = |sh: u32| if sh > 0 { ulp(p.s) } else { 0.0 };
    let at = |v: &[f64], c: usize| v[if v.len() == 1 { 0 } else { c }];
    match (kind, op) {
        (Kind::Trunc { sh }, _) => ins[0].each(|m, e| (m, e + floor(*sh))),
        (Kind::Conv { .. }, Some(Op::Conv(c))) => conv(c, ins[0], p.ws, scale),
        (Kind::Add { .. } | Kind::Sub { .. }, _) => Bound {
            magnitude: zip_add(&ins[0].magnitude, &ins[1].magnitude),
            error: zip_add(&ins[0].error, &ins[1].error),
        },
        (Kind::Concat { .. }, _) => Bound {
            magnitude: ins.iter().flat_map(|b| b.magnitude.clone()).collect(),
            error: ins.iter().flat_map(|b| b.error.clone()).collect(),
        },
        (Kind::Affine { .. }, Some(Op::Affine { scale: a_s, shift })) => {
            let x = ins[0];
            let (magnitude, error) = (0..x.error.len())
                .map(|c| {
                    let (a, b) = (at(a_s, c), at(shift, c));
                    let (m, e) = (x.magnitude[c], x.error[c]);
                    (
                        a.abs() * m + b.abs(),
                        a.abs() * e + enc_err(a, p.ws) * (m + e) + enc_err(b, scale),
                    )
                })
                .unzip();
            Bound { magnitude, error }
        }
        (Kind::AvgPool { window, count_pad }, _) => {
            let all = window.kernel[0] * window.kernel[1];
            // n values (fewer where the window leaves the map) times q = enc(1/n):
            // q Σ(x̂ - x) + (q - 1/n) Σ x, for every divisor n the window can use.
            let ns: Vec<usize> = if *count_pad {
                vec![all]
            } else {
                (1..=all).collect()
            };
            let (ke, km) = ns.iter().fold((0.0f64, 0.0f64), |(ke, km), &n| {
                let q = decode(encode(1.0 / n as f64, p.ws), p.ws);
                let nf = n as f64;
                (ke.max(q * nf), km.max((q - 1.0 / nf).abs() * nf))
            });
            ins[0].each(|m, e| (m, ke * e + km * m))
        }
        (Kind::MaxPool { .. }, _) => ins[0].clone(),
        (Kind::Resize { r, bits }, _) => {
            let (ke, km) = resize_gains(r, *bits);
            ins[0].each(|m, e| (m, ke * e + km * m))
        }
        (Kind::DepthToSpace { block, crd }, _) => {
            let (b, c2) = (*block, ins[0].error.len() / (block * block));
            let x = ins[0];
            // An output channel holds values of b² input channels: the worst of them.
            let (magnitude, error) = (0..c2)
                .map(|c| {
                    (0..b * b)
                        .map(|ij| if *crd { c * b * b + ij } else { ij * c2 + c })
                        .fold((0.0f64, 0.0f64), |(m, e), c| {
                            (m.max(x.magnitude[c]), e.max(x.error[c]))
                        })
                })
                .unzip();
            Bound { magnitude, error }
        }
        (Kind::SpaceToDepth { block }, _) => {
            let c = ins[0].error.len();
            ins[0].pick((0..block * block * c).map(|o| o % c))
        }
        (Kind::Relu { sh }, _) => ins[0].each(|m, e| (m, e + floor(*sh))),
        (Kind::LeakyRelu { sh, .. }, Some(Op::LeakyRelu { alpha })) => {
            leaky(ins[0], |_| *alpha, floor(*sh), p.ws)
        }
        (Kind::PRelu { sh, .. }, Some(Op::PRelu { slope })) => {
            leaky(ins[0], |c| at(slope, c), floor(*sh), p.ws)
        }
        (Kind::Clip { .. }, Some(Op::Clip { lo, hi })) => {
            // min(max(x, lo), hi) is 1-Lipschitz in x, lo and hi together (max norm).
            let dl = lo.map_or(0.0, |v| enc_err(v, p.s));
            let dh = hi.map_or(0.0, |v| enc_err(v, p.s));
            let reach = match (lo, hi) {
                (Some(l), Some(h)) => Some(l.abs().max(h.abs())),
                _ => None,
            };
            let edge = lo.unwrap_or(0.0).abs().max(hi.unwrap_or(0.0).abs());
            ins[0].each(|m, e| (reach.unwrap_or(m.max(edge)), e.max(dl).max(dh)))
        }
        (k, o) => unreachable!("plan step {k:?} from graph op {o:?}"),
    }
}

fn zip_add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// t = floor(x̂) (at s), y = max(0, t) + â min(0, t): Lipschitz max(1, |â|) in t, plus the
/// slope's encoding error times |x|.
fn leaky(x: &Bound, slope: impl Fn(usize) -> f64, floor: f64, ws: u32) -> Bound {
    let (magnitude, error) = (0..x.error.len())
        .map(|c| {
            let a = slope(c);
            let a_hat = decode(encode(a, ws), ws);
            let (m, e) = (x.magnitude[c], x.error[c]);
            (
                a.abs().max(1.0) * m,
                a_hat.abs().max(1.0) * (e + floor) + enc_err(a, ws) * m,
            )
        })
        .unzip();
    Bound { magnitude, error }
}

/// A conv's output channel o: |b| + Σ|w| M and δb + Σ (|w| E + δw (M + E)) over the taps
/// one output position can meet (all of them for a conv; one phase of the stride for a
/// transposed conv, whose outputs each meet only the taps congruent to their position).
fn conv(c: &ConvOp, x: &Bound, ws: u32, f: u32) -> Bound {
    let [kh, kw] = c.window.kernel;
    let taps = kh * kw;
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let phases: Vec<Vec<usize>> = if c.transposed {
        let win = &c.window;
        let axis = |a: usize, k: usize| -> Vec<Vec<usize>> {
            let s = win.stride[a];
            (0..s)
                .map(|r| {
                    (0..k)
                        .filter(|&t| (t * win.dilation[a]) % s == (r + win.pads[a]) % s)
                        .collect()
                })
                .collect()
        };
        let (py, px) = (axis(0, kh), axis(1, kw));
        py.iter()
            .flat_map(|ys| {
                px.iter().map(move |xs| {
                    ys.iter()
                        .flat_map(|&y| xs.iter().map(move |&x| y * kw + x))
                        .collect()
                })
            })
            .collect()
    } else {
        vec![(0..taps).collect()]
    };
    let (magnitude, error) = (0..c.cout)
        .map(|o| {
            let g = o / cout_g;
            let (m, e) = phases.iter().fold((0.0f64, 0.0f64), |(wm, we), phase| {
                let (mut m, mut e) = (0.0, 0.0);
                for ci in 0..cin_g {
                    let xi = g * cin_g + ci;
                    let (xm, xe) = (x.magnitude[xi], x.error[xi]);
                    let row = if c.transposed {
                        xi * cout_g + o % cout_g
                    } else {
                        o * cin_g + ci
                    };
                    for &t in phase {
                        let wv = c.w[row * taps + t];
                        m += wv.abs() * xm;
                        e += wv.abs() * xe + enc_err(wv, ws) * (xm + xe);
                    }
                }
                (wm.max(m), we.max(e))
            });
            (c.b[o].abs() + m, enc_err(c.b[o], f) + e)
        })
        .unzip();
    Bound { magnitude, error }
}

/// Over a resize's output positions: the largest Σ t̂ (what the input's error is multiplied
/// by) and the largest Σ |t̂ - t| (what its magnitude is), t̂ the taps at `bits`. Axes of
/// 1 to 6 positions show every tap pattern, borders included (the taps repeat with the
/// scale's period).
fn resize_gains(r: &Resize, bits: u32) -> (f64, f64) {
    if let Interp::Nearest(_) = r.interp {
        return (1.0, 0.0);
    }
    let (mut ke, mut km) = (0.0f64, 0.0f64);
    for n in 1..=6 {
        let (ty, tx) = (
            crate::inference::graph::resize_taps(r, n, 0),
            crate::inference::graph::resize_taps(r, n, 1),
        );
        for wy in &ty {
            for wx in &tx {
                let (mut e, mut m) = (0.0, 0.0);
                for &(_, a) in wy {
                    for &(_, b) in wx {
                        if a != 0.0 && b != 0.0 {
                            let t = a * b;
                            e += decode(encode(t, bits), bits).abs();
                            m += enc_err(t, bits);
                        }
                    }
                }
                ke = ke.max(e);
                km = km.max(m);
            }
        }
    }
    (ke, km)
}

impl GraphPlan {
    /// The bound on the output's distance to float, in grey levels (the 0..255 scale), for
    /// images whose pixels are at most `top` in magnitude, preprocessed by `pre` (see
    /// [`error_bounds`]).
    pub fn output_bound(&self, g: &Graph, pre: &Preprocess, top: f64) -> f64 {
        let b = error_bounds(g, self, normalize(pre, top));
        denormalize(pre, b[self.output].max_error())
    }
}
