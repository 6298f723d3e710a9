//! Colour DICOM (issue 48, item 1): every colour form read is checked against pydicom's
//! decoding of the same file (`make dicom-testdata` writes pydicom's pixels beside its
//! colour test files and the forms made there); the refusals are named; a colour job goes
//! through the binary's secure pipeline (both engines) from a YBR_FULL_422 JPEG and an RGB
//! DICOM and comes back as a derived RGB DICOM, bit-exact with the oracle.

use ppdenoise::ring::Party;
use std::path::{Path, PathBuf};

use ppdenoise::image::dicom::decode_colour;
use ppdenoise::image::{load_picture, Picture};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The colour test data of `make dicom-testdata`.
fn colour_dir() -> PathBuf {
    let d = root().join("out/dicom-testdata/colour");
    assert!(
        d.join("manifest.txt").exists(),
        "{}: missing; run `make dicom-testdata` (pydicom and OpenJPEG from PyPI)",
        d.display()
    );
    d
}

/// A file named in the manifest: `pydicom/NAME` from pydicom's wheel (in .venv-dicom),
/// else one made into the colour folder.
fn testdata(name: &str) -> PathBuf {
    match name.strip_prefix("pydicom/") {
        Some(rest) => common::pydicom_test_file(rest),
        None => colour_dir().join(name),
    }
}

/// How far ours may be from pydicom's decoding, in stored values: everything exactly but
/// lossy (DCT) JPEG, within [`LOSSY_JPEG_BOUND`]: libjpeg-turbo here, Thomas Richter's
/// libjpeg with pydicom's own YBR_FULL conversion there, which upsample chroma and round
/// differently. (JPEG-LS near-lossless and lossy JPEG 2000 are exact: one codec each.)
fn bound(name: &str) -> u16 {
    const LOSSY_JPEG: [&str; 8] = [
        "SC_rgb_dcmtk_+eb+c",
        "SC_rgb_jpeg_app14_dcmd",
        "SC_jpeg_no_color_transform",
        "SC_rgb_jpeg_dcmtk",
        "SC_rgb_jpeg_lossy_gdcm",
        "SC_rgb_small_odd_jpeg",
        "examples_ybr_color",
        "SC_rgb_jpeg_gdcm_lossy",
    ];
    if LOSSY_JPEG.iter().any(|p| name.contains(p)) {
        LOSSY_JPEG_BOUND
    } else {
        0
    }
}

/// The most a lossy JPEG's decoded sample differs from pydicom's (measured: 3, on the
/// 30-frame YBR_FULL_422 examples_ybr_color.dcm; 2 or less on the others).
const LOSSY_JPEG_BOUND: u16 = 3;

