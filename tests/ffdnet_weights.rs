//! The FFDNet authors' weights (../shared/models/ffdnet, never in the repository), converted by
//! scripts/import-ffdnet.py (`make out/ffdnet/clip.npz`): the project's float forward gives
//! the figures measured with PyTorch on the same noisy images (set12, `add-noise --seed 0`,
//! 8-bit): 30.419 dB at sigma 25 and 27.299 at sigma 50, within 0.02 dB; and the fixed point
//! recorded in the converted file stays within 0.01 dB of float at sigma 25.
//! Fails, saying so, when the weights or set12 are absent (both are beside the repository in
//! CI, so it runs in `make test`).

use std::path::{Path, PathBuf};
use std::process::Command;

use ppdenoise::image::{add_noise, load, quantize_u8, GrayImage};
use ppdenoise::metrics::psnr;
use ppdenoise::model::cnn::Cnn;
use ppdenoise::model::noise_map::NoiseLevel;
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::cnn::{self as ring_cnn, CnnFixed, CnnPlan};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The converted model, made by the Makefile's rule (a venv with h5py from PyPI).
fn converted() -> PathBuf {
    let weights = root().join("../shared/models/ffdnet/FFDNet_Clip_gray.mat");
    assert!(
        weights.exists(),
        "{}: absent (the authors' weights, beside the repository in CI): nothing is checked without them",
        weights.display()
    );
    let st = Command::new("make")
        .args(["-s", "out/ffdnet/clip.npz"])
        .current_dir(root())
        .status()
        .expect("run make");
    assert!(st.success(), "make out/ffdnet/clip.npz failed");
    root().join("out/ffdnet/clip.npz")
}

fn set12() -> Vec<PathBuf> {
    let dir = root().join("../shared/data/set12");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (set12, beside the repository in CI)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        12,
        "{}: not the 12 images of set12",
        dir.display()
    );
    files
}

/// What `add-noise --sigma S --seed 0` writes: rounded and clipped to 8 bits.
fn noisy(clean: &GrayImage, sigma: f64) -> GrayImage {
    GrayImage {
        pixels: quantize_u8(&add_noise(clean, sigma, 0).pixels),
        bit_depth: 8,
    }
}

fn mean_psnr(model: &Path, sigma: f64, fixed: bool) -> f64 {
    let m = Cnn::load(model).unwrap();
    let files = set12();
    let pre = Preprocess::identity();
    let plan = CnnPlan::from_cnn(&m, CnnFixed::for_model(&m)).unwrap();
    let sum: f64 = files
        .iter()
        .map(|f| {
            let clean = load(f).unwrap();
            let n = noisy(&clean, sigma);
            let (h, w) = n.pixels.dim();
            let map = m.noise_map(&NoiseLevel::Uniform(sigma), h, w);
            let out = if fixed {
                let (out, oor) = ring_cnn::denoise(&plan, &n.pixels, &map, &pre);
                assert_eq!(oor, 0, "{}: out of the fixed-point range", f.display());
                out
            } else {
                m.denoise_float(&n.pixels, &pre, &map)
            };
            psnr(&clean.pixels, &quantize_u8(&out), 255.0)
        })
        .sum();
    sum / files.len() as f64
}

#[test]
fn converted_ffdnet_reproduces_the_published_figures() {
    let model = converted();
    let mut float25 = 0.0;
    for (sigma, want) in [(25.0, 30.419), (50.0, 27.299)] {
        let got = mean_psnr(&model, sigma, false);
        if sigma == 25.0 {
            float25 = got;
        }
        eprintln!("FFDNet_Clip_gray float, set12, sigma {sigma}: {got:.4} dB (measured with PyTorch: {want})");
        assert!(
            (got - want).abs() <= 0.02,
            "sigma {sigma}: {got:.4} dB, expected {want} within 0.02"
        );
    }
    let float = float25;
    let fixed = mean_psnr(&model, 25.0, true);
    eprintln!("sigma 25: fixed point {fixed:.4} dB, float {float:.4} dB");
    assert!(
        (fixed - float).abs() <= 0.01,
        "fixed point {fixed:.4} dB against float {float:.4}: more than 0.01 dB apart"
    );
}
