use std::path::Path;

use super::*;

fn win(k: usize, s: usize, p: usize) -> Window {
    Window {
        kernel: [k, k],
        stride: [s, s],
        dilation: [1, 1],
        pads: [p; 4],
    }
}

fn conv(cin: usize, cout: usize, window: Window, transposed: bool) -> Op {
    let row = (if transposed { cout } else { cin }) * window.kernel[0] * window.kernel[1];
    let rows = if transposed { cin } else { cout };
    Op::Conv(ConvOp {
        cin,
        cout,
        groups: 1,
        window,
        output_padding: [0, 0],
        transposed,
        w: vec![0.1; rows * row],
        b: vec![0.0; cout],
    })
}

fn graph(nodes: Vec<(Op, Vec<usize>)>) -> Graph {
    let mut all = vec![Node {
        op: Op::Input,
        inputs: vec![],
    }];
    all.extend(nodes.into_iter().map(|(op, inputs)| Node { op, inputs }));
    Graph {
        output: all.len() - 1,
        nodes: all,
        colours: 1,
        sigma: 25.0,
        fixed_point: None,
        window: None,
    }
}

/// A two-level U-Net: conv, max pool, conv, nearest up-sampling, concatenated skip, conv,
/// residual.
fn unet() -> Graph {
    graph(vec![
        (conv(1, 4, win(3, 1, 1), false), vec![0]), // 1
        (Op::Relu, vec![1]),                        // 2
        (
            Op::MaxPool {
                window: win(2, 2, 0),
            },
            vec![2],
        ),
        (conv(4, 8, win(3, 1, 1), false), vec![3]), // 4
        (
            Op::Resize(Resize {
                scale: [2, 2],
                interp: Interp::Nearest(Rounding::Floor),
                coords: Coords::Asymmetric,
            }),
            vec![4],
        ), // 5
        (Op::Concat, vec![2, 5]),                   // 6: 12 channels
        (conv(12, 1, win(3, 1, 1), false), vec![6]), // 7
        (Op::Sub, vec![0, 7]),
    ])
}

#[test]
fn a_u_net_keeps_every_size_and_has_stride_two() {
    let g = unet();
    g.validate(Path::new("u.onnx")).unwrap();
    let s = g.shapes().unwrap();
    assert_eq!(
        s[3].h,
        Extent {
            stride: 2,
            delta: 0
        }
    );
    assert_eq!(s[6].c, 12);
    assert_eq!(g.total_stride().unwrap(), [2, 2]);
    // Odd sides are padded up to the stride.
    assert_eq!(g.padded_size(13, 9).unwrap(), (14, 10));
}

#[test]
fn red_cnn_shrinks_and_grows_back() {
    let g = graph(vec![
        (conv(1, 4, win(5, 1, 0), false), vec![0]), // H-4
        (conv(4, 4, win(5, 1, 0), false), vec![1]), // H-8
        (conv(4, 4, win(5, 1, 0), true), vec![2]),  // H-4
        (Op::Add, vec![3, 1]),
        (conv(4, 1, win(5, 1, 0), true), vec![4]), // H
        (Op::Add, vec![5, 0]),
    ]);
    g.validate(Path::new("r.onnx")).unwrap();
    let s = g.shapes().unwrap();
    let deltas: Vec<i64> = s.iter().map(|s| s.h.delta).collect();
    assert_eq!(deltas, [0, -4, -8, -4, -4, 0, 0]);
    // Below 9 rows the second conv has nothing left.
    assert!(g.padded_size(8, 20).unwrap_err().contains("too small"));
    assert_eq!(g.padded_size(9, 9).unwrap(), (9, 9));
}

#[test]
fn a_strided_conv_and_its_transposed_twin_give_the_image_back() {
    // DRUNet's down and up: stride-2 2x2 conv, stride-2 2x2 transposed conv.
    let g = graph(vec![
        (conv(1, 4, win(2, 2, 0), false), vec![0]),
        (conv(4, 4, win(3, 1, 1), false), vec![1]),
        (Op::Add, vec![1, 2]),
        (conv(4, 1, win(2, 2, 0), true), vec![3]),
    ]);
    g.validate(Path::new("d.onnx")).unwrap();
    assert_eq!(
        g.shapes().unwrap()[1].h,
        Extent {
            stride: 2,
            delta: 0
        }
    );
    assert_eq!(g.total_stride().unwrap(), [2, 2]);
}

