//! Issue 47, item 4 (docs/graph.md): CNN graphs as a hospital's training code exports them,
//! with `torch.onnx.export` (scripts/make-torch-graph-fixtures.py: a RED-CNN as its authors
//! wrote it, a 4-level U-Net with batch norms, max pooling, a transposed conv, bilinear and
//! nearest up-sampling and concatenated skips, a DRUNet-like net without biases, a LeakyReLU
//! U-Net with PReLU, average pooling, pixel shuffles and a clamp). Each imports as a graph,
//! runs in float as PyTorch ran it, and runs secure through the binary on both engines, bit
//! for bit its oracle. PyTorch is too large for `make test`'s venvs, so these tests are
//! ignored there and run by `make torch-graphs`.

use crate::common;

use std::path::PathBuf;

use common::graph_job::{bit_exact_through_the_binary, fixture_in, graph};
use ndarray::{Array2, Ix2};
use ndarray_npy::NpzReader;
use ppdenoise::model::graph::Graph;

const GRAPHS: [&str; 4] = ["redcnn", "unet", "drunet", "leaky"];

fn fixture(name: &str) -> PathBuf {
    fixture_in("torch-graph-fixtures", "torch-graphs", name)
}

fn reference(name: &str) -> Array2<f64> {
    let dir = fixture("redcnn").with_file_name("reference.npz");
    let f = std::fs::File::open(dir).unwrap();
    NpzReader::new(f).unwrap().by_name::<_, Ix2>(name).unwrap()
}

/// `denoise --arith float`'s path equals PyTorch's float32 forward within 1e-4 of the
/// output's largest magnitude, at two image sizes.
#[test]
#[ignore = "needs out/torch-graph-fixtures: make torch-graphs"]
fn torch_exported_graphs_run_in_float_as_pytorch_ran_them() {
    for name in GRAPHS {
        let g = graph(&fixture(name));
        for i in 0..2 {
            let x = reference(&format!("{name}_x{i}"));
            let want = reference(&format!("{name}_y{i}"));
            let (h, w) = x.dim();
            let input: Vec<f64> = x.iter().copied().collect();
            let out = g.run_float(&input, h, w).unwrap();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 0.1, "{name}: a degenerate reference output");
            let err = out
                .v
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / scale;
            println!("{name} {h}x{w}: largest relative difference to PyTorch {err:.2e}");
            assert!(err < 1e-4, "{name} at {h}x{w}: {err:e}");
        }
    }
}

/// What each export was meant to exercise survived `torch.onnx.export` and the import (the
/// batch norms after convs folded away).
#[test]
#[ignore = "needs out/torch-graph-fixtures: make torch-graphs"]
fn torch_exports_hold_the_ops_they_claim() {
    let names = |g: &Graph| -> Vec<&'static str> { g.nodes.iter().map(|n| n.op.name()).collect() };
    let want: [(&str, &[&str]); 4] = [
        ("redcnn", &["Conv", "ConvTranspose", "Add", "Relu"]),
        (
            "unet",
            &["MaxPool", "Concat", "Resize", "ConvTranspose", "Sub"],
        ),
        ("drunet", &["Conv", "ConvTranspose", "Add", "Relu"]),
        (
            "leaky",
            &["LeakyRelu", "PRelu", "AveragePool", "DepthToSpace", "Clip"],
        ),
    ];
    for (name, ops) in want {
        let got = names(&graph(&fixture(name)));
        for op in ops {
            assert!(got.contains(op), "{name}: no {op} in {got:?}");
        }
        assert!(!got.contains(&"Affine"), "{name}: a batch norm not folded");
    }
}

/// Each export through share-model, share-image, gen-triplets, two servers and reconstruct,
/// on both engines: the oracle's output bit for bit.
#[test]
#[ignore = "needs out/torch-graph-fixtures: make torch-graphs"]
fn torch_exported_graphs_are_bit_exact_through_the_binary() {
    for name in GRAPHS {
        bit_exact_through_the_binary(&fixture(name));
    }
}
