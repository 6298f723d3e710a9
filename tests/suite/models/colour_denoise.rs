//! Colour FFDNet through the binary (issue 48, steps 2 and 3), on small random models:
//! `add-noise` on an RGB PNG, `denoise --arith float|fixed` with a colour model back to an RGB
//! (or RGBA) PNG, RGB PSNR, and the refusals of a gray model given colour and the reverse.
//!
//! The colour arrangement (channel = colour * 4 + sub-image, one shared noise-map channel) is
//! checked against the gray path itself: a colour model built from a gray FFDNet-shaped one
//! as three independent copies (block-diagonal weights, each colour's sub-images and the one
//! map into its own copy) must give, plane by plane, the gray model's result on that plane;
//! bit for bit in fixed point.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ppdenoise::model::cnn::{random_framed_cnn, Cnn, CnnMeta, Conv};
use ppdenoise::model::frame::Frame;

fn ppd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ppdenoise"))
        .args(args)
        .output()
        .expect("run ppdenoise")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const META: CnnMeta = CnnMeta {
    sigma: 25.0,
    residual: false,
};

/// The colour model of three independent copies of `g` (a gray FFDNet-shaped CNN): hidden
/// layers three times as wide, block-diagonal.
fn three_copies(g: &Cnn) -> Cnn {
    let convs = g
        .convs
        .iter()
        .enumerate()
        .map(|(l, c)| {
            let kk = c.k * c.k;
            // Input channel i of copy b: sub-images of colour b, the map shared (layer 0).
            let cin = if l == 0 { 13 } else { 3 * c.cin };
            let src_of = |b: usize, i: usize| -> usize {
                match (l, i) {
                    (0, 4) => 12,
                    (0, i) => b * 4 + i,
                    (_, i) => b * c.cin + i,
                }
            };
            let cout = 3 * c.cout;
            let mut w = vec![0.0; cout * cin * kk];
            for b in 0..3 {
                for o in 0..c.cout {
                    for i in 0..c.cin {
                        let from = &c.w[(o * c.cin + i) * kk..][..kk];
                        let at = ((b * c.cout + o) * cin + src_of(b, i)) * kk;
                        w[at..at + kk].copy_from_slice(from);
                    }
                }
            }
            Conv {
                cin,
                cout,
                k: c.k,
                w,
                b: (0..3).flat_map(|_| c.b.iter().copied()).collect(),
            }
        })
        .collect();
    Cnn::checked_colour(
        convs,
        g.meta,
        (g.frame, 3),
        g.fixed_point,
        None,
        Path::new("three-copies"),
    )
    .expect("a valid colour model")
}

/// A 13 x 17 RGB pattern (odd sides: the frame pads), 8 bits.
fn rgb_pattern(alpha: bool) -> (u32, u32, Vec<u8>) {
    let (w, h) = (17u32, 13u32);
    let n = if alpha { 4 } else { 3 };
    let px = (0..w * h)
        .flat_map(|i| {
            let (r, c) = (i / w, i % w);
            let v = [
                (r * 19 + c * 3) % 256,
                (c * 15 + 40) % 256,
                (r * c * 7 + 90) % 256,
                (i * 13) % 256,
            ];
            v.into_iter().take(n).map(|x| x as u8)
        })
        .collect();
    (w, h, px)
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    gray: PathBuf,
    colour: PathBuf,
    clean: PathBuf,
}

fn setup() -> Setup {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let g = random_framed_cnn(&[5, 6, 6, 4], 3, 5, META, Frame::FFDNET);
    let gray = dir.join("gray-ffdnet.npz");
    g.save(&gray).unwrap();
    let colour = dir.join("colour-ffdnet.npz");
    three_copies(&g).save(&colour).unwrap();
    let (w, h, px) = rgb_pattern(false);
    let clean = dir.join("clean.png");
    image::RgbImage::from_raw(w, h, px)
        .unwrap()
        .save(&clean)
        .unwrap();
    Setup {
        _dir: d,
        dir,
        gray,
        colour,
        clean,
    }
}

