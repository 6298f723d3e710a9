//! Colour jobs through the real binary (issue 48, items 1 and 3): share-model of a colour
//! FFDNet, share-image of an RGB PNG or TIFF, gen-triplets, two `serve` processes over the
//! TLS link, reconstruct back to RGB. The output shares add up to the CNN oracle on the very
//! values the image shares hold, bit for bit, on both engines: for a colour FFDNet-shaped
//! random network (8-bit PNG) and for the authors' colour model on a small crop (16-bit
//! TIFF). And the refusals that keep gray and colour apart, named, before any randomness.

use ppdenoise::ring::Party;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{bin, no_link_addr, ok, run, start_pair, wait_limit};
use ppdenoise::formats::bodies::{load, ImageShare, OutputShare};
use ppdenoise::formats::container::{Header, Kind};
use ppdenoise::image::{load_picture, quantize_u8, ColourImage, Picture};
use ppdenoise::model::cnn::{random_framed_cnn, Cnn, CnnMeta};
use ppdenoise::model::frame::Frame;
use ppdenoise::model::noise_map::NoiseLevel;
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::cnn::{self as ring_cnn, CnnFixed, CnnPlan};
use ppdenoise::ring::share::Stream;

use crate::common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected a refusal mentioning {needle:?}"
    );
    assert!(err.contains(needle), "error lacks {needle:?}: {err}");
}

