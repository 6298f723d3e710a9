//! `table` on colour images with a colour CNN (issue 48, item 4), through the binary: a small
//! colour FFDNet-shaped random network on a centre crop of an RGB PNG runs the whole secure
//! pipeline, equals the oracle, and its recorded PSNR and SSIM are `metrics`' RGB ones on the
//! files it wrote. And the refusals that keep a table's images and model of one kind, named.

use std::path::Path;

use common::{ok, run};
use ppdenoise::image::{load_picture, Picture};
use ppdenoise::model::cnn::{random_framed_cnn, CnnMeta};
use ppdenoise::model::frame::Frame;

use crate::common;

const META: CnnMeta = CnnMeta {
    sigma: 25.0,
    residual: false,
};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// An RGB pattern of `w` x `h` (8 bits), each channel different.
fn rgb_pattern(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |c, r| {
        image::Rgb([
            ((r * 9 + c * 5) % 256) as u8,
            ((c * 13 + 40) % 256) as u8,
            ((r * c * 3 + 90) % 256) as u8,
        ])
    })
}

#[test]
fn colour_table_runs_end_to_end_and_scores_as_metrics() {
    let d = tempfile::tempdir().unwrap();
    let imgs = d.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    rgb_pattern(30, 28).save(imgs.join("pat.png")).unwrap();
    let model = d.path().join("colour.npz");
    random_framed_cnn(&[13, 8, 12], 3, 7, META, Frame::FFDNET)
        .save(&model)
        .unwrap();
    let out = d.path().join("t");
    let (imgs_s, model_s, out_s) = (s(&imgs), s(&model), s(&out));
    let table = [
        "table",
        "--images",
        &imgs_s,
        "--sigmas",
        "25",
        "--model",
        &model_s,
        "--max-size",
        "16",
        "--out-dir",
        &out_s,
        "--quiet",
    ];
    let j = ok(&table);
    assert_eq!(j["secure_equals_oracle"], true, "{j}");
    assert_eq!(j["runs"], 1, "{j}");
    let w = out.join("runs/pat/sigma25");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("run.json")).unwrap()).unwrap();
    let r = &rec["run"];
    // The crop is 16x16 pixels of each plane (not 16 rows of the stacked planes).
    assert_eq!(
        (r["height"].as_u64(), r["width"].as_u64()),
        (Some(16), Some(16))
    );
    assert_eq!(r["cropped_from"], serde_json::json!([28, 30]));
    for f in ["clean.png", "noisy.png", "plaintext.png", "denoised.png"] {
        match load_picture(w.join(f)).unwrap() {
            Picture::Colour(c) => assert_eq!((c.height(), c.width()), (16, 16), "{f}"),
            Picture::Gray(_) => panic!("{f}: written gray"),
        }
    }
    let metrics = |a: &str, b: &str| ok(&["metrics", &s(&w.join(a)), &s(&w.join(b))]);
    let sec = metrics("clean.png", "denoised.png");
    assert_eq!(sec["colours"], 3);
    let close = |x: &serde_json::Value, y: &serde_json::Value| {
        (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-9
    };
    assert!(close(&sec["psnr"], &r["psnr_secure"]), "{sec} vs {r}");
    assert!(close(&sec["ssim"], &r["ssim_secure"]), "{sec} vs {r}");
    let fl = metrics("clean.png", "plaintext.png");
    assert!(close(&fl["psnr"], &r["psnr_float"]), "{fl} vs {r}");
    let no = metrics("clean.png", "noisy.png");
    assert!(close(&no["psnr"], &r["psnr_noisy"]), "{no} vs {r}");
    // The noise is per channel: the three planes' noise differs.
    let (Picture::Colour(c), Picture::Colour(n)) = (
        load_picture(w.join("clean.png")).unwrap(),
        load_picture(w.join("noisy.png")).unwrap(),
    ) else {
        panic!("colour expected")
    };
    let noise = &n.planes - &c.planes;
    assert_ne!(noise.row(0), noise.row(16), "R and G got the same noise");
    // --resume takes the recorded run as it is.
    let again = ok(&[&table[..], &["--resume"]].concat());
    assert_eq!(again["resumed_runs"], 1, "{again}");
}

fn refused(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} accepted");
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}: {err}");
    }
}

#[test]
fn gray_model_with_colour_images_and_the_reverse_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let (rgb, gray) = (d.path().join("rgb"), d.path().join("gray"));
    std::fs::create_dir(&rgb).unwrap();
    std::fs::create_dir(&gray).unwrap();
    rgb_pattern(16, 16).save(rgb.join("a.png")).unwrap();
    image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 9 + y) as u8]))
        .save(gray.join("b.png"))
        .unwrap();
    let colour = d.path().join("colour.npz");
    random_framed_cnn(&[13, 6, 12], 3, 5, META, Frame::FFDNET)
        .save(&colour)
        .unwrap();
    let graym = d.path().join("gray.npz");
    random_framed_cnn(&[5, 6, 4], 3, 5, META, Frame::FFDNET)
        .save(&graym)
        .unwrap();
    let out = d.path().join("t");
    let table = |images: &str, model: &Path| -> Vec<String> {
        [
            "table",
            "--images",
            images,
            "--sigmas",
            "25",
            "--model",
            &s(model),
            "--out-dir",
            &s(&out),
            "--quiet",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    // A colour image for a gray model: the image and the model named.
    let a = table(&s(&rgb), &graym);
    refused(&args(&a), &["a.png: a colour image", "gray.npz is gray"]);
    // Gray images for a colour model, a file or the built-in phantom.
    let a = table(&s(&gray), &colour);
    refused(&args(&a), &["b.png: a gray image", "colour.npz is colour"]);
    let a = table("builtin:phantom:32", &colour);
    refused(
        &args(&a),
        &["builtin:phantom:32: a gray image", "colour.npz is colour"],
    );
    // Signal-dependent noise on colour images is not there yet: refused, not run gray.
    let mut a = table(&s(&rgb), &colour);
    a.extend(["--noise".into(), "poisson-gaussian:4,25".into()]);
    refused(&args(&a), &["--noise", "colour.npz is colour"]);
    // Nothing was run: no run folder left behind.
    assert!(!out.join("runs").exists(), "a refused table made runs/");
}