#[test]
fn mismatched_joins_and_outputs_are_refused() {
    let path = Path::new("bad.onnx");
    let msg = |g: Graph| g.validate(path).unwrap_err().to_string();
    // A skip added across levels without up-sampling.
    let g = graph(vec![
        (conv(1, 1, win(3, 2, 1), false), vec![0]),
        (Op::Add, vec![0, 1]),
    ]);
    assert!(msg(g).contains("the sizes must agree"), "{}", "add");
    // An output of two channels.
    let g = graph(vec![(conv(1, 2, win(3, 1, 1), false), vec![0])]);
    assert!(msg(g).contains("1 channel(s) at the image's resolution expected"));
    // A node reading a tensor made after it.
    let mut g = unet();
    g.nodes[3].inputs = vec![5];
    assert!(msg(g).contains("not made before it"));
    // Weights that do not fit the shape.
    let mut g = unet();
    if let Op::Conv(c) = &mut g.nodes[1].op {
        c.w.pop();
    }
    assert!(msg(g).contains("weights and"));
    // Up-sampling above the image's resolution.
    let g = graph(vec![(conv(1, 1, win(2, 2, 0), true), vec![0])]);
    assert!(msg(g).contains("finer than the image"));
}

/// A pooling window that would hold padding only (a dilated 2-tap window with one pad each
/// side, over a map one row high) is refused for that image size, not run: it has no
/// maximum (the oracle had nothing to fold) and no mean.
#[test]
fn a_pooling_window_of_padding_only_is_refused() {
    let window = Window {
        kernel: [2, 2],
        stride: [1, 1],
        dilation: [2, 2],
        pads: [1; 4],
    };
    let g = graph(vec![(Op::MaxPool { window }, vec![0])]);
    g.validate(Path::new("pool.onnx")).unwrap();
    let e = g.padded_size(1, 5).unwrap_err();
    assert!(
        e.contains("a window of padding only along its height"),
        "{e}"
    );
    assert_eq!(g.padded_size(2, 5).unwrap(), (2, 5));
}

/// FFDNet's form: the image's planes and a noise map at half resolution, concatenated after
/// the unshuffled planes; its public description keeps the planes and the map. Two maps, a
/// map of no channel, planes other than 1 or 3, and an output of other planes are refused.
#[test]
fn a_noise_map_is_a_second_input_and_colour_planes_are_the_graphs() {
    let ffdnet = |colours: usize, maps: usize, out: usize| {
        let c = colours * 4;
        let nodes = vec![
            Node {
                op: Op::Input,
                inputs: vec![],
            },
            Node {
                op: Op::SpaceToDepth { block: 2 },
                inputs: vec![0],
            },
            Node {
                op: Op::NoiseMap {
                    channels: maps,
                    block: 2,
                },
                inputs: vec![],
            },
            Node {
                op: Op::Concat,
                inputs: vec![1, 2],
            },
            Node {
                op: conv(c + maps, out * 4, win(3, 1, 1), false),
                inputs: vec![3],
            },
            Node {
                op: Op::DepthToSpace {
                    block: 2,
                    crd: false,
                },
                inputs: vec![4],
            },
        ];
        Graph {
            output: nodes.len() - 1,
            nodes,
            colours,
            sigma: 25.0,
            fixed_point: None,
            window: None,
        }
    };
    let path = Path::new("ffdnet.onnx");
    for (colours, maps) in [(1, 1), (3, 1), (3, 3)] {
        let g = ffdnet(colours, maps, colours);
        g.validate(path).unwrap();
        let m = g.noise_map().unwrap();
        assert_eq!((m.node, m.channels, m.block), (2, maps, 2));
        // 5 x 7: the map covers 3 x 4 blocks, the last ones partial.
        assert_eq!(g.inputs().len(5, 7), colours * 35 + maps * 12);
        let back = g.public().graph(path).unwrap();
        assert_eq!((back.colours, back.noise_map()), (colours, Some(m)));
    }
    let err = |g: Graph| g.validate(path).unwrap_err().to_string();
    let mut two = ffdnet(1, 1, 1);
    two.nodes[1] = Node {
        op: Op::NoiseMap {
            channels: 4,
            block: 2,
        },
        inputs: vec![],
    };
    assert!(err(two).contains("more than one noise map"));
    assert!(err(ffdnet(1, 0, 1)).contains("0 channel(s)"));
    let mut planes = ffdnet(1, 1, 1);
    planes.colours = 2;
    assert!(err(planes).contains("2 colour planes"));
    assert!(err(ffdnet(3, 1, 1)).contains("3 channel(s) at the image's resolution expected"));
    // A gray graph's description written before colour reads as gray.
    let old = r#"{"nodes":[{"op":"Input","inputs":[]},{"op":"Relu","inputs":[0]}],"output":1,"sigma":25.0}"#;
    let p: super::public::PublicGraph = serde_json::from_str(old).unwrap();
    assert_eq!(p.graph(path).unwrap().colours, 1);
}