struct Dir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        for n in ["s0", "s1"] {
            ok(&[
                "keygen",
                "--name",
                n,
                "--out-dir",
                &dir.join("keys").display().to_string(),
            ]);
        }
        Dir { _tmp: tmp, dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `share-image --image IMAGE --sigma 25 --model MODEL.pub --out OUT` and `extra`.
    fn share_image(&self, image: &str, model: &str, out: &str, extra: &[&str]) -> Output {
        let (i, m, o) = (self.p(image), self.p(&format!("{model}.pub")), self.p(out));
        let mut args = vec!["share-image", "--image", &i, "--model", &m, "--out", &o];
        // --sigma-per-colour stands instead of --sigma.
        if !extra.contains(&"--sigma-per-colour") {
            args.extend(["--sigma", "25"]);
        }
        args.extend(extra);
        run(&args)
    }

    fn gen_triplets(&self, model: &str, image: &str, engine: &str) -> Output {
        let (m, i, o) = (
            self.p(&format!("{model}.pub")),
            self.p(&format!("{image}.pub")),
            self.p("triplets"),
        );
        run(&[
            "gen-triplets",
            "--model",
            &m,
            "--image",
            &i,
            "--out",
            &o,
            "--engine",
            engine,
        ])
    }

    /// `serve` of party `p`: model.p<p>, image.p<p>, triplets.p<p> -> out.p<p>.
    fn spawn(&self, p: u8, addr: &[String]) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &self.p(&format!("model.p{p}"))])
            .args(["--image", &self.p(&format!("image.p{p}"))])
            .args(["--triplets", &self.p(&format!("triplets.p{p}"))])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "60"])
            .args(["--state-dir", &self.p("state")])
            .args(["--out", &self.p(&format!("out.p{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }
}

/// The colour image at `path` (a gray one fails the test, naming it).
fn colour_at(path: impl AsRef<Path>) -> ColourImage {
    let path = path.as_ref();
    match load_picture(path).unwrap() {
        Picture::Colour(c) => c,
        Picture::Gray(_) => panic!("{}: not colour", path.display()),
    }
}

fn wait(c: Child) -> Output {
    wait_limit(c, Duration::from_secs(300))
}

const META: CnnMeta = CnnMeta {
    sigma: 25.0,
    residual: false,
};

/// An RGB pattern of `w` x `h` (8 bits).
fn rgb_pattern(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |c, r| {
        image::Rgb([
            ((r * 19 + c * 3) % 256) as u8,
            ((c * 15 + 40) % 256) as u8,
            ((r * c * 7 + 90) % 256) as u8,
        ])
    })
}

/// The job of `noisy` (an RGB file) for colour model `m` through the binary on `engine`:
/// share-image (as model.pub takes it), gen-triplets, both servers, reconstruct to `out`.
/// Asserts the shares hold the image's planes and its one map, encoded as the oracle takes
/// them, that the output shares add up to the oracle's output bit for bit, and that the
/// receiver's RGB file is the oracle's image. Returns the receiver's image.
fn secure_colour_job(d: &Dir, m: &Cnn, noisy: &str, engine: &str, out: &str) -> ColourImage {
    secure_colour_job_at(d, m, (noisy, engine, out), &[], &NoiseLevel::Uniform(25.0))
}

/// [`secure_colour_job`] with share-image's noise options `noise_args`, whose level (the
/// map the shares must hold) is `level`.
fn secure_colour_job_at(
    d: &Dir,
    m: &Cnn,
    (noisy, engine, out): (&str, &str, &str),
    noise_args: &[&str],
    level: &NoiseLevel,
) -> ColourImage {
    secure_colour_job_map(d, m, (noisy, engine, out), noise_args, level).0
}

/// [`secure_colour_job_at`], also returning the map the shares hold, decoded (sigma / 255
/// per stack cell, channel after channel).
fn secure_colour_job_map(
    d: &Dir,
    m: &Cnn,
    (noisy, engine, out): (&str, &str, &str),
    noise_args: &[&str],
    level: &NoiseLevel,
) -> (ColourImage, Vec<f64>) {
    let j = common::summary(
        &d.share_image(noisy, "model", "image", noise_args),
        "share-image",
    );
    assert_eq!(j["colours"], 3, "{j}");
    let o = d.gen_triplets("model", "image", engine);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let [c0, c1] = start_pair(&d.dir, |p, addr| d.spawn(p, addr));
    for (o, who) in [(wait(c0), "S0"), (wait(c1), "S1")] {
        assert!(
            o.status.success(),
            "{who} ({engine}): {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // What the image shares hold: the planes one after another, then the one map.
    let (h0, i0): (Header, ImageShare) =
        load(&d.path("image.p0"), Kind::ImageShare, Some(Party::S0)).unwrap();
    let (h1, i1): (Header, ImageShare) =
        load(&d.path("image.p1"), Kind::ImageShare, Some(Party::S1)).unwrap();
    let (hp, ()): (Header, ()) = load(&d.path("image.pub"), Kind::PublicJob, None).unwrap();
    // Levels per colour or per pixel are secret: the job names the model's nominal sigma,
    // and no header holds a level.
    if let NoiseLevel::PerColour(levels) = level {
        for (who, h) in [("image.p0", &h0), ("image.p1", &h1), ("image.pub", &hp)] {
            let job: serde_json::Value = serde_json::from_str(h.info("job").unwrap()).unwrap();
            assert_eq!(job["sigma"], META.sigma, "{who}: {job}");
            for (k, v) in &h.info {
                let tokens: Vec<&str> =
                    v.split(|c: char| !c.is_ascii_digit() && c != '.').collect();
                for l in levels {
                    assert!(
                        !tokens.contains(&l.to_string().as_str()),
                        "{who}: {k} = {v}"
                    );
                }
            }
        }
    }
    assert_eq!(i0.job.sigma, i1.job.sigma);
    let (h, w) = (i0.job.height, i0.job.width);
    assert_eq!(i0.job.colours, 3);
    let params = CnnFixed::for_model(m);
    let plan = CnnPlan::from_cnn(m, params).unwrap();
    assert_eq!(plan.colours(), 3);
    let n = plan.input_len(h, w);
    let enc: Vec<u64> = i0
        .data
        .materialise(Stream::ImageShare, n)
        .unwrap()
        .iter()
        .zip(&i1.data.materialise(Stream::ImageShare, n).unwrap())
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    let src = colour_at(d.path(noisy));
    assert_eq!((src.height(), src.width()), (h, w));
    let map = m.noise_map(level, h, w);
    assert_eq!(map.len(), m.map_channels() * h.div_ceil(2) * w.div_ceil(2));
    let pre = Preprocess::identity();
    assert_eq!(
        enc,
        ring_cnn::encode_image(&src.planes, &map, &pre, params.s),
        "the gateway's encoding"
    );
    let orc = ring_cnn::run(&plan, h, w, &enc);
    assert_eq!(orc.out_of_range, 0);
    let (_, o0): (Header, OutputShare) =
        load(&d.path("out.p0"), Kind::OutputShare, Some(Party::S0)).unwrap();
    let (_, o1): (Header, OutputShare) =
        load(&d.path("out.p1"), Kind::OutputShare, Some(Party::S1)).unwrap();
    let secure: Vec<u64> = o0
        .canvas
        .iter()
        .zip(&o1.canvas)
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    let diff = secure
        .iter()
        .zip(&orc.output)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(secure.len(), 3 * h * w);
    assert_eq!(diff, 0, "{engine}: {diff} values differ from the oracle");
    let j = ok(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &d.p("out.p0"),
        "--share1",
        &d.p("out.p1"),
        "--out",
        &d.p(out),
    ]);
    assert_eq!(j["colours"], 3);
    let got = colour_at(d.path(out));
    let dec = ring_cnn::decode_output(&orc.output, 3 * h, w, &pre, params.out_scale());
    assert_eq!(
        got.bit_depth, src.bit_depth,
        "written at the source's depth"
    );
    let want = ColourImage {
        planes: dec,
        bit_depth: src.bit_depth,
        alpha: None,
        stored_max: None,
    };
    // What the receiver wrote is the oracle's image at the file's precision.
    want.save(d.path("want.tif")).unwrap();
    let want = colour_at(d.path("want.tif"));
    assert_eq!(got.planes, want.planes, "{engine}: the receiver's image");
    let held = enc[3 * h * w..]
        .iter()
        .map(|&v| v as i64 as f64 / (1u64 << params.s) as f64)
        .collect();
    (got, held)
}

/// A colour FFDNet-shaped random network (13 channels in: R, G, B's four sub-images and one
/// map; 12 out), shared as the graph of its layers, an odd-sided 8-bit RGB PNG: secure ==
/// oracle on both engines, and the RGB PNG reconstruct writes is
/// `denoise --arith fixed`'s (the plaintext fixed point) exactly.
#[test]
fn colour_ffdnet_secure_is_bit_exact_on_both_engines() {
    for engine in ["gmw", "gc"] {
        let d = Dir::new();
        let m = random_framed_cnn(&[13, 8, 8, 12], 3, 21, META, Frame::FFDNET);
        assert_eq!(m.colours, 3);
        m.save(&d.path("colour.npz")).unwrap();
        let (model, out) = (d.p("colour.npz"), d.p("model"));
        let j = ok(&["share-model", "--model", &model, "--out", &out]);
        assert_eq!(j["network"], "graph");
        assert_eq!(j["colours"], 3);
        rgb_pattern(17, 13).save(d.path("noisy.png")).unwrap();
        let got = secure_colour_job(&d, &m, "noisy.png", engine, "denoised.png");
        assert_eq!(got.bit_depth, 8);
        ok(&[
            "denoise",
            "--model",
            &d.p("colour.npz"),
            "--image",
            &d.p("noisy.png"),
            "--sigma",
            "25",
            "--arith",
            "fixed",
            "--out",
            &d.p("fixed.png"),
        ]);
        let fixed = colour_at(d.path("fixed.png"));
        assert_eq!(
            got.planes, fixed.planes,
            "{engine}: secure and denoise --arith fixed"
        );
    }
}

/// A colour FFDNet with a noise map per colour (15 channels in: R, G, B's four sub-images,
/// then R, G, B's maps, the layout docs/cnn.md states; 12 out): a sigma per colour
/// (`--sigma-per-colour`) and a per-pixel map per plane (a (3h) x w .npy) go into the
/// shares as three map channels, secure == oracle on both engines, and the receiver's PNG
/// is `denoise --arith fixed`'s with the same options. The levels reach the output: another
/// sigma per colour gives another image.
#[test]
fn a_noise_map_per_colour_is_bit_exact_on_both_engines() {
    use ndarray::Array2;
    use ndarray_npy::WriteNpyExt;
    use ppdenoise::model::noise_map::PoissonGaussian;
    let (w, h) = (15usize, 11usize);
    // A map per plane: R's sigmas grow down the rows, G's across, B's a constant 40.
    let planes = Array2::from_shape_fn((3 * h, w), |(r, c)| match r / h {
        0 => 5.0 + 3.0 * (r % h) as f64,
        1 => 10.0 + 2.0 * c as f64,
        _ => 40.0,
    });
    // Levels whose mean and members are not the model's nominal sigma (25): a header
    // holding any of them, or their mean, is caught.
    let levels = [7.5, 31.25, 58.5];
    let pg = PoissonGaussian { a: 2.0, b: 9.0 };
    let png = Array2::from_shape_fn((3 * h, w), |(r, c)| {
        let px = rgb_pattern(w as u32, h as u32);
        f64::from(px.get_pixel(c as u32, (r % h) as u32)[r / h])
    });
    let kinds: [(&str, Vec<&str>, NoiseLevel); 3] = [
        (
            "levels",
            vec!["--sigma-per-colour", "7.5,31.25,58.5"],
            NoiseLevel::PerColour(levels.to_vec()),
        ),
        (
            "map",
            vec!["--noise-map", "MAP"],
            NoiseLevel::PerPixel(planes.clone()),
        ),
        (
            "signal",
            vec!["--noise", "poisson-gaussian:2,9"],
            NoiseLevel::PerPixel(pg.map_of(&png)),
        ),
    ];
    let runs = kinds
        .iter()
        .flat_map(|k| ["gmw", "gc"].map(|e| (e, k.0, k.1.clone(), k.2.clone())));
    for (engine, kind, args, level) in runs {
        let d = Dir::new();
        let m = random_framed_cnn(&[15, 8, 8, 12], 3, 33, META, Frame::FFDNET);
        assert_eq!((m.colours, m.map_channels()), (3, 3));
        m.save(&d.path("colour.npz")).unwrap();
        let j = ok(&[
            "share-model",
            "--model",
            &d.p("colour.npz"),
            "--out",
            &d.p("model"),
        ]);
        assert_eq!(j["colours"], 3);
        rgb_pattern(w as u32, h as u32)
            .save(d.path("noisy.png"))
            .unwrap();
        let mut f = std::fs::File::create(d.path("map.npy")).unwrap();
        planes.write_npy(&mut f).unwrap();
        let map = d.p("map.npy");
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "MAP" { map.as_str() } else { a })
            .collect();
        let (got, held) =
            secure_colour_job_map(&d, &m, ("noisy.png", engine, "out.png"), &args, &level);
        // The map the shares hold, checked apart from the code that builds it: three
        // channels of 8 x 6 cells, R's first.
        let (sh, sw) = (h.div_ceil(2), w.div_ceil(2));
        assert_eq!(held.len(), 3 * sh * sw);
        let at = |c: usize, y: usize, x: usize| held[(c * sh + y) * sw + x] * 255.0;
        // Half a step of the map's fixed point (s = 10: 255 / 2^10 / 2 = 0.125), and a little.
        let near = |a: f64, b: f64| (a - b).abs() < 0.2;
        for y in 0..sh {
            for x in 0..sw {
                match kind {
                    "levels" => {
                        for (c, s) in levels.into_iter().enumerate() {
                            assert!(near(at(c, y, x), s), "channel {c}: {}", at(c, y, x));
                        }
                    }
                    "map" => {
                        // R grows down the rows only, G across the columns only, B is 40.
                        assert!(near(at(0, y, x), at(0, y, 0)));
                        assert!(near(at(1, y, x), at(1, 0, x)));
                        assert!(y == 0 || at(0, y, 0) > at(0, y - 1, 0));
                        assert!(x == 0 || at(1, 0, x) > at(1, 0, x - 1));
                        assert!(near(at(2, y, x), 40.0));
                    }
                    _ => {
                        // G's pixels depend on the column only, and so does its map.
                        assert!(near(at(1, y, x), at(1, 0, x)));
                    }
                }
            }
        }
        if kind == "signal" {
            // R's map is its own, not G's.
            assert!((0..sh).any(|y| (0..sw).any(|x| !near(at(0, y, x), at(1, y, x)))));
        }
        let (model, image, fixed) = (d.p("colour.npz"), d.p("noisy.png"), d.p("fixed.png"));
        let mut den = vec![
            "denoise", "--model", &model, "--image", &image, "--arith", "fixed", "--out", &fixed,
        ];
        if args[0] != "--sigma-per-colour" {
            den.extend(["--sigma", "25"]);
        }
        den.extend(&args);
        ok(&den);
        let fixed = colour_at(d.path("fixed.png"));
        assert_eq!(got.planes, fixed.planes, "{engine}: secure and denoise");
        // The levels matter: one sigma for all planes gives another image.
        let other = d.p("other.png");
        ok(&[
            "denoise", "--model", &model, "--image", &image, "--arith", "fixed", "--sigma", "25",
            "--out", &other,
        ]);
        let other = colour_at(d.path("other.png"));
        assert_ne!(
            other.planes, fixed.planes,
            "{engine}: the levels were ignored"
        );
    }
}

/// Levels per colour plane where they cannot go, refused by name before anything is
/// written: for a model with one map channel for its planes (the authors' form), a map per
/// plane for it, a gray image, two levels, and a model with no map at all.
#[test]
fn levels_per_colour_are_refused_where_they_cannot_go() {
    use ndarray::Array2;
    use ndarray_npy::WriteNpyExt;
    let d = Dir::new();
    random_framed_cnn(&[13, 6, 12], 3, 5, META, Frame::FFDNET)
        .save(&d.path("one.npz"))
        .unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("one.npz"),
        "--out",
        &d.p("model"),
    ]);
    rgb_pattern(10, 8).save(d.path("rgb.png")).unwrap();
    refused(
        &d.share_image("rgb.png", "model", "x", &["--sigma-per-colour", "10,20,30"]),
        "a map per colour",
    );
    let mut f = std::fs::File::create(d.path("planes.npy")).unwrap();
    Array2::<f64>::from_elem((24, 10), 9.0)
        .write_npy(&mut f)
        .unwrap();
    refused(
        &d.share_image(
            "rgb.png",
            "model",
            "x",
            &["--noise-map", &d.p("planes.npy")],
        ),
        "a noise map per colour plane",
    );
    // Three equal levels are one level: taken.
    common::summary(
        &d.share_image(
            "rgb.png",
            "model",
            "same",
            &["--sigma-per-colour", "20,20,20"],
        ),
        "share-image",
    );
    random_framed_cnn(&[15, 6, 12], 3, 5, META, Frame::FFDNET)
        .save(&d.path("per.npz"))
        .unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("per.npz"),
        "--out",
        &d.p("per"),
    ]);
    refused(
        &d.share_image("rgb.png", "per", "x", &["--sigma-per-colour", "10,20"]),
        "2 level(s)",
    );
    refused(
        &d.share_image("rgb.png", "per", "x", &["--sigma-per-colour", "10,20,200"]),
        "takes up to 150",
    );
    refused(
        &d.share_image(
            "rgb.png",
            "per",
            "x",
            &["--sigma-per-colour", "10,20,30", "--sigma", "4"],
        ),
        "cannot be used with",
    );
    let gray = random_framed_cnn(&[5, 6, 4], 3, 5, META, Frame::FFDNET);
    gray.save(&d.path("gray.npz")).unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("gray.npz"),
        "--out",
        &d.p("g"),
    ]);
    image::GrayImage::from_fn(10, 8, |x, y| image::Luma([(x * 20 + y) as u8]))
        .save(d.path("gray.png"))
        .unwrap();
    refused(
        &d.share_image("gray.png", "g", "x", &["--sigma-per-colour", "10,20,30"]),
        "a gray image takes one level",
    );
    let plain = random_framed_cnn(&[1, 4, 1], 3, 5, META, Frame::PLAIN);
    plain.save(&d.path("plain.npz")).unwrap();
    let o = run(&[
        "denoise",
        "--model",
        &d.p("plain.npz"),
        "--image",
        &d.p("gray.png"),
        "--sigma-per-colour",
        "10,20,30",
    ]);
    refused(&o, "apply to models with a noise-map channel");
    for x in ["x.p0", "x.p1", "x.pub"] {
        assert!(!d.path(x).exists(), "{x} written");
    }
}

