//! Seeded random graphs for tests (as `model::cnn::random_cnn` is for chains): every op kind,
//! He-scaled weights. The fixed-point oracle's tests, the secure graph's tests against that
//! oracle and the benchmarks draw their networks here.

use rand::{Rng, SeedableRng};

use crate::model::graph::{ConvOp, Coords, Graph, Interp, Node, Op, Resize, Rounding, Window};

pub fn win(k: usize, s: usize, p: usize) -> Window {
    Window {
        kernel: [k, k],
        stride: [s, s],
        dilation: [1, 1],
        pads: [p; 4],
    }
}

/// Random He-scaled weights, as the CNNs' tests use.
pub struct Net {
    pub rng: rand_chacha::ChaCha20Rng,
    pub nodes: Vec<Node>,
}

impl Net {
    pub fn new(seed: u64) -> Net {
        Net {
            rng: rand_chacha::ChaCha20Rng::seed_from_u64(seed),
            nodes: vec![Node {
                op: Op::Input,
                inputs: vec![],
            }],
        }
    }

    pub fn add(&mut self, op: Op, inputs: &[usize]) -> usize {
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
        });
        self.nodes.len() - 1
    }

    pub fn conv(
        &mut self,
        x: usize,
        cin: usize,
        cout: usize,
        window: Window,
        t: bool,
        g: usize,
    ) -> usize {
        let [kh, kw] = window.kernel;
        let fan = (if t { cout } else { cin }) / g * kh * kw;
        let r = (3.0 / fan as f64).sqrt();
        let rows = if t { cin } else { cout };
        let op = Op::Conv(ConvOp {
            cin,
            cout,
            groups: g,
            window,
            output_padding: [0, 0],
            transposed: t,
            w: (0..rows * fan).map(|_| self.rng.gen_range(-r..r)).collect(),
            b: (0..cout).map(|_| self.rng.gen_range(-0.05..0.05)).collect(),
        });
        self.add(op, &[x])
    }

    pub fn graph(self, output: usize) -> Graph {
        let g = Graph {
            nodes: self.nodes,
            output,
            colours: 1,
            sigma: 25.0,
            fixed_point: None,
            window: None,
        };
        g.validate(std::path::Path::new("test")).unwrap();
        g
    }
}

/// A graph with every op: a U-Net level (max pooling, concat skip, nearest and bilinear
/// up-sampling), a DRUNet step (stride-2 conv, transposed conv, residual add), a RED-CNN
/// shortcut through unpadded convs, LeakyReLU, PReLU, clip, an affine map, average pooling,
/// a pixel (un)shuffle, and convs chained with no activation (rescaled by Trunc steps).
pub fn every_op(seed: u64) -> Graph {
    let mut n = Net::new(seed);
    let c = 4;
    let a = n.conv(0, 1, c, win(3, 1, 1), false, 1);
    let a = n.add(Op::Relu, &[a]);
    // Down: max pooling and a stride-2 conv side by side.
    let p = n.add(
        Op::MaxPool {
            window: win(2, 2, 0),
        },
        &[a],
    );
    let d = n.conv(a, c, c, win(2, 2, 0), false, 1);
    let d = n.add(Op::LeakyRelu { alpha: 0.1 }, &[d]);
    let j = n.add(Op::Add, &[p, d]);
    let j = n.conv(j, c, c, win(3, 1, 1), false, c); // depthwise, no activation
    let j = n.conv(j, c, 2 * c, win(3, 1, 1), false, 1);
    let slope = vec![0.2; 2 * c];
    let j = n.add(Op::PRelu { slope }, &[j]);
    // Up: bilinear and a transposed conv, concatenated with the skip.
    let u1 = n.add(
        Op::Resize(Resize {
            scale: [2, 2],
            interp: Interp::Linear,
            coords: Coords::PytorchHalfPixel,
        }),
        &[j],
    );
    let u2 = n.conv(j, 2 * c, c, win(2, 2, 0), true, 1);
    let u3 = n.add(
        Op::Resize(Resize {
            scale: [2, 2],
            interp: Interp::Nearest(Rounding::Floor),
            coords: Coords::Asymmetric,
        }),
        &[j],
    );
    let cat = n.add(Op::Concat, &[u1, u2, u3, a]); // 2c + c + 2c + c
    let aff = n.add(
        Op::Affine {
            scale: vec![0.9; 6 * c],
            shift: vec![0.01],
        },
        &[cat],
    );
    let e = n.conv(aff, 6 * c, c, win(3, 1, 1), false, 1);
    let e = n.add(
        Op::Clip {
            lo: Some(-1.0),
            hi: Some(1.0),
        },
        &[e],
    );
    // RED-CNN: unpadded conv down, transposed back, shortcut.
    let r = n.conv(e, c, c, win(3, 1, 0), false, 1);
    let r = n.add(Op::Relu, &[r]);
    let r = n.conv(r, c, c, win(3, 1, 0), true, 1);
    let r = n.add(Op::Sub, &[e, r]);
    let r = n.add(
        Op::AvgPool {
            window: win(3, 1, 1),
            count_pad: false,
        },
        &[r],
    );
    let s2d = n.add(Op::SpaceToDepth { block: 2 }, &[r]);
    let s2d = n.conv(s2d, 4 * c, 4, win(3, 1, 1), false, 1);
    let out = n.add(
        Op::DepthToSpace {
            block: 2,
            crd: true,
        },
        &[s2d],
    );
    let out = n.add(Op::Sub, &[0, out]);
    n.graph(out)
}

