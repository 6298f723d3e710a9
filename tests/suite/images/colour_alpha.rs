//! RGBA through the secure colour path (issue 48, item 1): share-image of an RGBA PNG or
//! TIFF shares the R, G and B planes as an RGB image and writes the alpha to `<out>.alpha`,
//! for the receiver alone; `reconstruct --alpha` writes RGBA with the alpha untouched. The
//! RGB is `denoise --arith fixed`'s bit for bit on both engines; the servers' and the
//! dealer's files are the same whatever the alpha; an alpha of another job, cut short or
//! altered, and an RGBA image for a gray model, are refused by name.

use common::graph_job::{refused, Dir};
use common::{ok, run};
use ndarray::Array2;
use ppdenoise::formats::bodies::ImageShare;
use ppdenoise::formats::container::{read_header, Kind};
use ppdenoise::image::{load_picture, ColourImage, Picture};
use ppdenoise::model::cnn::{random_framed_cnn, Cnn, CnnMeta};
use ppdenoise::model::frame::Frame;
use ppdenoise::ring::cnn::{CnnFixed, CnnPlan};
use ppdenoise::ring::share::Stream;

use crate::common;

const META: CnnMeta = CnnMeta {
    sigma: 25.0,
    residual: false,
};
const H: usize = 10;
const W: usize = 12;

/// A colour FFDNet-shaped random network shared as model.pub, model.p0, model.p1; and a gray
/// one as graym.*.
fn models(d: &Dir) -> Cnn {
    let colour = random_framed_cnn(&[13, 8, 12], 3, 7, META, Frame::FFDNET);
    colour.save(&d.path("colour.npz")).unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("colour.npz"),
        "--out",
        &d.p("model"),
    ]);
    let gray = random_framed_cnn(&[5, 6, 4], 3, 5, META, Frame::FFDNET);
    gray.save(&d.path("gray.npz")).unwrap();
    ok(&[
        "share-model",
        "--model",
        &d.p("gray.npz"),
        "--out",
        &d.p("graym"),
    ]);
    colour
}

/// An RGBA image of H x W at `depth` whose alpha is pattern `k`.
fn rgba(depth: u8, k: u32) -> ColourImage {
    let planes = Array2::from_shape_fn((3 * H, W), |(r, c)| ((r * 19 + c * 23 + 7) % 256) as f64);
    let max = if depth == 8 { 256 } else { 65536 };
    let alpha = Array2::from_shape_fn((H, W), |(r, c)| {
        ((r as u32 * 7919 + c as u32 * 104_729 + k * 31_337) % max) as u16
    });
    ColourImage {
        planes,
        bit_depth: depth,
        alpha: Some(alpha),
        stored_max: None,
    }
}

fn share(d: &Dir, image: &str, model: &str, out: &str) -> std::process::Output {
    run(&[
        "share-image",
        "--image",
        &d.p(image),
        "--sigma",
        "25",
        "--model",
        &d.p(&format!("{model}.pub")),
        "--out",
        &d.p(out),
    ])
}

fn colour(d: &Dir, name: &str) -> ColourImage {
    match load_picture(d.path(name)).unwrap() {
        Picture::Colour(c) => c,
        Picture::Gray(_) => panic!("{name}: not colour"),
    }
}

fn reconstruct(d: &Dir, out: &str, extra: &[&str]) -> std::process::Output {
    let (s0, s1, o) = (d.p("out.p0"), d.p("out.p1"), d.p(out));
    let mut args = vec!["reconstruct", "--insecure-unsigned", "--share0", &s0];
    args.extend(["--share1", &s1, "--out", &o]);
    args.extend(extra);
    run(&args)
}