/// The authors' colour FFDNet (FFDNet_Clip_color, converted by `make`) on a 24 x 20 crop of
/// kodim01 with colour noise, as a 16-bit RGB TIFF: secure == oracle on both engines,
/// written back as a 16-bit RGB TIFF, and it denoises.
#[test]
fn authors_colour_ffdnet_secure_is_bit_exact_on_both_engines() {
    let weights = root().join("../shared/models/ffdnet/FFDNet_Clip_color.mat");
    assert!(weights.exists(), "{}: absent", weights.display());
    let npz = {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let st = Command::new("make")
            .args(["-s", "out/ffdnet/clip-colour.npz"])
            .current_dir(root())
            .status()
            .expect("run make");
        assert!(st.success(), "make out/ffdnet/clip-colour.npz failed");
        root().join("out/ffdnet/clip-colour.npz")
    };
    let m = Cnn::load(&npz).unwrap();
    let file = root().join("../shared/data/kodak24/kodim01.png");
    let Picture::Colour(full) = load_picture(&file).unwrap() else {
        panic!("{}: not colour", file.display())
    };
    let (ch, cw, fh) = (20, 24, full.height());
    let crop = ndarray::Array2::from_shape_fn((3 * ch, cw), |(r, x)| {
        full.planes[[(r / ch) * fh + r % ch + 300, x + 400]]
    });
    for engine in ["gc", "gmw"] {
        let d = Dir::new();
        let clean = ColourImage {
            planes: crop.clone(),
            bit_depth: 8,
            alpha: None,
            stored_max: None,
        };
        clean.save(d.path("clean.png")).unwrap();
        ok(&[
            "add-noise",
            "--image",
            &d.p("clean.png"),
            "--sigma",
            "25",
            "--seed",
            "4",
            "--out",
            &d.p("noisy8.png"),
        ]);
        // The same noisy values at 16 bits (v * 257): the TIFF path and its depth.
        let n8 = colour_at(d.path("noisy8.png"));
        ColourImage {
            bit_depth: 16,
            ..n8.clone()
        }
        .save(d.path("noisy.tif"))
        .unwrap();
        ok(&[
            "share-model",
            "--model",
            &npz.display().to_string(),
            "--out",
            &d.p("model"),
        ]);
        let got = secure_colour_job(&d, &m, "noisy.tif", engine, "denoised.tif");
        assert_eq!(got.bit_depth, 16);
        let psnr = |x: &ndarray::Array2<f64>| ppdenoise::metrics::psnr(&crop, x, 255.0);
        let (pn, pd) = (psnr(&n8.planes), psnr(&quantize_u8(&got.planes)));
        eprintln!("{engine}: kodim01 crop, sigma 25: noisy {pn:.2} dB, secure {pd:.2} dB");
        assert!(pd > pn + 3.0, "{engine}: {pd:.2} dB from noisy {pn:.2}");
    }
}

