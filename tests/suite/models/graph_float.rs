//! Issue 47, milestone 1 (docs/graph.md): CNN graphs read from ONNX run in float as
//! onnxruntime runs them. The fixtures (a RED-CNN, a U-Net with max pooling and concatenated
//! skips, a DRUNet-like net with strided and transposed convs and residual adds, a LeakyReLU
//! variant with average pooling and a pixel (un)shuffle) are written by
//! scripts/make-graph-fixtures.py with the `onnx` helper API, with onnxruntime's outputs at
//! two image sizes (`make graph-fixtures`). What the importer still refuses is named by node
//! and op.

use crate::common;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Ix2};
use ndarray_npy::NpzReader;
use ppdenoise::import::onnx::proto::ModelProto;
use ppdenoise::import::onnx::{load, parse, Net};
use ppdenoise::model::graph::{Graph, Op};
use prost::Message;

const GRAPHS: [&str; 4] = ["redcnn", "unet", "drunet", "leaky"];

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("out/graph-fixtures");
    assert!(
        d.join("reference.npz").exists(),
        "{}: missing; run `make graph-fixtures` (onnx and onnxruntime from PyPI)",
        d.display()
    );
    d
}

fn graph(name: &str) -> Graph {
    match load(&dir().join(format!("{name}.onnx"))).unwrap() {
        Net::Graph(g) => g,
        other => panic!("{name} read as {other:?}"),
    }
}

fn reference(name: &str) -> Array2<f64> {
    let f = std::fs::File::open(dir().join("reference.npz")).unwrap();
    NpzReader::new(f).unwrap().by_name::<_, Ix2>(name).unwrap()
}

/// Largest difference relative to the reference's largest magnitude.
fn relative(got: &[f64], want: &Array2<f64>) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.1, "a degenerate reference output");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn every_fixture_graph_matches_onnxruntime_at_two_sizes() {
    if !common::have_graph_fixtures() {
        return;
    }
    for name in GRAPHS {
        let g = graph(name);
        for i in 0..2 {
            let x = reference(&format!("{name}_x{i}"));
            let want = reference(&format!("{name}_y{i}"));
            let (h, w) = x.dim();
            let input: Vec<f64> = x.iter().copied().collect();
            let out = g.run_float(&input, h, w).unwrap();
            assert_eq!((out.c, out.h, out.w), (1, h, w), "{name}");
            let err = relative(&out.v, &want);
            println!("{name} {h}x{w}: largest relative difference {err:.2e}");
            assert!(err < 1e-4, "{name} at {h}x{w}: {err:e}");
        }
    }
}

/// The ops the fixtures are meant to cover are there after import (a fixture that lost one
/// would test less than it says), and the batch norm after a conv was folded while the one
/// after a concat was not.
#[test]
fn the_fixtures_hold_the_ops_they_claim() {
    if !common::have_graph_fixtures() {
        return;
    }
    let names = |g: &Graph| -> Vec<&'static str> { g.nodes.iter().map(|n| n.op.name()).collect() };
    let want: [(&str, &[&str]); 4] = [
        ("redcnn", &["Conv", "ConvTranspose", "Add", "Relu"]),
        ("unet", &["MaxPool", "Concat", "Resize", "Affine", "Sub"]),
        ("drunet", &["ConvTranspose", "Add", "PRelu", "Clip", "Sub"]),
        (
            "leaky",
            &[
                "LeakyRelu",
                "AveragePool",
                "Affine",
                "SpaceToDepth",
                "DepthToSpace",
            ],
        ),
    ];
    for (name, ops) in want {
        let g = graph(name);
        let have = names(&g);
        for op in ops {
            assert!(have.contains(op), "{name} has no {op}: {have:?}");
        }
        assert!(!have.contains(&"BatchNormalization"));
    }
    let unet = graph("unet");
    let affines = unet
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Affine { .. }))
        .count();
    assert_eq!(affines, 1, "one batch norm folded, one kept");
    let drunet = graph("drunet");
    assert!(drunet.nodes.iter().any(|n| matches!(&n.op,
        Op::Conv(c) if c.groups == c.cin && c.groups > 1)));
    assert!(drunet.nodes.iter().any(|n| matches!(&n.op,
        Op::Conv(c) if c.window.stride == [2, 2] && !c.transposed)));
    assert_eq!(drunet.total_stride().unwrap(), [2, 2]);
    assert_eq!(unet.total_stride().unwrap(), [4, 4]);
}

