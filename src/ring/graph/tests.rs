use ndarray::Array2;
use rand::{Rng, SeedableRng};

use super::*;
use crate::model::graph::{Coords, Node, Rounding};

fn win(k: usize, s: usize, p: usize) -> Window {
    Window {
        kernel: [k, k],
        stride: [s, s],
        dilation: [1, 1],
        pads: [p; 4],
    }
}

/// Random He-scaled weights, as the CNNs' tests use.
struct Net {
    rng: rand_chacha::ChaCha20Rng,
    nodes: Vec<Node>,
}

impl Net {
    fn new(seed: u64) -> Net {
        Net {
            rng: rand_chacha::ChaCha20Rng::seed_from_u64(seed),
            nodes: vec![Node {
                op: Op::Input,
                inputs: vec![],
            }],
        }
    }

    fn add(&mut self, op: Op, inputs: &[usize]) -> usize {
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
        });
        self.nodes.len() - 1
    }

    fn conv(
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

    fn graph(self, output: usize) -> Graph {
        let g = Graph {
            nodes: self.nodes,
            output,
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
fn every_op(seed: u64) -> Graph {
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

fn image(h: usize, w: usize, seed: u64) -> Array2<f64> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    Array2::from_shape_fn((h, w), |_| rng.gen_range(0.0..255.0))
}

fn worst(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The oracle agrees with float within the encodings' error: at 16 fractional bits within
/// 0.05 grey levels, at the defaults (s 10, ws 13, k 18) within 0.5, with no value out of
/// range; the plan places Trunc steps where convs chain without an activation.
#[test]
fn the_oracle_follows_float_on_every_op() {
    let pre = Preprocess::identity();
    for seed in [1, 2] {
        let g = every_op(seed);
        // 21 x 29: padded to 22 x 30 (stride 2).
        let img = image(21, 29, seed);
        let want = g.denoise_float(&img, &pre).unwrap();
        for (params, bound) in [
            (
                CnnFixed {
                    s: 16,
                    ws: 16,
                    k: 28,
                },
                0.05,
            ),
            (CnnFixed::default(), 0.5),
        ] {
            let plan = GraphPlan::from_graph(&g, params).unwrap();
            assert!(plan.truncations() > 0, "convs chained without a rescaling");
            let (got, oor) = denoise(&plan, &img, &pre);
            assert_eq!(oor, 0, "{params:?}");
            let err = worst(&got, &want);
            println!("seed {seed} {params:?}: largest error {err:.5} grey levels");
            assert!(err < bound, "{params:?}: {err}");
        }
    }
}

/// Max pooling is exact: the oracle's output is the largest encoded input of each window.
#[test]
fn max_pooling_is_the_exact_max() {
    let mut n = Net::new(3);
    let m = n.add(
        Op::MaxPool {
            window: win(3, 2, 1),
        },
        &[0],
    );
    let r = n.add(
        Op::Resize(Resize {
            scale: [2, 2],
            interp: Interp::Nearest(Rounding::Floor),
            coords: Coords::Asymmetric,
        }),
        &[m],
    );
    let g = n.graph(r);
    let plan = GraphPlan::from_graph(&g, CnnFixed::default()).unwrap();
    let (h, w) = (8, 10);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let x: Vec<u64> = (0..h * w)
        .map(|_| rng.gen_range(-5000i64..5000) as u64)
        .collect();
    let out = run(&plan, &x, h, w).output;
    for oy in 0..h / 2 {
        for ox in 0..w / 2 {
            let mut want = i64::MIN;
            for y in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                for xx in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                    want = want.max(x[y * w + xx] as i64);
                }
            }
            assert_eq!(out.v[2 * oy * w + 2 * ox] as i64, want, "({oy}, {ox})");
        }
    }
}

/// A leaky ReLU's negative side and a clip's bounds, against their definitions on the
/// truncated value.
#[test]
fn leaky_relu_and_clip_follow_their_definitions() {
    let p = CnnFixed::default();
    let never = |_: bool| {};
    for z in [-(5i64 << 20) - 77, -1, 0, 1 << 13, (3 << 22) + 5] {
        let t = z.div_euclid(1 << p.ws);
        let alpha = encode(0.25, p.ws) as i64;
        let want = if t < 0 { alpha * t } else { t << p.ws };
        assert_eq!(
            leaky(p, p.ws, alpha as u64, z as u64, &never) as i64,
            want,
            "{z}"
        );
    }
    let k = Kind::Clip {
        lo: Some(encode(-1.0, p.s)),
        hi: Some(encode(0.5, p.s)),
    };
    let x = Map {
        c: 1,
        h: 1,
        w: 3,
        v: vec![encode(-3.0, p.s), encode(0.25, p.s), encode(2.0, p.s)],
    };
    let y = step(&k, &[&x], p, &never);
    let want: Vec<u64> = [-1.0, 0.25, 0.5].iter().map(|&v| encode(v, p.s)).collect();
    assert_eq!(y.v, want);
}
