//! The quick variant of `ppdenoise table`: one small built-in image, one noise level, a tiny
//! random model, the full secure pipeline with two server processes. Checks that the
//! Markdown, CSV and JSON outputs and the figures exist and agree with each other, and that
//! the secure result equals the fixed-point oracle.

use std::path::Path;

use crate::common;

use assert_cmd::Command;
use ppdenoise::image::{load as load_png, quantize_u8};
use ppdenoise::metrics::psnr;
use ppdenoise::model::mlp::{random_model, Activation, Model, ModelMeta};
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::oracle;
use ppdenoise::ring::plan::{FixedParams, Plan};

fn tiny_meta() -> ModelMeta {
    ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 4.0,
    }
}

fn tiny_model(dir: &Path) -> std::path::PathBuf {
    let m = random_model(&[1521, 12, 289], 7, tiny_meta());
    let p = dir.join("tiny.npz");
    m.save(&p).unwrap();
    p
}

fn run_table(dir: &Path, images: &str, extra: &[&str]) -> serde_json::Value {
    let model = tiny_model(dir);
    let out = dir.join("table");
    let res = Command::cargo_bin("ppdenoise")
        .unwrap()
        .args(["--json", "table", "--images", images, "--sigmas", "25"])
        .arg("--model")
        .arg(&model)
        .arg("--out-dir")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "table failed: {}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&res.stdout).trim()).unwrap();
    assert_eq!(summary["secure_equals_oracle"], true);
    let text = std::fs::read_to_string(out.join("table.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Recomputed from the files a run left, not taken from the binary's JSON: the receiver's
/// denoised PNG equals the fixed-point oracle run here on the noisy PNG the gateway shared,
/// and the recorded secure PSNR is that image's.
fn assert_secure_is_oracle(run_dir: &Path, model: &Path, r: &serde_json::Value) {
    let m = Model::load(model).unwrap();
    let plan = Plan::from_model(&m, FixedParams::default()).unwrap();
    let noisy = load_png(run_dir.join("noisy.png")).unwrap();
    let secure = load_png(run_dir.join("denoised.png")).unwrap();
    let clean = load_png(run_dir.join("clean.png")).unwrap();
    let pre = Preprocess::new(25.0, m.meta.sigma, true);
    let dec = quantize_u8(&oracle::denoise(&plan, &noisy.pixels, &pre, 3).0);
    assert_eq!(
        secure.pixels,
        dec,
        "{}: secure != oracle",
        run_dir.display()
    );
    let p = psnr(&clean.pixels, &secure.pixels, 255.0);
    assert_eq!(
        r["psnr_secure"].as_f64(),
        Some(p),
        "recorded PSNR is not the image's"
    );
}

fn png_ok(p: &Path) {
    let img = image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(img.width() > 0 && img.height() > 0);
}

#[test]
fn quick_table_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let j = run_table(dir.path(), "builtin:phantom:32", &[]);
    let out = dir.path().join("table");

    // JSON: one run, secure == oracle bit for bit, finite metrics.
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r["image"], "phantom_32");
    assert_eq!(r["sigma"], 25.0);
    assert_eq!(r["secure_equals_oracle"], true);
    assert_eq!(r["max_abs_diff_secure_oracle"], 0.0);
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing"));
    for k in [
        "psnr_noisy",
        "psnr_float",
        "psnr_oracle",
        "psnr_secure",
        "ssim_float",
        "ssim_secure",
    ] {
        assert!(f(k).is_finite(), "{k} = {}", r[k]);
    }
    assert_eq!(f("psnr_secure"), f("psnr_oracle"));
    assert_eq!(f("ssim_secure"), f("ssim_oracle"));
    assert_secure_is_oracle(
        &out.join("runs/phantom_32/sigma25"),
        &dir.path().join("tiny.npz"),
        r,
    );
    assert!(r["and_gates"].as_u64().unwrap() > 0);
    assert!(r["s0_bytes_sent"].as_u64().unwrap() > 0);
    assert!(r["s1_bytes_sent"].as_u64().unwrap() > 0);
    assert!(r["serve_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["cropped_from"].is_null());
    assert_eq!(j["averages"].as_array().unwrap().len(), 1);

    // CSV: header + one row, same numbers.
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let head: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(head.len(), row.len());
    let col = |k: &str| row[head.iter().position(|h| *h == k).unwrap()];
    assert_eq!(col("image"), "phantom_32");
    assert_eq!(col("secure_equals_oracle"), "true");
    for k in ["psnr_float", "psnr_secure", "psnr_oracle"] {
        let v: f64 = col(k).parse().unwrap();
        assert!((v - f(k)).abs() < 1e-3, "{k}: csv {v} json {}", f(k));
    }
    let v: f64 = col("ssim_secure").parse().unwrap();
    assert!((v - f("ssim_secure")).abs() < 1e-4);

    // Markdown: the paper's layout with PSNR to 2 decimals, SSIM to 3.
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    let plain = format!(
        "| phantom_32 | Plaintext | {:.2} | {:.3} |",
        f("psnr_float"),
        f("ssim_float")
    );
    let secure = format!(
        "| | Secure | {:.2} | {:.3} |",
        f("psnr_secure"),
        f("ssim_secure")
    );
    assert!(md.contains(&plain), "{plain} not in\n{md}");
    assert!(md.contains(&secure), "{secure} not in\n{md}");
    assert!(md.contains("| **Average** | Plaintext |"));
    assert!(md.contains("yes (bit-exact)"));
    assert!(md.contains("full images (no crop)"));

    // Figures.
    png_ok(&out.join("psnr_vs_sigma.png"));
    png_ok(&out.join("fig_phantom_32_sigma25.png"));
}

#[test]
fn max_size_crops_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let j = run_table(
        dir.path(),
        "builtin:phantom:40",
        &["--max-size", "32", "--figures", "none"],
    );
    let r = &j["runs"][0];
    assert_eq!(
        (r["height"].as_u64(), r["width"].as_u64()),
        (Some(32), Some(32))
    );
    assert_eq!(r["cropped_from"], serde_json::json!([40, 40]));
    assert_secure_is_oracle(
        &dir.path().join("table/runs/phantom_40/sigma25"),
        &dir.path().join("tiny.npz"),
        r,
    );
    let md = std::fs::read_to_string(dir.path().join("table/table.md")).unwrap();
    assert!(md.contains("centre-cropped to at most 32x32"), "{md}");
    assert!(md.contains("phantom_40 32x32 (of 40x40)"), "{md}");
    assert!(!dir.path().join("table/fig_phantom_40_sigma25.png").exists());
    assert!(dir.path().join("table/psnr_vs_sigma.png").exists());
}

#[test]
fn resume_reuses_finished_runs_and_refuses_foreign_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_table(dir.path(), "builtin:phantom:32", &["--figures", "none"]);
    let record = dir.path().join("table/runs/phantom_32/sigma25/run.json");
    assert!(record.exists(), "a finished run leaves its record");

    // Same settings: the run is reused, not repeated; the numbers are the recorded ones.
    let again = run_table(dir.path(), "builtin:phantom:32", &["--resume"]);
    assert_eq!(again["resumed_runs"], 1);
    assert_eq!(again["runs"], first["runs"]);
    png_ok(&dir.path().join("table/fig_phantom_32_sigma25.png"));
    let md = std::fs::read_to_string(dir.path().join("table/table.md")).unwrap();
    assert!(
        md.contains("1 of the 1 runs were recorded by earlier invocations"),
        "{md}"
    );

    // Another seed: the record does not belong to this table; a clear error, nothing reused.
    let model = dir.path().join("tiny.npz");
    let refuse = |extra: &[&str], want: &str| {
        let res = Command::cargo_bin("ppdenoise")
            .unwrap()
            .args(["table", "--images", "builtin:phantom:32", "--sigmas", "25"])
            .arg("--model")
            .arg(&model)
            .arg("--out-dir")
            .arg(dir.path().join("table"))
            .args(["--resume", "--figures", "none"])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "should refuse: {err}");
        assert!(err.contains("run.json") && err.contains(want), "{err}");
    };
    refuse(&["--seed", "9"], "seed 0");
    refuse(&["--stride", "2"], "stride 3");
    // Made by another build (other fixed-point settings or version).
    let good = std::fs::read_to_string(&record).unwrap();
    let mut rec: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert!(rec["protocol"].as_str().unwrap().contains("s=16"), "{rec}");
    rec["protocol"] = "ppdenoise 0.0.1 s=18 q=12 cs=12 zbits=8 out_bits=3".into();
    std::fs::write(&record, rec.to_string()).unwrap();
    refuse(&[], "tool/fixed point");
    std::fs::write(&record, &good).unwrap();
    // Another model under the same file name.
    let other = random_model(&[1521, 12, 289], 8, tiny_meta());
    other.save(&model).unwrap();
    refuse(&[], "model blake3");
    tiny_model(dir.path());
    // A record whose images are gone.
    let png = dir
        .path()
        .join("table/runs/phantom_32/sigma25/denoised.png");
    std::fs::remove_file(&png).unwrap();
    refuse(&[], "missing denoised.png");

    // A damaged record is reported, not trusted.
    std::fs::write(&record, "{\"format\": ").unwrap();
    refuse(&[], "corrupted");
}