/// Two activations each read by two convs whose results need different low bits (the
/// widest-reader rule of `ring::graph::width`): `a` by a conv feeding a ReLU (needed mod
/// 2^(ws + k)) and by one reaching the output linearly (needed at the output's width); `r` by a conv feeding
/// a ReLU and by two convs in a row feeding one (needed mod 2^(2 ws + k)). `wide_first`
/// puts the wider reader first in the graph, else last. Returns the graph and [a, r].
pub fn mixed_readers(seed: u64, wide_first: bool) -> (Graph, [usize; 2]) {
    let mut n = Net::new(seed);
    let c = 3;
    let a = n.conv(0, 1, c, win(3, 1, 1), false, 1);
    let a = n.add(Op::Relu, &[a]);
    let (p, q) = if wide_first {
        let p = n.conv(a, c, 1, win(3, 1, 1), false, 1);
        (p, n.conv(a, c, c, win(1, 1, 0), false, 1))
    } else {
        let q = n.conv(a, c, c, win(1, 1, 0), false, 1);
        (n.conv(a, c, 1, win(3, 1, 1), false, 1), q)
    };
    let r = n.add(Op::Relu, &[q]);
    let (u, v) = if wide_first {
        let u = n.conv(r, c, c, win(3, 1, 1), false, 1);
        (u, n.conv(r, c, c, win(1, 1, 0), false, 1))
    } else {
        let v = n.conv(r, c, c, win(1, 1, 0), false, 1);
        (n.conv(r, c, c, win(3, 1, 1), false, 1), v)
    };
    // No activation between the two convs: the second reads the first at s + ws.
    let u = n.conv(u, c, c, win(3, 1, 1), false, 1);
    let u = n.add(Op::Relu, &[u]);
    let v = n.add(Op::Relu, &[v]);
    let j = n.add(Op::Add, &[u, v]);
    let j = n.conv(j, c, 1, win(3, 1, 1), false, 1);
    let o = n.add(Op::Add, &[p, j]);
    (n.graph(o), [a, r])
}

/// One of the activations a random graph puts after a conv (or none).
pub fn activation(n: &mut Net, x: usize, c: usize) -> usize {
    match n.rng.gen_range(0..6) {
        0 | 1 => n.add(Op::Relu, &[x]),
        2 => {
            let alpha = n.rng.gen_range(0.01..0.3);
            n.add(Op::LeakyRelu { alpha }, &[x])
        }
        3 => {
            let slope = (0..c).map(|_| n.rng.gen_range(-0.5..0.5)).collect();
            n.add(Op::PRelu { slope }, &[x])
        }
        4 => {
            let lo = n.rng.gen_bool(0.7).then_some(-0.8);
            let hi = n.rng.gen_bool(0.7).then_some(1.2);
            n.add(Op::Clip { lo, hi }, &[x])
        }
        _ => x,
    }
}

