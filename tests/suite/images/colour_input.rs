//! No colour image is turned gray without a word (issue 48, step 1): through the binary, a
//! colour PNG and a colour TIFF are refused by name by a gray model unless `--as-gray` is
//! given, which gives their BT.601 luma and says so in the summary; a gray image is
//! unaffected. (Without `--as-gray`, `add-noise` and `metrics` take colour as colour: step 3.)

use std::path::Path;
use std::process::{Command, Output};

fn ppd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ppdenoise"))
        .args(args)
        .output()
        .expect("run ppdenoise")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A 12 x 16 RGB pattern, 8 bits, row-major RGB triples.
fn rgb_pattern() -> Vec<u8> {
    (0..12 * 16)
        .flat_map(|i: usize| {
            let (r, c) = (i / 16, i % 16);
            [(r * 20) as u8, (c * 15) as u8, ((r * c * 7) % 256) as u8]
        })
        .collect()
}

/// `add-noise` with a negligible sigma: the image as loaded, rounded to 8 bits, written as a
/// gray PNG (a zero sigma is refused).
fn through_add_noise(input: &Path, out: &Path, as_gray: bool) -> Output {
    let mut args = vec!["--json", "add-noise", "--sigma", "1e-9"];
    if as_gray {
        args.push("--as-gray");
    }
    let (i, o) = (s(input), s(out));
    args.extend(["--image", &i, "--out", &o]);
    ppd(&args)
}

/// `denoise` with the shipped (gray) model.
fn through_gray_model(input: &Path, out: &Path) -> Output {
    ppd(&[
        "denoise",
        "--sigma",
        "25",
        "--image",
        &s(input),
        "--out",
        &s(out),
    ])
}

#[test]
fn colour_png_and_tiff_are_refused_by_name_unless_as_gray() {
    let d = tempfile::tempdir().unwrap();
    let rgb = rgb_pattern();
    let png = d.path().join("photo.png");
    let tif = d.path().join("slide.tif");
    image::RgbImage::from_raw(16, 12, rgb.clone())
        .unwrap()
        .save(&png)
        .unwrap();
    image::RgbImage::from_raw(16, 12, rgb.clone())
        .unwrap()
        .save(&tif)
        .unwrap();
    // BT.601 luma in f64; the output holds it rounded (a luma of exactly k + 0.5 may go
    // either way under the negligible noise).
    let luma: Vec<f64> = rgb
        .chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    for (input, name) in [(&png, "photo.png"), (&tif, "slide.tif")] {
        let out = d.path().join(format!("{name}.gray.png"));
        let o = through_gray_model(input, &out);
        assert!(!o.status.success(), "{name} accepted without --as-gray");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{name}: a colour image (RGB, 8 bits); "))
                && err.contains(
                    " is gray: give --as-gray to denoise its luma (BT.601), or a colour model"
                ),
            "{err}"
        );
        assert!(!out.exists(), "{name}: an output was written");

        let o = through_add_noise(input, &out, true);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
        let said = v["as_gray"].as_array().expect("as_gray in the summary");
        assert_eq!(said.len(), 1, "{v}");
        assert!(said[0].as_str().unwrap().contains(name), "{v}");
        let got = image::open(&out).unwrap().into_luma8().into_raw();
        for (g, l) in got.iter().zip(&luma) {
            assert!(
                (f64::from(*g) - l).abs() <= 0.5 + 1e-6,
                "{name}: {g} is not luma {l}"
            );
        }
    }

    // Another loader (metrics reads both images whole): colour as colour, or converted.
    let o = ppd(&["metrics", &s(&png), &s(&png)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RGB"));
    let o = ppd(&["--as-gray", "metrics", &s(&png), &s(&png)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--as-gray: colour converted"));

    // RGBA names its alpha; a 16-bit RGB its depth.
    let rgba = d.path().join("rgba.png");
    image::RgbaImage::from_raw(1, 1, vec![1, 2, 3, 4])
        .unwrap()
        .save(&rgba)
        .unwrap();
    let o = through_gray_model(&rgba, &d.path().join("x.png"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("rgba.png: a colour image (RGBA, 8 bits)"));
    // Converted, its alpha is lost: the summary says so.
    let o = through_add_noise(&rgba, &d.path().join("y.png"), true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert!(
        v["as_gray"][0]
            .as_str()
            .unwrap()
            .contains("rgba.png (RGBA, 8 bits; its alpha dropped)"),
        "{v}"
    );
}

#[test]
fn a_gray_image_is_unaffected() {
    let d = tempfile::tempdir().unwrap();
    let gray = d.path().join("gray.png");
    let px: Vec<u8> = (0..12 * 16).map(|i| (i % 256) as u8).collect();
    image::GrayImage::from_raw(16, 12, px.clone())
        .unwrap()
        .save(&gray)
        .unwrap();
    for as_gray in [false, true] {
        let out = d.path().join(format!("out-{as_gray}.png"));
        let o = through_add_noise(&gray, &out, as_gray);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
        assert!(v.get("as_gray").is_none(), "{v}");
        assert_eq!(image::open(&out).unwrap().into_luma8().into_raw(), px);
    }
}