/// A size that is not a multiple of the total stride is padded by replication and cropped:
/// the image's own pixels give the same output as the graph run on the padded image.
#[test]
fn odd_sizes_are_padded_by_replication_and_cropped() {
    if !common::have_graph_fixtures() {
        return;
    }
    let g = graph("unet");
    let (h, w) = (21, 30);
    let img = Array2::from_shape_fn((h, w), |(y, x)| ((y * 37 + x * 11) % 256) as f64);
    let pre = g.preprocess(25.0, false);
    let out = g.denoise_float(&img, &pre, &[]).unwrap();
    assert_eq!(out.dim(), (h, w));
    let (ph, pw) = g.padded_size(h, w).unwrap();
    assert_eq!((ph, pw), (24, 32));
    let padded: Vec<f64> = (0..ph)
        .flat_map(|y| (0..pw).map(move |x| (y.min(h - 1), x.min(w - 1))))
        .map(|p| img[p] / 255.0)
        .collect();
    let full = g.run_float(&padded, ph, pw).unwrap();
    for y in 0..h {
        for x in 0..w {
            assert!((out[(y, x)] - full.v[y * pw + x] * 255.0).abs() < 1e-9);
        }
    }
    let tiny = Array2::zeros((2, 2));
    let err = graph("redcnn").denoise_float(&tiny, &pre, &[]).unwrap_err();
    assert!(err.contains("too small"), "{err}");
}

fn refused(m: &ModelProto) -> String {
    parse(Path::new("bad.onnx"), &m.encode_to_vec())
        .unwrap_err()
        .to_string()
}

fn fixture_proto(name: &str) -> ModelProto {
    ModelProto::decode(
        std::fs::read(dir().join(format!("{name}.onnx")))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

/// What a CNN graph cannot hold is refused by node and op, with the reason.
#[test]
fn ops_outside_cnn_graphs_are_refused_by_node_with_the_reason() {
    if !common::have_graph_fixtures() {
        return;
    }
    let cases = [
        ("Relu", "InstanceNormalization", "statistics of the image"),
        ("Relu", "Sigmoid", "has no circuit"),
        ("MaxPool", "GlobalAveragePool", "whole image"),
        ("Concat", "Pad", "give the padding to the convolution"),
    ];
    for (first, to, why) in cases {
        let mut m = fixture_proto("unet");
        let n = m
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type == first)
            .unwrap();
        n.op_type = to.into();
        n.attribute.clear();
        let name = n.name.clone();
        let err = refused(&m);
        assert!(err.contains(&format!("node {name} ({to})")), "{err}");
        assert!(err.contains(why), "{err}");
    }
    // Resize by sizes: the output's size would be the example's.
    let mut m = fixture_proto("unet");
    let n = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Resize")
        .unwrap();
    n.input.push(n.input[2].clone());
    let err = refused(&m);
    assert!(err.contains("(sizes)"), "{err}");
    // A product of two maps.
    let mut m = fixture_proto("drunet");
    let g = m.graph.as_mut().unwrap();
    let n = g.node.iter_mut().find(|n| n.op_type == "Add").unwrap();
    n.op_type = "Mul".into();
    let err = refused(&m);
    assert!(err.contains("product of secret values"), "{err}");
}

/// `denoise --arith float` takes a CNN graph: its image is the library's float run, rounded
/// to 8 bits (an odd size, padded and cropped); other arithmetic is refused by name.
#[test]
fn denoise_runs_a_graph_in_float() {
    if !common::have_graph_fixtures() {
        return;
    }
    let model = dir().join("unet.onnx");
    let model = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("u.png");
    let img = "builtin:phantom:30";
    common::ok(&[
        "denoise",
        "--model",
        model,
        "--image",
        img,
        "--sigma",
        "25",
        "--arith",
        "float",
        "--out",
        out.to_str().unwrap(),
    ]);
    let got = ppdenoise::image::load(&out).unwrap().pixels;
    let noisy = ppdenoise::image::load_input(img).unwrap().pixels;
    let g = graph("unet");
    let want = g
        .denoise_float(&noisy, &g.preprocess(25.0, true), &[])
        .unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b.round().clamp(0.0, 255.0)).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1.0, "largest difference {worst} grey levels");
    assert!(
        got.iter().zip(&noisy).any(|(a, b)| a != b),
        "the network changed nothing"
    );
}

