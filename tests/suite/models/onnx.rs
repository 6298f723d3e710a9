//! Models from PyTorch (issue 29): ONNX files exported by torch.onnx.export and CNN
//! state dicts saved by safetensors.torch, made by scripts/make-onnx-fixtures.py. Their float
//! forward must match torch's own (recorded in fixtures/onnx/reference.npz), every form of
//! one network must load to the same model, and the secure run must equal the oracle.

use crate::common;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Ix2};
use ndarray_npy::NpzReader;
use ppdenoise::model::cnn::Cnn;
use ppdenoise::model::mlp::{Activation, Model};
use ppdenoise::model::noise_map::NoiseLevel;
use ppdenoise::model::preprocess::Preprocess;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/onnx")
        .join(name)
}

fn reference(name: &str) -> Array2<f64> {
    let f = std::fs::File::open(fixture("reference.npz")).unwrap();
    NpzReader::new(f).unwrap().by_name::<_, Ix2>(name).unwrap()
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The MLP's forward on rows of `x`, as torch computes it (tanh or ReLU between layers, as
/// the model says).
fn mlp_forward(m: &Model, x: &Array2<f64>) -> Array2<f64> {
    let mut a = x.t().to_owned();
    for (i, l) in m.layers.iter().enumerate() {
        a = l.w.dot(&a) + l.b.view().insert_axis(ndarray::Axis(1));
        if i + 1 < m.layers.len() {
            match m.meta.activation {
                Activation::Relu => a.mapv_inplace(|v| v.max(0.0)),
                _ => a.mapv_inplace(f64::tanh),
            }
        }
    }
    a.t().to_owned()
}

#[test]
fn imported_mlps_match_torch_forward() {
    let (x, y) = (reference("mlp_x"), reference("mlp_y"));
    for name in ["tiny-mlp.onnx", "tiny-mlp-matmul.onnx"] {
        let m = Model::load(&fixture(name)).unwrap();
        assert_eq!(m.widths(), [81, 16, 16, 25], "{name}");
        assert!(
            m.meta.mean_shift && m.meta.residual,
            "{name}: metadata_props read"
        );
        assert_eq!(m.meta.aggregation_sigma, 1.5);
        let d = max_diff(&mlp_forward(&m, &x), &y);
        assert!(d < 1e-5, "{name}: {d}");
    }
    // The ReLU MLP: its Relu nodes, or its state dict's `activation`, say ReLU; torch's
    // forward is matched, and both files hold the same model.
    let relu = Model::load(&fixture("tiny-mlp-relu.onnx")).unwrap();
    assert_eq!(relu.meta.activation, Activation::Relu);
    let d = max_diff(&mlp_forward(&relu, &x), &reference("mlp_relu_y"));
    assert!(d < 1e-5, "ReLU MLP: {d}");
    assert!(
        max_diff(&mlp_forward(&relu, &x), &y) > 0.1,
        "another network than tiny-mlp"
    );
    assert_eq!(
        relu,
        Model::load(&fixture("tiny-mlp-relu.safetensors")).unwrap()
    );
    // Gemm and MatMul + Add spell the same layers: the same model to the bit.
    assert_eq!(
        Model::load(&fixture("tiny-mlp.onnx")).unwrap(),
        Model::load(&fixture("tiny-mlp-matmul.onnx")).unwrap()
    );
}

fn cnn_out(m: &Cnn, img: &Array2<f64>, sigma: f64) -> Array2<f64> {
    let (h, w) = img.dim();
    let map = m.noise_map(&NoiseLevel::Uniform(sigma), h, w);
    m.denoise_float(img, &Preprocess::identity(), &map)
}

#[test]
fn imported_cnns_match_torch_forward_at_any_size() {
    for (family, files) in [
        (
            "dncnn",
            [
                "tiny-dncnn.onnx",
                "tiny-dncnn-dynamo.onnx",
                "tiny-dncnn.safetensors",
            ],
        ),
        (
            "ffdnet",
            [
                "tiny-ffdnet.onnx",
                "tiny-ffdnet-dynamo.onnx",
                "tiny-ffdnet.safetensors",
            ],
        ),
    ] {
        for name in files {
            let m = Cnn::load(&fixture(name)).unwrap();
            assert_eq!(m.meta.residual, family == "dncnn", "{name}");
            for size in ["16x16", "12x18"] {
                let img = reference(&format!("dncnn_in_{size}"));
                let want = reference(&format!("{family}_out_{size}"));
                let d = max_diff(&cnn_out(&m, &img, 30.0), &want);
                // f32 convolutions on both sides; grey levels 0..255.
                assert!(d < 2e-3, "{name} at {size}: {d}");
            }
        }
    }
}

#[test]
fn batch_norm_folded_here_is_the_same_from_onnx_and_safetensors() {
    // The same float32 values folded by the same code; only eps differs in its last bits
    // (ONNX stores it as a float32, the metadata as the decimal 0.0001).
    for family in ["dncnn", "ffdnet"] {
        let a = Cnn::load(&fixture(&format!("tiny-{family}.onnx"))).unwrap();
        let b = Cnn::load(&fixture(&format!("tiny-{family}.safetensors"))).unwrap();
        assert_eq!((a.meta, a.frame), (b.meta, b.frame), "{family}");
        assert_eq!(a.channels(), b.channels(), "{family}");
        let mut worst = 0.0f64;
        for (x, y) in a.convs.iter().zip(&b.convs) {
            assert_eq!((x.cin, x.cout, x.k), (y.cin, y.cout, y.k));
            for (u, v) in x.w.iter().chain(&x.b).zip(y.w.iter().chain(&y.b)) {
                worst = worst.max((u - v).abs());
            }
        }
        assert!(worst < 1e-9, "{family}: {worst}");
    }
}

/// `demo` (both servers as processes) on `model`: the secure image equals the oracle's.
fn demo_bit_exact(model: &Path, engine: &str, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("w");
    let mut args = vec![
        "demo",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "builtin:phantom:16",
        "--engine",
        engine,
        "--workdir",
        work.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let j = common::ok(&args);
    assert_eq!(
        j["max_abs_diff_secure_oracle"].as_f64(),
        Some(0.0),
        "{model:?} on {engine}: {j}"
    );
    j
}

#[test]
fn secure_runs_of_imported_models_equal_the_oracle() {
    for engine in ["gc", "gmw"] {
        let j = demo_bit_exact(&fixture("tiny-dncnn.onnx"), engine, &[]);
        assert_eq!(j["network"], "cnn");
    }
    for name in ["tiny-ffdnet.onnx", "tiny-ffdnet.safetensors"] {
        demo_bit_exact(&fixture(name), "gmw", &["--sigma", "30"]);
    }
    demo_bit_exact(&fixture("tiny-dncnn.safetensors"), "gc", &[]);
    // The MLP runs on patches (a CNN's run has none).
    let j = demo_bit_exact(&fixture("tiny-mlp.onnx"), "gmw", &[]);
    assert!(j["dealer"]["patches"].as_u64() > Some(0), "{j}");
    // The ReLU MLP on both engines.
    for engine in ["gc", "gmw"] {
        let j = demo_bit_exact(&fixture("tiny-mlp-relu.onnx"), engine, &[]);
        assert!(j["dealer"]["patches"].as_u64() > Some(0), "{j}");
    }
}

#[test]
fn commands_take_onnx_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let model = fixture("tiny-ffdnet.onnx");
    let m = model.to_str().unwrap();
    let j = common::ok(&["inspect", m]);
    assert_eq!(j["kind"], "cnn model", "{j}");
    let j = common::ok(&["share-model", "--model", m, "--out", &d("m")]);
    assert_eq!(j["ok"], true, "{j}");
    for ext in ["p0", "p1", "pub"] {
        assert!(dir.path().join(format!("m.{ext}")).exists());
    }
    // denoise: the ONNX file and its safetensors twin give the same PNG in fixed point.
    let mut pngs = Vec::new();
    for f in ["tiny-ffdnet.onnx", "tiny-ffdnet.safetensors"] {
        let out = d(&format!("{f}.png"));
        common::ok(&[
            "denoise",
            "--model",
            fixture(f).to_str().unwrap(),
            "--image",
            "builtin:phantom:24",
            "--sigma",
            "30",
            "--arith",
            "fixed",
            "--out",
            &out,
        ]);
        pngs.push(std::fs::read(out).unwrap());
    }
    assert_eq!(pngs[0], pngs[1]);
    // The MLP: share-model says that Tanh runs as tanh*.
    let j = common::ok(&[
        "share-model",
        "--model",
        fixture("tiny-mlp.onnx").to_str().unwrap(),
        "--out",
        &d("mlp"),
    ]);
    assert!(j["notes"][0].as_str().unwrap().contains("tanh*"), "{j}");
}

/// The authors' weights as PyTorch modules exported to ONNX (`make onnx-dncnn`, into out/):
/// the same model and the same image as the .npz import. Ignored by `make test` (CI has no
/// torch to export them); `make onnx-dncnn` makes the files and runs these two, and run
/// without the files they fail rather than pass having checked nothing.
fn authors_weights_through_onnx(stem: &str, layers: usize, extra: &[&str]) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("out");
    let (onnx, npz) = (
        out.join(format!("{stem}.onnx")),
        out.join(format!("{stem}.npz")),
    );
    assert!(
        onnx.exists() && npz.exists(),
        "{} or {} absent: `make onnx-dncnn` makes them (nothing is checked without them)",
        onnx.display(),
        npz.display()
    );
    let (a, b) = (Cnn::load(&onnx).unwrap(), Cnn::load(&npz).unwrap());
    assert_eq!(a.convs.len(), layers);
    assert_eq!(a, b, "the same weights, to the bit");
    let dir = tempfile::tempdir().unwrap();
    let mut pngs = Vec::new();
    for (name, m) in [("onnx", &onnx), ("npz", &npz)] {
        let png = dir.path().join(format!("{name}.png"));
        let mut args = vec![
            "denoise",
            "--model",
            m.to_str().unwrap(),
            "--image",
            "builtin:phantom:64",
            "--arith",
            "fixed",
            "--out",
            png.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        common::ok(&args);
        pngs.push(std::fs::read(png).unwrap());
    }
    assert_eq!(pngs[0], pngs[1]);
}

#[test]
#[ignore = "needs out/dncnn/s25.onnx and .npz: `make onnx-dncnn` makes them and runs it"]
fn dncnn_s_through_pytorch_onnx_is_the_npz_import_bit_for_bit() {
    authors_weights_through_onnx("dncnn/s25", 17, &[]);
}

/// FFDNet's sub-images in PyTorch's order in the graph: the importer's permutation must give
/// back the authors' order exactly.
#[test]
#[ignore = "needs out/ffdnet/clip.onnx and .npz: `make onnx-dncnn` makes them and runs it"]
fn ffdnet_through_pytorch_onnx_is_the_npz_import_bit_for_bit() {
    authors_weights_through_onnx("ffdnet/clip", 15, &["--sigma", "30"]);
}