/// An RGBA file (`ext`, `depth`) through share-image, gen-triplets, both servers on both
/// engines and reconstruct --alpha: its RGB is `denoise --arith fixed`'s bit for bit, its
/// alpha the input's, at the input's depth; without --alpha, RGB and a note saying so.
fn rgba_job(ext: &str, depth: u8) {
    let d = Dir::new();
    models(&d);
    let noisy = format!("noisy.{ext}");
    let src = rgba(depth, 1);
    src.save(d.path(&noisy)).unwrap();
    let j = common::summary(&share(&d, &noisy, "model", "image"), "share-image");
    assert_eq!(j["colours"], 3, "{j}");
    assert_eq!(j["receiver_alpha"], d.p("image.alpha"), "{j}");
    ok(&[
        "denoise",
        "--model",
        &d.p("colour.npz"),
        "--image",
        &d.p(&noisy),
        "--sigma",
        "25",
        "--arith",
        "fixed",
        "--out",
        &d.p(&format!("fixed.{ext}")),
    ]);
    let fixed = colour(&d, &format!("fixed.{ext}"));
    for engine in ["gc", "gmw"] {
        d.deal_and_serve(engine, "rgba");
        let out = format!("{engine}.{ext}");
        let o = reconstruct(&d, &out, &["--alpha", &d.p("image.alpha")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = colour(&d, &out);
        assert_eq!(
            got.bit_depth, depth,
            "{engine}: written at the source's depth"
        );
        assert_eq!(
            got.planes, fixed.planes,
            "{engine}: secure and denoise --arith fixed"
        );
        assert_eq!(got.alpha, src.alpha, "{engine}: the alpha, untouched");
        assert_eq!(common::summary(&o, "reconstruct --alpha")["alpha"], true);
        // Without the alpha: RGB, and the summary says so.
        let o = reconstruct(&d, &format!("rgb.{ext}"), &[]);
        assert_eq!(common::summary(&o, "reconstruct")["alpha"], false);
        let human = std::process::Command::new(common::bin())
            .args([
                "reconstruct",
                "--insecure-unsigned",
                "--share0",
                &d.p("out.p0"),
                "--share1",
                &d.p("out.p1"),
                "--out",
                &d.p(&format!("rgb2.{ext}")),
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&human.stdout);
        assert!(said.contains("written as RGB (no --alpha"), "{said}");
        let rgb = colour(&d, &format!("rgb.{ext}"));
        assert_eq!((rgb.alpha, &rgb.planes), (None, &fixed.planes));
        // At the other depth the alpha is scaled as the colour is: x 257, or / 257 rounded.
        let other = if depth == 8 { 16 } else { 8 };
        let out = format!("{engine}-{other}.{ext}");
        let o = reconstruct(
            &d,
            &out,
            &[
                "--alpha",
                &d.p("image.alpha"),
                "--bit-depth",
                &other.to_string(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = colour(&d, &out);
        let scaled = src.alpha.as_ref().unwrap().mapv(|v| match other {
            16 => v * 257,
            _ => (f64::from(v) / 257.0).round() as u16,
        });
        assert_eq!(got.bit_depth, other, "{engine}: --bit-depth {other}");
        assert_eq!(
            got.alpha,
            Some(scaled),
            "{engine}: the alpha at {other} bits"
        );
    }
    // An alpha given with a gray job's shares is refused, nothing written.
    let gray = ppdenoise::image::GrayImage::new(Array2::from_elem((H, W), 100.0), 8);
    ppdenoise::image::save(&gray, d.path("g.png"), 8).unwrap();
    let o = share(&d, "g.png", "graym", "gimage");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = d.gen_triplets("graym.pub", "gimage.pub", "tg", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for o in d.serve(("graym", "gimage", "tg")) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = reconstruct(&d, "g-out.png", &["--alpha", &d.p("image.alpha")]);
    refused(
        &o,
        "the job is a gray image; an alpha goes with a colour (RGBA) job",
    );
    assert!(!d.path("g-out.png").exists());
}

#[test]
fn rgba_png_8_bits_through_both_engines() {
    rgba_job("png", 8);
}

#[test]
fn rgba_tiff_16_bits_through_both_engines() {
    rgba_job("tif", 16);
}

/// The same RGB with two alphas: the public job headers (all the dealer gets) are the same
/// but for the fresh job id, the servers' files are the same size with the same headers but
/// for the id, and their shares add up to the same values, those of the image without alpha.
/// Then the refusals: an alpha of another job, cut short, altered; an RGBA image for a gray
/// model.
#[test]
fn the_alpha_reaches_no_server_and_bad_alphas_are_refused() {
    let d = Dir::new();
    let m = models(&d);
    let plan = CnnPlan::from_cnn(&m, CnnFixed::for_model(&m)).unwrap();
    rgba(8, 1).save(d.path("a.png")).unwrap();
    rgba(8, 2).save(d.path("b.png")).unwrap();
    ColourImage {
        alpha: None,
        stored_max: None,
        ..rgba(8, 1)
    }
    .save(d.path("rgb.png"))
    .unwrap();
    assert_ne!(colour(&d, "a.png").alpha, colour(&d, "b.png").alpha);
    for (img, out) in [("a.png", "image"), ("b.png", "other"), ("rgb.png", "plain")] {
        common::summary(&share(&d, img, "model", out), "share-image");
    }
    assert!(
        !d.path("plain.alpha").exists(),
        "an RGB image has no alpha file"
    );
    let unnamed = |p: &str| {
        let mut h = read_header(&d.path(p)).unwrap();
        h.job_id = None;
        h
    };
    let sums: Vec<Vec<u64>> = ["image", "other", "plain"]
        .iter()
        .map(|out| {
            for e in ["pub", "p0", "p1"] {
                let p = format!("{out}.{e}");
                assert_eq!(unnamed(&p), unnamed(&format!("image.{e}")), "{p}'s header");
                assert_eq!(
                    std::fs::metadata(d.path(&p)).unwrap().len(),
                    std::fs::metadata(d.path(&format!("image.{e}")))
                        .unwrap()
                        .len(),
                    "{p}'s size"
                );
            }
            d.sum_of(out, Kind::ImageShare, |b: &ImageShare| {
                let n = plan.input_len(b.job.height, b.job.width);
                b.data.materialise(Stream::ImageShare, n).unwrap()
            })
            .1
        })
        .collect();
    assert_eq!(sums[0], sums[1], "the shared values, whatever the alpha");
    assert_eq!(
        sums[0], sums[2],
        "the shared values, with and without alpha"
    );
    d.deal_and_serve("gmw", "rgba");
    // The alpha of another job of the same gateway, model and image size.
    let o = reconstruct(&d, "x.png", &["--alpha", &d.p("other.alpha")]);
    refused(&o, "the alpha of job");
    // Cut short, and one sample altered.
    let bytes = std::fs::read(d.path("image.alpha")).unwrap();
    std::fs::write(d.path("short.alpha"), &bytes[..bytes.len() - 9]).unwrap();
    refused(
        &reconstruct(&d, "x.png", &["--alpha", &d.p("short.alpha")]),
        "short.alpha: truncated",
    );
    let mut bad = bytes.clone();
    let at = bad.len() - 40;
    bad[at] ^= 1;
    std::fs::write(d.path("bad.alpha"), &bad).unwrap();
    refused(
        &reconstruct(&d, "x.png", &["--alpha", &d.p("bad.alpha")]),
        "bad.alpha: integrity check failed",
    );
    assert!(!d.path("x.png").exists(), "nothing written on a refusal");
    // The genuine one is taken.
    let o = reconstruct(&d, "x.png", &["--alpha", &d.p("image.alpha")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(colour(&d, "x.png").alpha, colour(&d, "a.png").alpha);
    // An RGBA image for the gray model: refused before anything is written, alpha included.
    refused(
        &share(&d, "a.png", "graym", "g"),
        "a colour image; the model (gray) is gray",
    );
    for e in ["p0", "p1", "pub", "alpha"] {
        assert!(!d.path(&format!("g.{e}")).exists(), "g.{e} written");
    }
}

/// `--alpha-to`: the alpha is sealed to the receiver (a server's identity cannot open it, the
/// receiver's can, signed by the gateway), refused without a signing key or when it names a
/// server's recipient; and the alpha is staged with the shares, so that when it cannot be
/// written no share of its job is either.
#[test]
fn a_sealed_alpha_is_the_receivers_alone_and_comes_with_its_shares() {
    use ppdenoise::formats::receiver_alpha::read_checked;
    use ppdenoise::formats::sealed::use_identity;
    use ppdenoise::formats::signing::{PublicKey, Role, Trust};
    let d = Dir::new();
    models(&d);
    rgba(8, 3).save(d.path("noisy.png")).unwrap();
    let keys = d.path("sealing");
    let signed = [("gw", true), ("owner", true)];
    for (name, signing) in [("rx", false), ("s0", false), ("s1", false)]
        .into_iter()
        .chain(signed)
    {
        let mut args = vec![
            "keygen",
            "--name",
            name,
            "--out-dir",
            keys.to_str().unwrap(),
        ];
        if signing {
            args.push("--signing");
        }
        ok(&args);
    }
    let k = |f: &str| keys.join(f).display().to_string();
    // The model signed by its owner, whom a signing gateway must pin.
    ok(&[
        "share-model",
        "--model",
        &d.p("colour.npz"),
        "--out",
        &d.p("smodel"),
        "--sign-key",
        &k("owner.sign-key"),
    ]);
    let share_to = |extra: &[&str]| {
        let (img, model, out) = (d.p("noisy.png"), d.p("smodel.pub"), d.p("image"));
        let mut args = vec!["share-image", "--image", &img, "--sigma", "25", "--model"];
        args.extend([model.as_str(), "--out", &out]);
        args.extend(extra);
        run(&args)
    };
    let nothing_written = |what: &str| {
        for f in ["image.p0", "image.p1", "image.pub", "image.alpha"] {
            assert!(!d.path(f).exists(), "{what}: {f} written");
        }
    };
    let rx = k("rx.age-recipient");
    let o = share_to(&["--alpha-to", &rx]);
    refused(
        &o,
        "--alpha-to: a sealed file must be signed by its maker: give --sign-key",
    );
    nothing_written("unsigned");
    let (s0, s1, gw) = (
        k("s0.age-recipient"),
        k("s1.age-recipient"),
        k("gw.sign-key"),
    );
    let owner = k("owner.sign-pub");
    let seal = [
        "--to-s0",
        &s0,
        "--to-s1",
        &s1,
        "--sign-key",
        &gw,
        "--owner-key",
        &owner,
    ];
    let o = share_to(&[&["--alpha-to", s0.as_str()][..], &seal[..]].concat());
    refused(
        &o,
        "is --to-s0's recipient: the alpha is the receiver's alone",
    );
    nothing_written("a server's recipient");

    // The alpha's path taken by a folder: the whole set is refused, shares included.
    std::fs::create_dir(d.path("image.alpha")).unwrap();
    let o = share_to(&[&["--alpha-to", rx.as_str()][..], &seal[..]].concat());
    refused(&o, "image.alpha");
    for f in ["image.p0", "image.p1", "image.pub"] {
        assert!(!d.path(f).exists(), "{f} written without its alpha");
    }
    std::fs::remove_dir(d.path("image.alpha")).unwrap();

    let j = common::summary(
        &share_to(&[&["--alpha-to", rx.as_str()][..], &seal[..]].concat()),
        "share-image --alpha-to",
    );
    let alpha = d.path("image.alpha");
    let raw = std::fs::read(&alpha).unwrap();
    assert!(raw.starts_with(b"age-encryption.org"), "not sealed");
    let peek = |identity: &str| {
        run(&[
            "inspect",
            "--identity",
            &k(identity),
            alpha.to_str().unwrap(),
        ])
    };
    assert!(
        !peek("s0.age-identity").status.success(),
        "S0 opened the alpha"
    );
    assert!(
        !peek("s1.age-identity").status.success(),
        "S1 opened the alpha"
    );
    assert!(peek("rx.age-identity").status.success());
    // The receiver's read: signed by the pinned gateway, of this job, the input's alpha.
    use_identity(&keys.join("rx.age-identity")).unwrap();
    let gw_pub = PublicKey::parse(&k("gw.sign-pub")).unwrap();
    let job: [u8; 16] = hex::decode(j["job_id"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let trust = Trust::Pinned(vec![(Role::Gateway, gw_pub)]);
    let (got, depth) = read_checked(&alpha, &trust, &job, (H, W)).unwrap();
    assert_eq!((got, depth), (rgba(8, 3).alpha.unwrap(), 8));
}