/// Gray and colour kept apart, by name, before any randomness: share-image of a colour image
/// for a gray model (and `--as-gray`, which converts, saying so) and of a gray image for a
/// colour model; an RGBA image for a gray model; gen-triplets and serve given a colour job for a gray model
/// and the reverse; a job file from before colour jobs.
#[test]
fn gray_and_colour_are_refused_by_name() {
    let d = Dir::new();
    let colour = random_framed_cnn(&[13, 6, 12], 3, 5, META, Frame::FFDNET);
    colour.save(&d.path("colour.npz")).unwrap();
    let gray = random_framed_cnn(&[5, 6, 4], 3, 5, META, Frame::FFDNET);
    gray.save(&d.path("gray.npz")).unwrap();
    for (npz, out) in [("colour.npz", "model"), ("gray.npz", "graym")] {
        ok(&["share-model", "--model", &d.p(npz), "--out", &d.p(out)]);
    }
    rgb_pattern(10, 8).save(d.path("rgb.png")).unwrap();
    image::GrayImage::from_fn(10, 8, |x, y| image::Luma([(x * 20 + y) as u8]))
        .save(d.path("gray.png"))
        .unwrap();
    let none_written = |out: &str| {
        for e in ["p0", "p1", "pub"] {
            assert!(!d.path(&format!("{out}.{e}")).exists(), "{out}.{e} written");
        }
    };
    // share-image: a colour image for the gray model, a gray one for the colour model.
    refused(
        &d.share_image("rgb.png", "graym", "x", &[]),
        "a colour image; the model (gray) is gray",
    );
    none_written("x");
    refused(
        &d.share_image("gray.png", "model", "x", &[]),
        "a gray image; the model (colour) is colour (3 planes)",
    );
    none_written("x");
    // --as-gray converts the colour image for the gray model and says so.
    let o = run(&[
        "--as-gray",
        "share-image",
        "--image",
        &d.p("rgb.png"),
        "--sigma",
        "25",
        "--model",
        &d.p("graym.pub"),
        "--out",
        &d.p("luma"),
    ]);
    let j = common::summary(&o, "share-image --as-gray");
    assert_eq!(j["colours"], 1);
    assert!(
        j["as_gray"][0]
            .as_str()
            .unwrap()
            .ends_with("rgb.png (RGB, 8 bits)"),
        "{j}"
    );
    // RGBA for the gray model: refused as colour, its alpha file not written either
    // (tests/suite/images/colour_alpha.rs takes RGBA through a colour model).
    image::RgbaImage::from_pixel(6, 4, image::Rgba([1, 2, 3, 4]))
        .save(d.path("rgba.png"))
        .unwrap();
    refused(
        &d.share_image("rgba.png", "graym", "x", &[]),
        "a colour image; the model (gray) is gray",
    );
    none_written("x");
    assert!(!d.path("x.alpha").exists(), "x.alpha written");
    // A colour job dealt for the gray model, a gray job for the colour model: refused by
    // the dealer before it draws anything.
    common::summary(&d.share_image("rgb.png", "model", "image", &[]), "share");
    refused(
        &d.gen_triplets("graym", "image", "gmw"),
        "a colour (3 planes) image, but this model takes gray images",
    );
    assert!(!d.path("triplets.p0").exists());
    refused(
        &d.gen_triplets("model", "luma", "gmw"),
        "a gray image, but this model takes colour (3 planes) images",
    );
    assert!(!d.path("triplets.p0").exists());
    // serve: the gray model's share given the colour job is refused by the job's binding to
    // its model; behind it, a job of the colour model that says gray (its S0 share
    // rewritten) is refused by name before the link.
    let o = d.gen_triplets("model", "image", "gmw");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (mut h, mut body): (Header, ImageShare) =
        load(&d.path("image.p0"), Kind::ImageShare, Some(Party::S0)).unwrap();
    body.job.colours = 1;
    for (k, v) in h.info.iter_mut() {
        if k == "job" {
            *v = serde_json::to_string(&body.job).unwrap();
        }
    }
    ppdenoise::formats::container::write(
        &d.path("image.p0"),
        &h,
        &body,
        ppdenoise::formats::container::Seal::new(None, None),
    )
    .unwrap();
    refused(
        &wait(d.spawn(0, &no_link_addr())),
        "a gray image, but this model takes colour (3 planes) images",
    );
    assert!(!d.path("out.p0").exists());
    // A job file of version 8 (before jobs named their colours): refused by name.
    let mut bytes = std::fs::read(d.path("image.p1")).unwrap();
    bytes[8..10].copy_from_slice(&8u16.to_le_bytes());
    std::fs::write(d.path("old.p1"), &bytes).unwrap();
    refused(
        &run(&["inspect", &d.p("old.p1")]),
        "lacks the image's colour planes: share the image again",
    );
}

