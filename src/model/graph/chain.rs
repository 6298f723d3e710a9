//! A chain CNN (`model::cnn::Cnn`: DnCNN, FFDNet with its noise map, gray or colour) written
//! as a graph: what the graph family runs for it, bit for bit the CNN plan's results.

use crate::model::cnn::Cnn;

use super::{ConvOp, Graph, Node, Op, Window};

impl Graph {
    /// The graph of `m`: its same-padded convolutions with a ReLU between two, inside its
    /// frame (the image's planes unshuffled into sub-images, the noise map concatenated
    /// after them, the sub-images shuffled back), and `Sub(image, net)` for a residual
    /// model. Its plan gives the CNN plan's bits (ring/graph/tests.rs).
    pub fn from_cnn(m: &Cnn) -> Result<Graph, String> {
        let (r, colours) = (m.frame.unshuffle, m.colours);
        // The frame stacks plane c's sub-image (dy, dx) as channel c r^2 + dx r + dy;
        // SpaceToDepth makes it channel (dy r + dx) C + c, and DepthToSpace reads it there.
        // The first conv's inputs and the last conv's outputs are renumbered instead (a
        // permutation of weights, so no value changes); the map's channels stay last.
        let subs = colours * r * r;
        let frame_of = |g: usize| {
            if g >= subs {
                return g;
            }
            let (t, c) = (g / colours, g % colours);
            c * r * r + (t % r) * r + t / r
        };
        let mut nodes = vec![Node {
            op: Op::Input,
            inputs: vec![],
        }];
        let mut push = |op: Op, inputs: Vec<usize>| {
            nodes.push(Node { op, inputs });
            nodes.len() - 1
        };
        let mut x = 0;
        if r > 1 {
            x = push(Op::SpaceToDepth { block: r }, vec![x]);
        }
        let maps = m.convs[0].cin - subs;
        if maps > 0 {
            let map = push(
                Op::NoiseMap {
                    channels: maps,
                    block: r,
                },
                vec![],
            );
            x = push(Op::Concat, vec![x, map]);
        }
        let last = m.convs.len() - 1;
        for (i, c) in m.convs.iter().enumerate() {
            let taps = c.k * c.k;
            let mut w = c.w.clone();
            let mut b = c.b.clone();
            if i == 0 {
                for o in 0..c.cout {
                    for ci in 0..c.cin {
                        let from = (o * c.cin + frame_of(ci)) * taps;
                        let to = (o * c.cin + ci) * taps;
                        w[to..to + taps].copy_from_slice(&c.w[from..from + taps]);
                    }
                }
            }
            if i == last {
                let src = w.clone();
                let row = c.cin * taps;
                for o in 0..c.cout {
                    let f = frame_of(o);
                    w[o * row..(o + 1) * row].copy_from_slice(&src[f * row..(f + 1) * row]);
                    b[o] = c.b[f];
                }
            }
            let p = (c.k - 1) / 2;
            let conv = ConvOp {
                cin: c.cin,
                cout: c.cout,
                groups: 1,
                window: Window {
                    kernel: [c.k, c.k],
                    stride: [1, 1],
                    dilation: [1, 1],
                    pads: [p; 4],
                },
                output_padding: [0, 0],
                transposed: false,
                w,
                b,
            };
            x = push(Op::Conv(conv), vec![x]);
            if i < last {
                x = push(Op::Relu, vec![x]);
            }
        }
        if r > 1 {
            x = push(
                Op::DepthToSpace {
                    block: r,
                    crd: false,
                },
                vec![x],
            );
        }
        if m.meta.residual {
            x = push(Op::Sub, vec![0, x]);
        }
        let g = Graph {
            nodes,
            output: x,
            colours,
            sigma: m.meta.sigma,
            fixed_point: m.fixed_point,
            window: m.window,
        };
        g.validate(std::path::Path::new("chain"))
            .map_err(|e| e.to_string())?;
        Ok(g)
    }
}