/// add-noise on RGB: 8-bit RGB out, each channel's noise its own; denoise with the colour
/// model gives each plane what the gray model gives it (fixed point: exactly), and PSNR is
/// over the three channels.
#[test]
fn colour_ffdnet_denoises_each_plane_as_its_gray_copy() {
    let t = setup();
    let noisy = t.dir.join("noisy.png");
    ok(&ppd(&[
        "add-noise",
        "--image",
        &s(&t.clean),
        "--sigma",
        "25",
        "--seed",
        "3",
        "--out",
        &s(&noisy),
    ]));
    let clean_rgb = image::open(&t.clean).unwrap().into_rgb8();
    let n = image::open(&noisy).unwrap();
    let n = n.as_rgb8().expect("an 8-bit RGB noisy image");
    // Every channel noisy, differently (independent noise, not one gray noise for all).
    let diff = |c: usize| -> Vec<i32> {
        n.pixels()
            .zip(clean_rgb.pixels())
            .map(|(a, b)| i32::from(a[c]) - i32::from(b[c]))
            .collect()
    };
    let (dr, dg) = (diff(0), diff(1));
    assert!(
        dr.iter().any(|&v| v != 0) && dr != dg,
        "channels not independently noisy"
    );

    // The three planes of the noisy image, each as a gray PNG.
    let (w, h) = n.dimensions();
    let planes: Vec<PathBuf> = (0..3)
        .map(|c| {
            let p = t.dir.join(format!("plane{c}.png"));
            let v: Vec<u8> = n.pixels().map(|px| px[c]).collect();
            image::GrayImage::from_raw(w, h, v)
                .unwrap()
                .save(&p)
                .unwrap();
            p
        })
        .collect();
    for arith in ["fixed", "float"] {
        let out = t.dir.join(format!("den-{arith}.png"));
        let sum = ok(&ppd(&[
            "--json",
            "denoise",
            "--model",
            &s(&t.colour),
            "--image",
            &s(&noisy),
            "--sigma",
            "25",
            "--arith",
            arith,
            "--clean",
            &s(&t.clean),
            "--out",
            &s(&out),
        ]));
        let v: serde_json::Value = serde_json::from_str(sum.trim()).unwrap();
        let got = image::open(&out).unwrap();
        let got = got.as_rgb8().expect("an 8-bit RGB result").clone();
        for (c, plane) in planes.iter().enumerate() {
            let g_out = t.dir.join(format!("g{c}-{arith}.png"));
            ok(&ppd(&[
                "denoise",
                "--model",
                &s(&t.gray),
                "--image",
                &s(plane),
                "--sigma",
                "25",
                "--arith",
                arith,
                "--out",
                &s(&g_out),
            ]));
            let want = image::open(&g_out).unwrap().into_luma8();
            let worst = got
                .pixels()
                .zip(want.pixels())
                .map(|(a, b)| (i32::from(a[c]) - i32::from(b[0])).abs())
                .max()
                .unwrap();
            // Fixed point is exact integer arithmetic; float sums in another order (f32).
            let bound = if arith == "fixed" { 0 } else { 1 };
            assert!(worst <= bound, "{arith}, plane {c}: off by {worst}");
        }
        // PSNR over the three channels, 0..255, as the FFDNet paper computes it.
        let mse: f64 = got
            .as_raw()
            .iter()
            .zip(clean_rgb.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            / got.as_raw().len() as f64;
        let want = 10.0 * (255.0f64 * 255.0 / mse).log10();
        let psnr = v["psnr"].as_f64().unwrap();
        assert!(
            (psnr - want).abs() < 1e-9,
            "{arith}: psnr {psnr}, want {want}"
        );
        let m = ok(&ppd(&["--json", "metrics", &s(&t.clean), &s(&out)]));
        let m: serde_json::Value = serde_json::from_str(m.trim()).unwrap();
        assert!((m["psnr"].as_f64().unwrap() - want).abs() < 1e-9, "{m}");
    }
}

/// RGBA in, RGBA out: the alpha samples untouched; a 16-bit RGB comes back 16-bit.
#[test]
fn alpha_is_kept_and_depth_follows_the_source() {
    let t = setup();
    let (w, h, px) = rgb_pattern(true);
    let rgba = t.dir.join("rgba.png");
    image::RgbaImage::from_raw(w, h, px.clone())
        .unwrap()
        .save(&rgba)
        .unwrap();
    let out = t.dir.join("rgba-den.tif");
    ok(&ppd(&[
        "denoise",
        "--model",
        &s(&t.colour),
        "--image",
        &s(&rgba),
        "--sigma",
        "10",
        "--out",
        &s(&out),
    ]));
    let got = image::open(&out).unwrap();
    let got = got.as_rgba8().expect("RGBA 8 bits out");
    let alpha = |v: &[u8]| v.chunks_exact(4).map(|p| p[3]).collect::<Vec<_>>();
    assert_eq!(alpha(got.as_raw()), alpha(&px));

    let rgb16: Vec<u16> = (0..w * h * 3).map(|i| (i * 613) as u16).collect();
    let p16 = t.dir.join("rgb16.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(w, h, rgb16)
        .unwrap()
        .save(&p16)
        .unwrap();
    let out = t.dir.join("rgb16-den.png");
    ok(&ppd(&[
        "denoise",
        "--model",
        &s(&t.colour),
        "--image",
        &s(&p16),
        "--sigma",
        "10",
        "--out",
        &s(&out),
    ]));
    assert!(image::open(&out).unwrap().as_rgb16().is_some());
}

/// A gray model given a colour image, or a colour model a gray one, is refused by name, and
/// nothing is written.
#[test]
fn colour_and_gray_mismatches_are_refused_by_name() {
    let t = setup();
    let out = t.dir.join("x.png");
    let o = ppd(&[
        "denoise",
        "--model",
        &s(&t.gray),
        "--image",
        &s(&t.clean),
        "--sigma",
        "25",
        "--out",
        &s(&out),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}: a colour image (RGB, 8 bits); {} is gray: give --as-gray",
            s(&t.clean),
            s(&t.gray)
        )),
        "{err}"
    );
    let gray_img = t.dir.join("gray.png");
    image::GrayImage::from_raw(4, 3, vec![9; 12])
        .unwrap()
        .save(&gray_img)
        .unwrap();
    let o = ppd(&[
        "denoise",
        "--model",
        &s(&t.colour),
        "--image",
        &s(&gray_img),
        "--sigma",
        "25",
        "--out",
        &s(&out),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}: a gray image (8 bits); {} is colour",
            s(&gray_img),
            s(&t.colour)
        )),
        "{err}"
    );
    assert!(!out.exists());

    // share-model takes the colour FFDNet (the secure path: tests/suite/secure/colour_secure.rs), but
    // refuses by name a colour model without a noise map, writing nothing.
    let prefix = t.dir.join("shares");
    let o = ppd(&[
        "--json",
        "share-model",
        "--model",
        &s(&t.colour),
        "--out",
        &s(&prefix),
    ]);
    let j: serde_json::Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(j["colours"], 3, "{j}");
    let plain = t.dir.join("colour-plain.npz");
    random_framed_cnn(&[3, 4, 3], 3, 5, META, Frame::PLAIN)
        .save(&plain)
        .unwrap();
    let o = ppd(&[
        "share-model",
        "--model",
        &s(&plain),
        "--out",
        &s(&t.dir.join("plain")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}: a colour model without a noise map",
            s(&plain)
        )),
        "{err}"
    );
    assert!(!t.dir.join("plain.p0").exists());
}