/// `share-image` of a colour image refuses what a colour job cannot take, by name: a
/// --window, signal-dependent --noise, a colour image without a colour model.
#[test]
fn colour_share_options_are_refused_by_name() {
    let d = Dir::new();
    let colour = random_framed_cnn(&[13, 6, 12], 3, 5, META, Frame::FFDNET);
    colour.save(&d.path("colour.npz")).unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("colour.npz"),
        "--out",
        &d.p("model"),
    ]);
    rgb_pattern(10, 8).save(d.path("rgb.png")).unwrap();
    refused(
        &d.share_image("rgb.png", "model", "x", &["--window", "10:200"]),
        "takes its full range",
    );
    refused(
        &d.share_image(
            "rgb.png",
            "model",
            "x",
            &["--noise", "poisson-gaussian:1,4"],
        ),
        "one map for its planes",
    );
    let o = run(&[
        "share-image",
        "--image",
        &d.p("rgb.png"),
        "--sigma",
        "25",
        "--out",
        &d.p("x"),
    ]);
    refused(&o, "colour images are shared for a colour CNN");
    assert!(!Path::new(&d.p("x.p0")).exists());
}

/// Rewrites the job that `path` names (its header's `job` entry, and a share's body) to say
/// three planes, written plain: a header from another tool, or a forger's where no maker's
/// key is pinned (signed files are refused before this by their makers' keys).
fn say_three_planes(path: &Path, party: Option<Party>) {
    use ppdenoise::formats::bodies::JobParams;
    use ppdenoise::formats::container::{read, write, Seal};
    let set_job = |h: &mut Header, job: &JobParams| {
        for (k, v) in h.info.iter_mut() {
            if k == "job" {
                *v = serde_json::to_string(job).unwrap();
            }
        }
    };
    match party {
        None => {
            let (mut h, b): (Header, ()) = read(path).unwrap();
            let mut job: JobParams = serde_json::from_str(h.info("job").unwrap()).unwrap();
            job.colours = 3;
            set_job(&mut h, &job);
            write(path, &h, &b, Seal::new(None, None)).unwrap();
        }
        Some(p) => {
            let (mut h, mut b): (Header, ImageShare) =
                load(path, Kind::ImageShare, Some(p)).unwrap();
            b.job.colours = 3;
            set_job(&mut h, &b.job);
            write(path, &h, &b, Seal::new(None, None)).unwrap();
        }
    }
}

