//! Models as PyTorch saves them (issue 13, item 3): `fixtures/tiny-mlp.safetensors`, written
//! by the reference Python `safetensors` package (scripts/make-safetensors-fixture.py), and
//! `fixtures/tiny-mlp.npz`, the same float32 values under ppdenoise's own names, must be the
//! same model to the bit, and every command must give the same result from either file.
//! (Refusals of malformed files are unit tests in `src/plain/safetensors.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use ppdenoise::image::phantom;
use ppdenoise::model::mlp::{Activation, Model};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::{FixedParams, Plan};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn bits(a: &ndarray::Array2<f64>) -> Vec<u64> {
    a.iter().map(|v| v.to_bits()).collect()
}

fn both() -> (Model, Model) {
    let st = Model::load(&fixture("tiny-mlp.safetensors")).unwrap();
    let npz = Model::load(&fixture("tiny-mlp.npz")).unwrap();
    (st, npz)
}

#[test]
fn python_safetensors_loads_to_the_npz_model_bit_for_bit() {
    let (st, npz) = both();
    assert_eq!(st.widths(), [81, 16, 16, 25]);
    assert_eq!(st.meta, npz.meta);
    assert_eq!(st.meta.activation, Activation::TanhStar);
    assert!(st.meta.mean_shift && st.meta.residual);
    assert_eq!((st.meta.sigma, st.meta.aggregation_sigma), (25.0, 1.5));
    for (a, b) in st.layers.iter().zip(&npz.layers) {
        assert_eq!(bits(&a.w), bits(&b.w));
        let (ab, bb): (Vec<u64>, Vec<u64>) = (
            a.b.iter().map(|v| v.to_bits()).collect(),
            b.b.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(ab, bb);
    }
    assert_eq!(st, npz);
}

#[test]
fn fixed_point_oracle_gives_the_same_image_from_either_file() {
    let (st, npz) = both();
    let image = phantom::builtin("phantom:40").unwrap().pixels;
    let pre = Preprocess::new(25.0, st.meta.sigma, true);
    let run = |m: &Model| {
        let plan = Plan::from_model(m, FixedParams::default()).unwrap();
        oracle::denoise(&plan, &image, &pre, 3)
    };
    let ((a, oor_a), (b, oor_b)) = (run(&st), run(&npz));
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(oor_a, oor_b);
    // The network did something: the output is not the input.
    assert_ne!(bits(&a), bits(&image));
}

fn ppd(dir: &Path, args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_ppdenoise"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ppdenoise {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn commands_take_the_safetensors_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (st, npz) = (
        s(&fixture("tiny-mlp.safetensors")),
        s(&fixture("tiny-mlp.npz")),
    );
    // share-model: the three files, with the model's widths in the public header.
    ppd(
        d,
        &["share-model", "--model", &st, "--out", &s(&d.join("m"))],
    );
    for ext in ["p0", "p1", "pub"] {
        assert!(d.join(format!("m.{ext}")).exists(), "m.{ext}");
    }
    let o = ppd(d, &["inspect", &s(&d.join("m.pub"))]);
    let text = String::from_utf8_lossy(&o.stdout).replace([' ', '\n'], "");
    assert!(text.contains("81,16,16,25"), "{text}");
    // denoise: the same PNG, byte for byte, in fixed point and in float.
    for arith in ["fixed", "float"] {
        let mut pngs = Vec::new();
        for (name, model) in [("st", &st), ("npz", &npz)] {
            let out = d.join(format!("{name}-{arith}.png"));
            ppd(
                d,
                &[
                    "denoise",
                    "--sigma",
                    "25",
                    "--model",
                    model,
                    "--image",
                    "builtin:phantom:40",
                    "--arith",
                    arith,
                    "--out",
                    &s(&out),
                ],
            );
            pngs.push(std::fs::read(out).unwrap());
        }
        assert_eq!(pngs[0], pngs[1], "denoise --arith {arith}");
    }
    // The whole secure pipeline: bit-exact with the oracle, and the same image as the .npz.
    let mut psnr = Vec::new();
    for (name, model) in [("st", &st), ("npz", &npz)] {
        let run = d.join(name);
        std::fs::create_dir_all(&run).unwrap();
        let o = ppd(
            &run,
            &[
                "demo",
                "--model",
                model,
                "--image",
                "builtin:phantom:24",
                "--json",
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout);
        let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(j["max_abs_diff_secure_oracle"], 0.0, "{name}: {out}");
        psnr.push(j["psnr_secure"].as_f64().unwrap());
    }
    assert_eq!(psnr[0].to_bits(), psnr[1].to_bits());
    // table: secure equals oracle, and the same numbers as with the .npz.
    let mut rows = Vec::new();
    for (name, model) in [("st", &st), ("npz", &npz)] {
        let out = d.join(format!("table-{name}"));
        let o = ppd(
            d,
            &[
                "--json",
                "table",
                "--images",
                "builtin:phantom:24",
                "--sigmas",
                "25",
                "--model",
                model,
                "--out-dir",
                &s(&out),
            ],
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["secure_equals_oracle"], true, "{name}");
        let a = &j["averages"][0];
        rows.push((a["psnr_secure"].clone(), a["ssim_secure"].clone()));
    }
    assert_eq!(rows[0], rows[1]);
}

#[test]
fn a_damaged_safetensors_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("tiny-mlp.safetensors")).unwrap();
    bytes.truncate(bytes.len() - 4);
    let p = tmp.path().join("cut.safetensors");
    std::fs::write(&p, &bytes).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ppdenoise"))
        .args(["share-model", "--model", p.to_str().unwrap(), "--out"])
        .arg(tmp.path().join("m"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cut.safetensors: not a valid .safetensors model file"),
        "{err}"
    );
    assert!(!tmp.path().join("m.p0").exists());
}