/// `add-noise --sigma-per-colour`: each plane gets noise of its own level (measured on a
/// flat mid-grey image, where nothing clips), and a gray image is refused by name.
#[test]
fn add_noise_takes_a_level_per_colour() {
    let d = tempfile::tempdir().unwrap();
    let (clean, noisy) = (d.path().join("flat.png"), d.path().join("noisy.png"));
    image::RgbImage::from_pixel(96, 96, image::Rgb([128, 128, 128]))
        .save(&clean)
        .unwrap();
    let out = ok(&ppd(&[
        "add-noise",
        "--image",
        &s(&clean),
        "--sigma-per-colour",
        "4,12,30",
        "--out",
        &s(&noisy),
    ]));
    assert!(
        out.contains("sigma 4.0000, 12.0000, 30.0000 for R, G, B"),
        "{out}"
    );
    let n = image::open(&noisy).unwrap().into_rgb8();
    for (c, level) in [4.0, 12.0, 30.0].into_iter().enumerate() {
        let m = n.pixels().count() as f64;
        let rms = (n
            .pixels()
            .map(|p| (f64::from(p[c]) - 128.0).powi(2))
            .sum::<f64>()
            / m)
            .sqrt();
        assert!(
            (rms - level).abs() < 0.1 * level + 0.5,
            "plane {c}: noise {rms:.2} for level {level}"
        );
    }
    let gray = d.path().join("gray.png");
    image::GrayImage::from_pixel(8, 8, image::Luma([100]))
        .save(&gray)
        .unwrap();
    let o = ppd(&[
        "add-noise",
        "--image",
        &s(&gray),
        "--sigma-per-colour",
        "4,12,30",
        "--out",
        &s(&d.path().join("x.png")),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not one colour image"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