/// A multi-frame DICOM (issue 28, item 2): every frame an image of the table, named
/// `<file>-f<k>`, each secure run equal to its oracle.
#[test]
fn a_multi_frame_dicom_is_a_table_of_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mf = dir.path().join("enhanced.dcm");
    common::dicom_multi_frame(&mf, 2, 32, 9);
    let j = run_table(dir.path(), &mf.display().to_string(), &[]);
    let runs = j["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["image"].as_str().unwrap()).collect();
    assert_eq!(names, ["enhanced-f0", "enhanced-f1"]);
    for r in runs {
        assert_eq!(r["secure_equals_oracle"], true, "{}", r["image"]);
    }
    assert_ne!(
        runs[0]["psnr_noisy"], runs[1]["psnr_noisy"],
        "two distinct frames"
    );
}

/// `table --window` (issue 44): a DICOM's images are on the window's 0..255 scale (a
/// narrower window saturates more of the clean image), the secure result still the
/// oracle's; a window on a PNG is refused by name.
#[test]
fn a_dicom_table_takes_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let mf = dir.path().join("enhanced.dcm");
    common::dicom_multi_frame(&mf, 1, 32, 9);
    let saturated = |sub: &str, window: &str| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let j = run_table(&d, &mf.display().to_string(), &["--window", window]);
        assert_eq!(j["runs"][0]["secure_equals_oracle"], true, "{window}");
        let clean = load_png(d.join("table/runs/enhanced/clean-input.png")).unwrap();
        clean.pixels.iter().filter(|&&v| v >= 254.5).count()
    };
    let (full, narrow) = (saturated("full", "full"), saturated("narrow", "0:1000"));
    assert!(
        narrow > full + 50,
        "window 0:1000: {narrow} saturated, full: {full}"
    );
    let png = dir.path().join("p.png");
    ppdenoise::image::save_png(
        &ppdenoise::image::load_input("builtin:phantom:32").unwrap(),
        &png,
        8,
    )
    .unwrap();
    let o = Command::cargo_bin("ppdenoise")
        .unwrap()
        .args([
            "table",
            "--images",
            png.to_str().unwrap(),
            "--window",
            "0:100",
        ])
        .arg("--out-dir")
        .arg(dir.path().join("t"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("window"), "{err}");
}
