//! A chain CNN (`model::cnn::Cnn`: DnCNN, FFDNet without its noise map) written as a graph,
//! so that the graph plan can be held to the CNN plan's bits (docs/graph.md, milestone 2;
//! milestone 8 would run chains this way).

use crate::model::cnn::Cnn;

use super::{ConvOp, Graph, Node, Op, Window};

impl Graph {
    /// The graph of `m`: its same-padded convolutions with a ReLU between two, inside its
    /// frame's pixel (un)shuffle, and `Sub(image, net)` for a residual model. A noise-map
    /// channel (FFDNet) is a second input, which a graph does not take: refused.
    pub fn from_cnn(m: &Cnn) -> Result<Graph, String> {
        if m.frame.noise_map {
            return Err(
                "a CNN with a noise-map channel (FFDNet) reads a second input; a graph reads \
                 the image only"
                    .into(),
            );
        }
        let r = m.frame.unshuffle;
        // The frame stacks sub-image (dy, dx) as channel dy + r dx; SpaceToDepth and
        // DepthToSpace use dy r + dx. The first conv's inputs and the last conv's outputs are
        // renumbered instead (a permutation of weights, so no value changes).
        let perm = |k: usize| (k % r) * r + k / r;
        let mut nodes = vec![Node {
            op: Op::Input,
            inputs: vec![],
        }];
        let mut push = |op: Op, x: usize| {
            nodes.push(Node {
                op,
                inputs: vec![x],
            });
            nodes.len() - 1
        };
        let mut x = 0;
        if r > 1 {
            x = push(Op::SpaceToDepth { block: r }, x);
        }
        let last = m.convs.len() - 1;
        for (i, c) in m.convs.iter().enumerate() {
            let taps = c.k * c.k;
            let mut w = c.w.clone();
            let mut b = c.b.clone();
            if i == 0 && r > 1 {
                for o in 0..c.cout {
                    for ci in 0..c.cin {
                        let from = (o * c.cin + perm(ci)) * taps;
                        let to = (o * c.cin + ci) * taps;
                        w[to..to + taps].copy_from_slice(&c.w[from..from + taps]);
                    }
                }
            }
            if i == last && r > 1 {
                let src = w.clone();
                let row = c.cin * taps;
                for o in 0..c.cout {
                    w[o * row..(o + 1) * row]
                        .copy_from_slice(&src[perm(o) * row..(perm(o) + 1) * row]);
                    b[o] = c.b[perm(o)];
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
            x = push(Op::Conv(conv), x);
            if i < last {
                x = push(Op::Relu, x);
            }
        }
        if r > 1 {
            x = push(
                Op::DepthToSpace {
                    block: r,
                    crd: false,
                },
                x,
            );
        }
        if m.meta.residual {
            nodes.push(Node {
                op: Op::Sub,
                inputs: vec![0, x],
            });
            x = nodes.len() - 1;
        }
        let g = Graph {
            nodes,
            output: x,
            sigma: m.meta.sigma,
            fixed_point: m.fixed_point,
            window: m.window,
        };
        g.validate(std::path::Path::new("chain"))
            .map_err(|e| e.to_string())?;
        Ok(g)
    }
}