/// Issue 73, item 4: a job that says three planes for a gray MLP or a gray CNN graph (the
/// gateway refuses to make one; a rewritten header, or another tool's, says so anyway) is
/// refused by the dealer (`gen-triplets`) and by the server (`serve`), each by its text,
/// before anything is drawn or claimed; the same files saying one plane deal and serve.
#[test]
fn a_colour_job_for_a_gray_mlp_or_graph_is_refused_by_the_dealer_and_the_servers() {
    use ppdenoise::import::onnx::proto::ModelProto;
    use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};
    use prost::Message;
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 4.0,
    };
    // A gray graph: the tiny DnCNN with a leaky ReLU, which only the graph walk reads.
    let mut m = ModelProto::decode(
        std::fs::read(root().join("fixtures/onnx/tiny-dncnn.onnx"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let g = m.graph.as_mut().unwrap();
    let relu = g.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
    relu.op_type = "LeakyRelu".into();
    let cases = [
        (
            "mlp.npz",
            "mlp",
            (
                "is an MLP, which takes gray images",
                "is an MLP's share, which takes gray images",
            ),
        ),
        (
            "graph.onnx",
            "graph",
            (
                "a colour (3 planes) image, but this model takes gray images",
                "a colour (3 planes) image, but this model takes gray images",
            ),
        ),
    ];
    for (file, network, (dealer, server)) in cases {
        let d = Dir::new();
        match network {
            "mlp" => random_model(&[49, 8, 9], 7, meta.clone())
                .save(&d.path(file))
                .unwrap(),
            _ => std::fs::write(d.path(file), m.encode_to_vec()).unwrap(),
        }
        let j = ok(&["share-model", "--model", &d.p(file), "--out", &d.p("model")]);
        // An MLP's summary names its widths; a graph's says it is one.
        let read_as =
            j["network"]
                .as_str()
                .unwrap_or(if j["widths"].is_array() { "mlp" } else { "?" });
        assert_eq!(read_as, network);
        image::GrayImage::from_fn(24, 24, |x, y| image::Luma([(x * 9 + y * 5) as u8]))
            .save(d.path("gray.png"))
            .unwrap();
        let stride: &[&str] = if network == "mlp" {
            &["--stride", "3"]
        } else {
            &[]
        };
        common::summary(
            &d.share_image("gray.png", "model", "image", stride),
            "share",
        );
        // The dealer, given a public job header that says three planes.
        std::fs::copy(d.path("image.pub"), d.path("three.pub")).unwrap();
        say_three_planes(&d.path("three.pub"), None);
        let o = d.gen_triplets("model", "three", "gmw");
        refused(&o, "three.pub: a colour");
        refused(&o, dealer);
        assert!(!d.path("triplets.p0").exists(), "{network}: dealt");
        // The server, given an image share that says three planes.
        let o = d.gen_triplets("model", "image", "gmw");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        say_three_planes(&d.path("image.p0"), Some(Party::S0));
        let o = wait(d.spawn(0, &no_link_addr()));
        refused(&o, "image.p0: a colour");
        refused(&o, server);
        assert!(!d.path("out.p0").exists(), "{network}: served");
    }
}