/// A seeded random graph of every op kind (the seeds together use each one): 1 to 3 levels
/// of a U-Net-like net (down by max or average pooling, a stride-2 conv or a pixel unshuffle;
/// up by a transposed conv, a nearest or linear resize or a pixel shuffle), joined to the
/// skip of its level by an add or a concat, with dilated, grouped and unpadded convs,
/// affine maps and activations (or none) on the way, and a residual output half the time.
pub fn random_graph(seed: u64) -> Graph {
    let mut n = Net::new(seed);
    let c = n.rng.gen_range(2..=4);
    let x = n.conv(0, 1, c, win(3, 1, 1), false, 1);
    let mut x = activation(&mut n, x, c);
    let levels = n.rng.gen_range(1..=3);
    let mut skips = Vec::new();
    for _ in 0..levels {
        skips.push(x);
        x = match n.rng.gen_range(0..4) {
            0 => {
                let window = if n.rng.gen_bool(0.5) {
                    win(2, 2, 0)
                } else {
                    win(3, 2, 1)
                };
                n.add(Op::MaxPool { window }, &[x])
            }
            1 => {
                let count_pad = n.rng.gen_bool(0.5);
                let window = win(3, 2, 1);
                n.add(Op::AvgPool { window, count_pad }, &[x])
            }
            2 => n.conv(x, c, c, win(3, 2, 1), false, 1),
            _ => {
                let s = n.add(Op::SpaceToDepth { block: 2 }, &[x]);
                n.conv(s, 4 * c, c, win(1, 1, 0), false, 1)
            }
        };
        // The level's body: a dilated or grouped conv, maybe an affine map.
        let body = match n.rng.gen_range(0..3) {
            0 => {
                let mut w = win(3, 1, 2);
                w.dilation = [2, 2];
                n.conv(x, c, c, w, false, 1)
            }
            1 => n.conv(x, c, c, win(3, 1, 1), false, c),
            _ => {
                // RED-CNN: unpadded down, transposed back.
                let d = n.conv(x, c, c, win(3, 1, 0), false, 1);
                let d = activation(&mut n, d, c);
                n.conv(d, c, c, win(3, 1, 0), true, 1)
            }
        };
        let body = activation(&mut n, body, c);
        x = if n.rng.gen_bool(0.5) {
            n.add(Op::Add, &[x, body])
        } else {
            body
        };
        if n.rng.gen_bool(0.3) {
            let scale = (0..c).map(|_| n.rng.gen_range(0.5..1.5)).collect();
            let shift = vec![n.rng.gen_range(-0.1..0.1)];
            x = n.add(Op::Affine { scale, shift }, &[x]);
        }
    }
    for skip in skips.into_iter().rev() {
        x = match n.rng.gen_range(0..5) {
            0 => n.conv(x, c, c, win(2, 2, 0), true, 1),
            1 => n.conv(x, c, c, win(4, 2, 1), true, 1),
            2 | 3 => {
                let interp = if n.rng.gen_bool(0.5) {
                    Interp::Linear
                } else {
                    Interp::Nearest(Rounding::RoundPreferFloor)
                };
                let r = Resize {
                    scale: [2, 2],
                    interp,
                    coords: Coords::HalfPixel,
                };
                n.add(Op::Resize(r), &[x])
            }
            _ => {
                let u = n.conv(x, c, 4 * c, win(1, 1, 0), false, 1);
                n.add(
                    Op::DepthToSpace {
                        block: 2,
                        crd: false,
                    },
                    &[u],
                )
            }
        };
        x = if n.rng.gen_bool(0.5) {
            n.add(Op::Add, &[x, skip])
        } else {
            let cat = n.add(Op::Concat, &[x, skip]);
            n.conv(cat, 2 * c, c, win(3, 1, 1), false, 1)
        };
        x = activation(&mut n, x, c);
    }
    let out = n.conv(x, c, 1, win(3, 1, 1), false, 1);
    let out = if n.rng.gen_bool(0.5) {
        n.add(Op::Sub, &[0, out])
    } else {
        out
    };
    n.graph(out)
}