/// `denoise --arith fixed` takes a CNN graph (issue 47, milestone 2): its image is the graph
/// oracle's (ring::graph), rounded to 8 bits, with its out-of-range count and worst-case
/// bound in the summary; with too few bits kept (--cnn-act-bits 8), values leave the range
/// and the CNN path's warning is printed. Noise maps and tanh* stay refused.
#[test]
fn denoise_runs_a_graph_in_fixed_point() {
    if !common::have_graph_fixtures() {
        return;
    }
    use ppdenoise::ring::cnn::CnnFixed;
    use ppdenoise::ring::graph::{denoise, GraphPlan};
    let model = dir().join("unet.onnx");
    let model = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("u.png");
    let out = out.to_str().unwrap();
    let img = "builtin:phantom:30";
    let noisy = ppdenoise::image::load_input(img).unwrap().pixels;
    let g = graph("unet");
    let pre = g.preprocess(25.0, true);
    let args = |bits: &'static str| {
        [
            "denoise",
            "--model",
            model,
            "--image",
            img,
            "--sigma",
            "25",
            "--arith",
            "fixed",
            "--cnn-act-bits",
            bits,
            "--out",
            out,
        ]
    };
    for k in [18, 8] {
        let bits = if k == 18 { "18" } else { "8" };
        let j = common::ok(&args(bits));
        let plan = GraphPlan::from_graph(
            &g,
            CnnFixed {
                k,
                ..CnnFixed::default()
            },
        )
        .unwrap();
        let (want, oor) = denoise(&plan, &noisy, &[], &pre);
        assert_eq!(j["out_of_range"], oor, "k {k}");
        assert_eq!(oor > 0, k == 8, "k {k}: {oor} out of range");
        let got = ppdenoise::image::load(std::path::Path::new(out))
            .unwrap()
            .pixels;
        let want = want.mapv(|v| v.round().clamp(0.0, 255.0));
        assert_eq!(got, want, "k {k}: the oracle's image, rounded");
        let top = noisy.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        // The bound holds only while every value stays in range: none is given otherwise.
        if oor == 0 {
            assert_eq!(j["float_bound"], plan.output_bound(&g, &pre, top));
        } else {
            assert!(j["float_bound"].is_null(), "k {k}: {}", j["float_bound"]);
        }
    }
    let o = std::process::Command::new(common::bin())
        .args(args("8"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("pre-activations left the fixed-point range")
            && text.contains("no bound on the distance to float"),
        "{text}"
    );
    for bad in [["--arith", "float-tanh-star"], ["--noise-map", model]] {
        let mut a = vec!["denoise", "--model", model, "--image", img, "--sigma", "25"];
        a.extend(bad);
        let o = common::run(&a);
        assert!(!o.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("uniform --sigma"), "{bad:?}: {err}");
    }
}