#[test]
fn every_colour_form_reads_as_pydicom_decodes_it() {
    if !common::have_dicom_testdata() {
        return;
    }
    let dir = colour_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    let mut report = Vec::new();
    let mut bad = Vec::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, frames, rows, cols, bytes): (&str, usize, usize, usize, usize) = (
            f[0],
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        );
        let path = testdata(name);
        let file = std::fs::read(&path).unwrap();
        let got = match decode_colour(&file, &path, true) {
            Ok(g) => g,
            Err(e) => {
                bad.push(e.to_string());
                continue;
            }
        };
        let raw = std::fs::read(dir.join(format!(
            "{}.rgb",
            PathBuf::from(name).file_name().unwrap().to_string_lossy()
        )))
        .unwrap();
        let want: Vec<u16> = if bytes == 1 {
            raw.iter().map(|&b| u16::from(b)).collect()
        } else {
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        assert_eq!(got.len(), frames, "{name}: frames");
        assert_eq!(
            want.len(),
            frames * rows * cols * 3,
            "{name}: reference size"
        );
        let top = if bytes == 1 { 255.0 } else { 65535.0 };
        let mut max = 0u16;
        for (k, img) in got.iter().enumerate() {
            assert_eq!((img.height(), img.width()), (rows, cols), "{name}");
            for y in 0..rows {
                for x in 0..cols {
                    for c in 0..3 {
                        let v = (img.plane(c)[[y, x]] * top / 255.0).round() as u16;
                        let w = want[((k * rows + y) * cols + x) * 3 + c];
                        max = max.max(v.abs_diff(w));
                    }
                }
            }
        }
        report.push(format!("{name}: max |ours - pydicom| = {max}"));
        if max > bound(name) {
            bad.push(format!("{name}: {max} > {}", bound(name)));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(bad.is_empty(), "beyond the bound: {bad:?}");
}

use crate::common;

use std::process::{Command, Output};
use std::time::Duration;

use common::graph_job::{refused, Dir};
use common::{ok, run, start_pair, wait_limit};
use ppdenoise::formats::bodies::{load, ImageShare, OutputShare};
use ppdenoise::formats::container::{Header, Kind};
use ppdenoise::model::cnn::{random_framed_cnn, Cnn, CnnMeta};
use ppdenoise::model::frame::Frame;
use ppdenoise::model::noise_map::NoiseLevel;
use ppdenoise::model::preprocess::Preprocess;
use ppdenoise::ring::cnn::{self as ring_cnn, CnnFixed, CnnPlan};
use ppdenoise::ring::share::Stream;

/// `share-image --image IMAGE --sigma 25 --model MODEL.pub --out OUT` and `extra`, in `d`.
fn share_dicom(d: &Dir, image: &str, model: &str, out: &str, extra: &[&str]) -> Output {
    let (m, o) = (d.p(&format!("{model}.pub")), d.p(out));
    let mut args = vec![
        "share-image",
        "--image",
        image,
        "--sigma",
        "25",
        "--model",
        &m,
        "--out",
        &o,
    ];
    args.extend(extra);
    run(&args)
}

const META: CnnMeta = CnnMeta {
    sigma: 25.0,
    residual: false,
};

/// The job of the colour DICOM `input` for colour model `m` (shared as `model`) through
/// the binary on `engine`: share-image, gen-triplets, both servers, reconstruct --like the
/// input to a DICOM. Asserts the shares hold the image's RGB planes as our reader decodes
/// them, that the output shares add up to the oracle's output bit for bit, and that the
/// derived DICOM, as pydicom reads it, is RGB holding the oracle's image (8 bits) with the
/// derived attributes. Returns pydicom's pixels (R G B pixel by pixel).
fn secure_dicom_job(d: &Dir, m: &Cnn, input: &Path, engine: &str) -> Vec<u8> {
    let input_s = input.display().to_string();
    let j = common::summary(
        &share_dicom(d, &input_s, "model", "image", &[]),
        "share-image",
    );
    assert_eq!(j["colours"], 3, "{j}");
    let o = run(&[
        "gen-triplets",
        "--model",
        &d.p("model.pub"),
        "--image",
        &d.p("image.pub"),
        "--out",
        &d.p("triplets"),
        "--engine",
        engine,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let [c0, c1] = start_pair(&d.dir, |p, addr| {
        d.spawn(p, addr, ("model", "image", "triplets"))
    });
    for (o, who) in [
        (wait_limit(c0, Duration::from_secs(300)), "S0"),
        (wait_limit(c1, Duration::from_secs(300)), "S1"),
    ] {
        assert!(
            o.status.success(),
            "{who} ({engine}): {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (_, i0): (Header, ImageShare) =
        load(&d.path("image.p0"), Kind::ImageShare, Some(Party::S0)).unwrap();
    let (_, i1): (Header, ImageShare) =
        load(&d.path("image.p1"), Kind::ImageShare, Some(Party::S1)).unwrap();
    let (h, w) = (i0.job.height, i0.job.width);
    assert_eq!(i0.job.colours, 3);
    let params = CnnFixed::for_model(m);
    let plan = CnnPlan::from_cnn(m, params).unwrap();
    let n = plan.input_len(h, w);
    let enc: Vec<u64> = i0
        .data
        .materialise(Stream::ImageShare, n)
        .unwrap()
        .iter()
        .zip(&i1.data.materialise(Stream::ImageShare, n).unwrap())
        .map(|(a, b)| a.wrapping_add(*b))
        .collect();
    let Picture::Colour(src) = load_picture(input).unwrap() else {
        panic!("{input_s}: not colour")
    };
    assert_eq!((src.height(), src.width()), (h, w));
    let map = m.noise_map(&NoiseLevel::Uniform(25.0), h, w);
    let pre = Preprocess::identity();
    assert_eq!(
        enc,
        ring_cnn::encode_image(&src.planes, &map, &pre, params.s),
        "the gateway's encoding of the decoded RGB planes"
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
    assert_eq!(secure.len(), 3 * h * w);
    let diff = secure
        .iter()
        .zip(&orc.output)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(diff, 0, "{engine}: {diff} values differ from the oracle");
    let j = ok(&[
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &d.p("out.p0"),
        "--share1",
        &d.p("out.p1"),
        "--like",
        &input_s,
        "--out",
        &d.p("denoised.dcm"),
    ]);
    assert_eq!(j["colours"], 3);
    // pydicom's reading of what was written: RGB, pixel by pixel, 8 bits, derived.
    let r = common::pydicom_reads(&d.path("denoised.dcm"));
    assert_eq!(r["PhotometricInterpretation"], "RGB", "{input_s}");
    assert_eq!(r["SamplesPerPixel"], 3);
    assert_eq!(r["PlanarConfiguration"], 0);
    assert_eq!(r["BitsAllocated"], 8);
    assert_eq!(r["TransferSyntaxUID"], "1.2.840.10008.1.2.1");
    assert_eq!(r["ImageType"][0], "DERIVED");
    assert_eq!(r["ImageType"][1], "SECONDARY");
    let source = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(input)
        .unwrap();
    let source_uid = source
        .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(r["SourceImageSOPInstanceUIDs"][0], source_uid.as_str());
    assert_ne!(r["SOPInstanceUID"], source_uid.as_str());
    let got: Vec<u8> = r["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    // The oracle's image, rounded and clamped to 8 bits, R G B pixel by pixel.
    let dec = ring_cnn::decode_output(&orc.output, 3 * h, w, &pre, params.out_scale());
    let want: Vec<u8> = (0..h * w * 3)
        .map(|k| {
            let (i, c) = (k / 3, k % 3);
            dec[[c * h + i / w, i % w]].round().clamp(0.0, 255.0) as u8
        })
        .collect();
    assert_eq!(
        got, want,
        "{engine}: {input_s}: the DICOM written is the oracle's image"
    );
    got
}

/// A YBR_FULL_422 JPEG baseline DICOM (pydicom's SC_rgb_dcmtk_+eb+cy+np.dcm, 100 x 100)
/// and an RGB one (planar configuration 1, made from pydicom's RLE file) through a colour
/// FFDNet-shaped random network on both engines: secure == oracle bit for bit, back as a
/// derived RGB DICOM that pydicom reads, equal to `denoise --arith fixed` of the same file.
#[test]
fn colour_dicom_secure_is_bit_exact_on_both_engines_and_comes_back_rgb() {
    if !common::have_dicom_testdata() {
        return;
    }
    let m = random_framed_cnn(&[13, 8, 12], 3, 33, META, Frame::FFDNET);
    let inputs = [
        testdata("pydicom/SC_rgb_dcmtk_+eb+cy+np.dcm"),
        testdata("made-rgb-planar1.dcm"),
    ];
    for (k, engine) in ["gmw", "gc"].into_iter().enumerate() {
        for input in &inputs {
            let d = Dir::new();
            m.save(&d.path("colour.npz")).unwrap();
            let j = ok(&[
                "share-model",
                "--model",
                &d.p("colour.npz"),
                "--out",
                &d.p("model"),
            ]);
            assert_eq!(j["colours"], 3);
            let got = secure_dicom_job(&d, &m, input, engine);
            if k == 0 {
                // The plaintext fixed point of the same decoded file, as an RGB PNG and as a
                // .dcm written like the colour DICOM read (as reconstruct --like writes it).
                for out in ["fixed.png", "fixed.dcm"] {
                    let j = ok(&[
                        "denoise",
                        "--model",
                        &d.p("colour.npz"),
                        "--image",
                        &input.display().to_string(),
                        "--sigma",
                        "25",
                        "--arith",
                        "fixed",
                        "--out",
                        &d.p(out),
                    ]);
                    assert_eq!(j["colours"], 3, "{j}");
                }
                let fixed = image::open(d.path("fixed.png")).unwrap();
                assert_eq!(
                    fixed.as_rgb8().expect("an RGB PNG").as_raw(),
                    &got,
                    "{}: secure and denoise --arith fixed",
                    input.display()
                );
                let r = common::pydicom_reads(&d.path("fixed.dcm"));
                assert_eq!(r["PhotometricInterpretation"], "RGB");
                assert_eq!(r["ImageType"][0], "DERIVED");
                let px: Vec<u8> = r["pixels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u8)
                    .collect();
                assert_eq!(px, got, "{}: denoise's DICOM", input.display());
            }
        }
    }
}

fn gray_dcm_path() -> String {
    root()
        .join("out/dicom-testdata/j2k8-ref.dcm")
        .display()
        .to_string()
}

/// What a colour DICOM cannot be given to, refused by name before anything is written: a
/// PALETTE COLOR file (indices, not intensities), a gray model (and --as-gray, which does
/// not convert a DICOM), a colour model given a gray DICOM, a --window, share-study.
#[test]
fn colour_dicom_refusals_are_named() {
    if !common::have_dicom_testdata() {
        return;
    }
    let d = Dir::new();
    let colour = random_framed_cnn(&[13, 6, 12], 3, 5, META, Frame::FFDNET);
    colour.save(&d.path("colour.npz")).unwrap();
    let gray = random_framed_cnn(&[5, 6, 4], 3, 5, META, Frame::FFDNET);
    gray.save(&d.path("gray.npz")).unwrap();
    for (npz, out) in [("colour.npz", "model"), ("gray.npz", "graym")] {
        ok(&["share-model", "--model", &d.p(npz), "--out", &d.p(out)]);
    }
    let none_written = |out: &str| {
        for e in ["p0", "p1", "pub"] {
            assert!(!d.path(&format!("{out}.{e}")).exists(), "{out}.{e} written");
        }
    };
    let ybr = testdata("pydicom/SC_rgb_dcmtk_+eb+cy+np.dcm");
    let ybr_s = ybr.display().to_string();
    let palette = testdata("pydicom/examples_palette.dcm");
    let palette_s = palette.display().to_string();
    // PALETTE COLOR, for a colour model and a gray one, and by the reader itself.
    for model in ["model", "graym"] {
        refused(
            &share_dicom(&d, &palette_s, model, "x", &[]),
            "PALETTE COLOR: its values are indices into a colour table, not intensities",
        );
        none_written("x");
    }
    let e = decode_colour(&std::fs::read(&palette).unwrap(), &palette, false).unwrap_err();
    assert!(e.to_string().contains("examples_palette.dcm"), "{e}");
    // denoise to a .dcm: a PNG input needs --like, a gray --like is refused, an RGBA PNG
    // keeps no alpha in a DICOM; nothing written.
    image::RgbImage::from_pixel(100, 100, image::Rgb([9, 99, 199]))
        .save(d.path("rgb.png"))
        .unwrap();
    image::RgbaImage::from_pixel(100, 100, image::Rgba([9, 99, 199, 50]))
        .save(d.path("rgba.png"))
        .unwrap();
    let den = |image: &str, extra: &[&str]| {
        let (m, i, o) = (d.p("colour.npz"), d.p(image), d.p("den.dcm"));
        let mut args = vec![
            "denoise", "--model", &m, "--image", &i, "--sigma", "25", "--out", &o,
        ];
        args.extend(extra);
        run(&args)
    };
    refused(
        &den("rgb.png", &[]),
        "written like a colour DICOM: give --like",
    );
    let gray_like = gray_dcm_path();
    refused(&den("rgb.png", &["--like", &gray_like]), "a gray DICOM");
    refused(&den("rgba.png", &["--like", &ybr_s]), "keeps no alpha");
    assert!(!d.path("den.dcm").exists());
    // A gray table given it says so too, not "use a colour model".
    std::fs::create_dir(d.path("set")).unwrap();
    std::fs::copy(&palette, d.path("set/palette.dcm")).unwrap();
    let o = run(&[
        "table",
        "--images",
        &d.p("set"),
        "--sigmas",
        "25",
        "--model",
        &d.p("gray.npz"),
        "--out-dir",
        &d.p("table"),
    ]);
    refused(&o, "PALETTE COLOR: its values are indices");
    // A gray model given a colour DICOM; --as-gray does not convert a DICOM.
    refused(
        &share_dicom(&d, &ybr_s, "graym", "x", &[]),
        "a colour image; the model (gray) is gray",
    );
    none_written("x");
    let o = run(&[
        "--as-gray",
        "share-image",
        "--image",
        &ybr_s,
        "--sigma",
        "25",
        "--model",
        &d.p("graym.pub"),
        "--out",
        &d.p("x"),
    ]);
    refused(
        &o,
        "a colour image (3 samples per pixel, YBR_FULL_422); only grayscale",
    );
    none_written("x");
    // A colour model given a gray DICOM.
    let gray_dcm = root().join("out/dicom-testdata/j2k8-ref.dcm");
    refused(
        &share_dicom(&d, &gray_dcm.display().to_string(), "model", "x", &[]),
        "a gray image; the model (colour) is colour (3 planes)",
    );
    none_written("x");
    // A window is for gray values in the image's units.
    refused(
        &share_dicom(&d, &ybr_s, "model", "x", &["--window", "10:200"]),
        "a colour image takes its full range: no --window",
    );
    none_written("x");
    // A colour study (tests/suite/studies/colour_study.rs) is for a colour model: the gray one refuses it.
    std::fs::create_dir(d.path("study")).unwrap();
    std::fs::copy(&ybr, d.path("study/a.dcm")).unwrap();
    let o = run(&[
        "share-study",
        "--sigma",
        "25",
        "--in",
        &d.p("study"),
        "--out",
        &d.p("studyout"),
        "--model",
        &d.p("graym.pub"),
    ]);
    refused(&o, "a colour image; the model (gray) is gray");
    assert!(
        !d.path("studyout").exists()
            || std::fs::read_dir(d.path("studyout"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// Colour files that lie or that would cost too much, each refused by name before its pixels
/// are decoded (an outside review's findings): a JPEG 2000 codestream whose colour transform
/// contradicts the header's photometric interpretation, one whose components differ in
/// precision, a colour image too large in samples (the same size in gray is not refused for
/// its size), and colour in the encapsulated uncompressed transfer syntax.
#[test]
fn lying_or_oversized_colour_dicoms_are_refused_by_name() {
    if !common::have_dicom_testdata() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let refused_with = |bytes: &[u8], name: &str, needle: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = decode_colour(bytes, &path, false)
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    };
    let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat).unwrap();
    let rct = std::fs::read(testdata("made-j2k-rct.dcm")).unwrap();
    assert!(decode_colour(&rct, &testdata("made-j2k-rct.dcm"), false).is_ok());
    // Labelled YBR_FULL (same length), its codestream still transformed.
    let mut lie = rct.clone();
    let at = find(&lie, b"YBR_RCT");
    lie[at..at + 8].copy_from_slice(b"YBR_FULL");
    refused_with(&lie, "mct.dcm", "with a colour transform");
    // Component 1 one bit more precise than component 0.
    let mut prec = rct.clone();
    let siz = find(&prec, &[0xFF, 0x4F, 0xFF, 0x51]);
    prec[siz + 4 + 38 + 3] += 1;
    refused_with(&prec, "precision.dcm", "differing precision");
    // 16384 x 16384: 2^28 pixels, three times the samples that are read.
    let mut big = std::fs::read(testdata("made-ybr-full.dcm")).unwrap();
    for tag in [[0x28u8, 0, 0x10, 0], [0x28, 0, 0x11, 0]] {
        let at = find(&big, &[&tag[..], b"US", &[2, 0]].concat());
        big[at + 8..at + 10].copy_from_slice(&16384u16.to_le_bytes());
    }
    refused_with(&big, "big.dcm", "pixels of 3 sample(s)");
    // Native RGB's header lying about its layout or its components (a US value of 2 bytes
    // set in place).
    let planar1 = std::fs::read(testdata("made-rgb-planar1.dcm")).unwrap();
    let set_us = |tag: [u8; 4], v: u16| {
        let mut b = planar1.clone();
        let at = find(&b, &[&tag[..], b"US", &[2, 0]].concat());
        b[at + 8..at + 10].copy_from_slice(&v.to_le_bytes());
        b
    };
    let (planar, samples, rows) = ([0x28u8, 0, 6, 0], [0x28u8, 0, 2, 0], [0x28u8, 0, 0x10, 0]);
    refused_with(
        &set_us(planar, 2),
        "planar2.dcm",
        "PlanarConfiguration 2 (0 or 1)",
    );
    refused_with(&set_us(samples, 2), "spp2.dcm", "2 samples per pixel (RGB)");
    refused_with(
        &set_us(samples, 1),
        "spp1.dcm",
        "photometric interpretation RGB (MONOCHROME1 or MONOCHROME2",
    );
    // One row more than the pixel data holds: short native data.
    let h = u16::from_le_bytes({
        let at = find(&planar1, &[&rows[..], b"US", &[2, 0]].concat());
        [planar1[at + 8], planar1[at + 9]]
    });
    refused_with(
        &set_us(rows, h + 1),
        "short.dcm",
        "pixel data holds 30000 bytes; 1 frame(s) of 101 x 100, 3 sample(s)",
    );
    // Encapsulated uncompressed, written by pydicom.
    let enc = dir.path().join("enc-src.dcm");
    let script = "import sys, pydicom\n\
        from pydicom.encaps import encapsulate\n\
        ds = pydicom.dcmread(sys.argv[1])\n\
        ds.file_meta.TransferSyntaxUID = '1.2.840.10008.1.2.1.98'\n\
        ds.PixelData = encapsulate([ds.PixelData])\n\
        ds.save_as(sys.argv[2], enforce_file_format=True)\n";
    let o = Command::new(root().join(".venv-dicom/bin/python"))
        .args(["-c", script])
        .arg(testdata("made-rgb-planar1.dcm"))
        .arg(&enc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    refused_with(
        &std::fs::read(&enc).unwrap(),
        "enc.dcm",
        "encapsulated uncompressed",
    );
}
