//! Colour studies through the real binary (issue 48, item 1: "single- and multi-frame"): a
//! folder of RGB PNG and TIFF images and a multi-frame colour DICOM (pydicom's public
//! `SC_rgb_rle_2frame.dcm`, RGB in RLE, and the 30-frame YBR_FULL_422 JPEG ultrasound
//! `examples_ybr_color.dcm`) shared with `share-study` for a colour FFDNet-shaped network,
//! dealt, run by two `serve --study` processes on each engine and put together with
//! `reconstruct --study`: every slice (frame) equals the plaintext fixed-point oracle
//! (`denoise --arith fixed` of that image or frame) bit for bit, and comes back in its
//! input's form (RGB PNG or TIFF at its depth; one derived multi-frame RGB DICOM in a new
//! series of the source's study). And the refusals: a folder mixing colour and gray, an
//! RGBA image (a study keeps no alpha), a colour study for a gray model, a window.

use std::path::Path;

use common::pydicom_test_file as pydicom_file;
use common::study_job::{refused, Dir};
use common::{dicom_attr, ok, run, share_study, summary};
use dicom_dictionary_std::tags;
use ndarray::Array2;
use ppdenoise::image::rgb::colour_frames_from_bytes;
use ppdenoise::image::{load_picture, ColourImage, Picture};
use ppdenoise::model::cnn::{random_framed_cnn, CnnMeta};
use ppdenoise::model::frame::Frame;

use crate::common;

const META: CnnMeta = CnnMeta {
    sigma: 25.0,
    residual: false,
};

/// A colour FFDNet-shaped random network saved in its own folder (kept alive by the
/// returned guard), for [`Dir::new`] to share.
fn colour_model() -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("colour.npz");
    random_framed_cnn(&[13, 8, 12], 3, 11, META, Frame::FFDNET)
        .save(&path)
        .unwrap();
    (t, path.display().to_string())
}

/// An RGB image of `h` x `w` at `depth`, its planes distinct patterns (`k`).
fn rgb(h: usize, w: usize, depth: u8, k: usize) -> ColourImage {
    ColourImage {
        planes: Array2::from_shape_fn((3 * h, w), |(r, c)| {
            ((r * (17 + k) + c * 29 + 13 * k + (r / h) * 71) % 256) as f64
        }),
        bit_depth: depth,
        alpha: None,
        stored_max: None,
    }
}

fn colour(path: &Path) -> ColourImage {
    match load_picture(path).unwrap() {
        Picture::Colour(c) => c,
        Picture::Gray(_) => panic!("{}: not colour", path.display()),
    }
}

/// `denoise --arith fixed` of the colour image `input` with `model`, written to `out`.
fn oracle(d: &Dir, input: &Path, model: &str, out: &str) -> ColourImage {
    ok(&[
        "denoise",
        "--sigma",
        "25",
        "--image",
        &input.display().to_string(),
        "--model",
        model,
        "--arith",
        "fixed",
        "--out",
        &d.p(out),
    ]);
    colour(&d.path(out))
}

/// `share-study` of `input` (under the Dir) into `study/`, signed: its JSON summary.
fn share(d: &Dir, input: &str) -> serde_json::Value {
    let o = share_study(
        &d.dir,
        "25",
        input,
        "study",
        &[
            "--sign-key",
            &d.gateway_key(),
            "--trust",
            &d.p("keys/trust"),
        ],
    );
    d.shared(summary(&o, "share-study"))
}

/// Deals the study on `engine`, serves it on both servers, reconstructs it into `out`.
fn run_study(d: &Dir, engine: &str, out: &str) -> serde_json::Value {
    d.deal(&["--engine", engine]);
    d.serve_pair(&[]);
    d.reconstruct(out)
}

/// A folder of an 8-bit RGB PNG and a 16-bit RGB TIFF is a colour study: on both engines
/// each comes back in its own format and depth, equal to the oracle bit for bit.
#[test]
fn a_folder_of_rgb_images_is_bit_exact_on_both_engines() {
    use ppdenoise::image::Format;
    let (_m, model) = colour_model();
    for engine in ["gc", "gmw"] {
        let d = Dir::new(&model);
        std::fs::create_dir_all(d.path("in")).unwrap();
        rgb(14, 17, 8, 1).save(d.path("in/a1.png")).unwrap();
        rgb(12, 15, 16, 2).save(d.path("in/a2.tif")).unwrap();
        // A TIFF whose name says nothing of its format: written back as what it is.
        rgb(9, 11, 8, 3)
            .save_as(&d.path("in/a3"), Format::Tiff)
            .unwrap();
        let j = share(&d, "in");
        assert_eq!(
            (j["colours"].as_u64(), j["slices"].as_u64()),
            (Some(3), Some(3))
        );
        let j = run_study(&d, engine, "out");
        assert_eq!(j["files"].as_array().unwrap().len(), 3, "{j}");
        assert_eq!(Format::of_file(d.path("out/a3")), Some(Format::Tiff));
        for (name, depth, ext) in [
            ("a1.png", 8, "png"),
            ("a2.tif", 16, "tif"),
            ("a3", 8, "tif"),
        ] {
            let got = colour(&d.path(&format!("out/{name}")));
            let want = oracle(
                &d,
                &d.path(&format!("in/{name}")),
                &model,
                &format!("o-{name}.{ext}"),
            );
            assert_eq!(got.bit_depth, depth, "{engine} {name}: its input's depth");
            assert_eq!(got.planes, want.planes, "{engine} {name}: secure vs oracle");
            assert_ne!(
                got.plane(0),
                got.plane(1),
                "{engine} {name}: the planes stay apart"
            );
        }
    }
}

/// A colour study for a model with a noise map per colour, at a level per colour plane
/// (`share-study --sigma-per-colour`): each slice equals `denoise --arith fixed` with the
/// same levels, bit for bit, and no file of the study holds a level (they go into the
/// shared maps only).
#[test]
fn a_colour_study_takes_a_level_per_colour() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("per-colour.npz").display().to_string();
    random_framed_cnn(&[15, 8, 12], 3, 13, META, Frame::FFDNET)
        .save(Path::new(&model))
        .unwrap();
    let d = Dir::new(&model);
    std::fs::create_dir_all(d.path("in")).unwrap();
    rgb(14, 17, 8, 1).save(d.path("in/a1.png")).unwrap();
    rgb(12, 15, 8, 2).save(d.path("in/a2.png")).unwrap();
    let levels = "7.5,31.25,58.5";
    let o = share_study(
        &d.dir,
        "",
        "in",
        "study",
        &[
            "--sigma-per-colour",
            levels,
            "--sign-key",
            &d.gateway_key(),
            "--trust",
            &d.p("keys/trust"),
        ],
    );
    let j = d.shared(summary(&o, "share-study"));
    assert_eq!(j["colours"], 3, "{j}");
    let mut folders = vec![d.path("study")];
    let mut files = 0;
    while let Some(f) = folders.pop() {
        for e in std::fs::read_dir(f).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                folders.push(p);
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            assert!(
                !text.contains("31.25") && !text.contains("58.5"),
                "{}: holds a level",
                p.display()
            );
            files += 1;
        }
    }
    assert!(files >= 6, "{files} files in the study");
    run_study(&d, "gmw", "out");
    for name in ["a1.png", "a2.png"] {
        let out = format!("o-{name}");
        ok(&[
            "denoise",
            "--sigma-per-colour",
            levels,
            "--image",
            &d.p(&format!("in/{name}")),
            "--model",
            &model,
            "--arith",
            "fixed",
            "--out",
            &d.p(&out),
        ]);
        let (got, want) = (
            colour(&d.path(&format!("out/{name}"))),
            colour(&d.path(&out)),
        );
        assert_eq!(got.planes, want.planes, "{name}: secure vs oracle");
        assert_ne!(
            want.planes,
            oracle(
                &d,
                &d.path(&format!("in/{name}")),
                &model,
                &format!("u-{name}")
            )
            .planes,
            "{name}: the levels were ignored"
        );
    }
}

/// Each frame of a colour DICOM's bytes, written as an 8-bit RGB PNG `<stem><k>.png` for the
/// oracle; the frames.
fn frames_as_png(d: &Dir, dcm: &Path, stem: &str) -> Vec<ColourImage> {
    let frames = colour_frames_from_bytes(&std::fs::read(dcm).unwrap(), dcm).unwrap();
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(f.bit_depth, 8);
        f.save(d.path(&format!("{stem}{k}.png"))).unwrap();
    }
    frames
}

/// The study of a multi-frame colour DICOM (`name`, pydicom's) on `engine`: one derived
/// multi-frame RGB DICOM of as many frames, in a new series of the source's study, every
/// frame the oracle's of that frame.
fn multi_frame_colour(name: &str, engine: &str, frames: usize) {
    let (_m, model) = colour_model();
    let d = Dir::new(&model);
    std::fs::create_dir_all(d.path("in")).unwrap();
    let src = d.path(&format!("in/{name}"));
    std::fs::copy(pydicom_file(name), &src).unwrap();
    let inputs = frames_as_png(&d, &src, "frame");
    assert_eq!(inputs.len(), frames);
    let j = share(&d, &format!("in/{name}"));
    assert_eq!(
        (
            j["kind"].as_str(),
            j["slices"].as_u64(),
            j["colours"].as_u64()
        ),
        (Some("multi-frame"), Some(frames as u64), Some(3)),
        "{j}"
    );
    let j = run_study(&d, engine, "out");
    let out = d.path(&format!("out/{name}"));
    assert_eq!(j["files"].as_array().unwrap().len(), 1, "{j}");
    let attr = |tag| dicom_attr(&out, tag);
    let srcattr = |tag| dicom_attr(&src, tag);
    assert_eq!(attr(tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    assert_eq!(attr(tags::NUMBER_OF_FRAMES), frames.to_string());
    assert_eq!(
        attr(tags::STUDY_INSTANCE_UID),
        srcattr(tags::STUDY_INSTANCE_UID)
    );
    assert_ne!(
        attr(tags::SERIES_INSTANCE_UID),
        srcattr(tags::SERIES_INSTANCE_UID)
    );
    assert_eq!(
        attr(tags::SERIES_INSTANCE_UID),
        j["series_uid"].as_str().unwrap()
    );
    assert!(
        attr(tags::IMAGE_TYPE).starts_with("DERIVED"),
        "{}",
        attr(tags::IMAGE_TYPE)
    );
    let got = colour_frames_from_bytes(&std::fs::read(&out).unwrap(), &out).unwrap();
    assert_eq!(got.len(), frames);
    for (k, g) in got.iter().enumerate() {
        let want = oracle(
            &d,
            &d.path(&format!("frame{k}.png")),
            &model,
            &format!("o{k}.png"),
        );
        assert_eq!(
            g.planes, want.planes,
            "{engine}: frame {k}, secure vs oracle"
        );
        assert_ne!(
            g.planes, inputs[k].planes,
            "frame {k}: denoised, not copied"
        );
    }
    assert_ne!(got[0].planes, got[1].planes, "frames are distinct images");
}

#[test]
fn a_multi_frame_rgb_rle_dicom_is_bit_exact_on_both_engines() {
    if !common::have_dicom_testdata() {
        return;
    }
    for engine in ["gc", "gmw"] {
        multi_frame_colour("SC_rgb_rle_2frame.dcm", engine, 2);
    }
}

/// The YBR_FULL_422 JPEG (baseline, lossy) object, multi-frame: a real ultrasound
/// loop of 30 frames, read (chroma upsampled, YCbCr to RGB) and written back as RGB.
#[test]
fn a_multi_frame_ybr_full_422_jpeg_dicom_comes_back_as_rgb_frames() {
    if !common::have_dicom_testdata() {
        return;
    }
    multi_frame_colour("examples_ybr_color.dcm", "gmw", 30);
}

/// A series of single-frame colour DICOMs (pydicom's YBR_FULL_422 `SC_ybr_full_422_uncompressed.dcm`
/// made three instances of one series, each its own pixels) comes back as one derived RGB
/// series in the source's study, in the series' order, each slice the oracle's.
#[test]
fn a_series_of_colour_dicoms_comes_back_as_one_derived_rgb_series() {
    if !common::have_dicom_testdata() {
        return;
    }
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    let (_m, model) = colour_model();
    let d = Dir::new(&model);
    std::fs::create_dir_all(d.path("in")).unwrap();
    let src = pydicom_file("SC_ybr_full_422_uncompressed.dcm");
    // Instance numbers against the names' order: the series' order is theirs.
    for (name, instance) in [("x1.dcm", 3), ("x2.dcm", 1), ("x3.dcm", 2)] {
        let mut obj = dicom_object::open_file(&src).unwrap();
        let uid = format!("1.2.826.0.1.3680043.8.498.77{instance}");
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid.as_str()),
        ));
        obj.meta_mut().media_storage_sop_instance_uid = uid;
        obj.meta_mut().update_information_group_length();
        obj.put(DataElement::new(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from(instance.to_string()),
        ));
        // Each its own pixels: the YBR samples (Y Y Cb Cr per two pixels) shifted.
        let px = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        let px: Vec<u8> = px
            .iter()
            .map(|&v| v.wrapping_add(9 * instance as u8))
            .collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(px.into()),
        ));
        obj.write_to_file(d.path(&format!("in/{name}"))).unwrap();
    }
    let j = share(&d, "in");
    assert_eq!(
        (
            j["kind"].as_str(),
            j["slices"].as_u64(),
            j["colours"].as_u64()
        ),
        (Some("dicom-series"), Some(3), Some(3)),
        "{j}"
    );
    let sources: serde_json::Value =
        serde_json::from_slice(&std::fs::read(j["sources"].as_str().unwrap()).unwrap()).unwrap();
    let order: Vec<&str> = sources["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["x2.dcm", "x3.dcm", "x1.dcm"], "by InstanceNumber");
    assert!(sources["slices"][0]["colours"] == 3 && sources["slices"][0]["window"].is_null());
    let j = run_study(&d, "gmw", "out");
    let series = j["series_uid"].as_str().unwrap().to_string();
    for name in ["x1.dcm", "x2.dcm", "x3.dcm"] {
        let out = d.path(&format!("out/{name}"));
        let attr = |tag| dicom_attr(&out, tag);
        assert_eq!(attr(tags::PHOTOMETRIC_INTERPRETATION), "RGB", "{name}");
        assert_eq!(attr(tags::SERIES_INSTANCE_UID), series, "{name}");
        let input = d.path(&format!("in/{name}"));
        let png = format!("{name}.png");
        frames_as_png(&d, &input, &png);
        let want = oracle(
            &d,
            &d.path(&format!("{png}0.png")),
            &model,
            &format!("o-{name}.png"),
        );
        let got = colour_frames_from_bytes(&std::fs::read(&out).unwrap(), &out).unwrap();
        assert_eq!(got[0].planes, want.planes, "{name}: secure vs oracle");
    }
}

/// Colour and gray kept apart, an alpha never dropped, a colour image on its full range:
/// refused by name, before anything is written.
#[test]
fn colour_studies_are_refused_by_name_when_they_cannot_be_right() {
    if !common::have_dicom_testdata() {
        return;
    }
    let (_m, model) = colour_model();
    let d = Dir::new(&model);
    let dir = |n: &str| {
        std::fs::create_dir_all(d.path(n)).unwrap();
        n.to_string()
    };
    let try_share = |input: &str, extra: &[&str]| share_study(&d.dir, "25", input, "study", extra);
    // A folder of a colour and a gray image.
    let mixed = dir("mixed");
    rgb(10, 12, 8, 1).save(d.path("mixed/a.png")).unwrap();
    let gray = ppdenoise::image::GrayImage::new(Array2::from_elem((10, 12), 90.0), 8);
    ppdenoise::image::save(&gray, d.path("mixed/b.png"), 8).unwrap();
    refused(
        &try_share(&mixed, &[]),
        &["b.png", "a gray image", "a.png", "all colour or all gray"],
    );
    // An RGBA image.
    let alpha = dir("alpha");
    let mut rgba = rgb(10, 12, 8, 2);
    rgba.alpha = Some(Array2::from_elem((10, 12), 200));
    rgba.save(d.path("alpha/a.png")).unwrap();
    refused(&try_share(&alpha, &[]), &["a.png", "RGBA", "share-image"]);
    // A window.
    let fine = dir("fine");
    rgb(10, 12, 8, 3).save(d.path("fine/a.png")).unwrap();
    refused(
        &try_share(&fine, &["--window", "0:100"]),
        &["a.png", "no --window"],
    );
    // A multi-frame colour object among a series' slices is a study of its own.
    let multi = dir("multi");
    std::fs::copy(pydicom_file("SC_rgb_rle_2frame.dcm"), d.path("multi/m.dcm")).unwrap();
    refused(
        &try_share(&multi, &[]),
        &["m.dcm", "a multi-frame object of 2 frames in a series"],
    );
    // A colour study for a gray model.
    let tiny = common::study_job::fixture("tiny-cnn.npz");
    ok(&["share-model", "--model", &tiny, "--out", &d.p("graym")]);
    let o = run(&[
        "share-study",
        "--sigma",
        "25",
        "--in",
        &d.p(&fine),
        "--out",
        &d.p("study"),
        "--model",
        &d.p("graym.pub"),
    ]);
    refused(&o, &["a.png", "a colour image", "is gray"]);
    assert!(!d.path("study").exists(), "nothing written");
}

/// A real colour medical image through the secure path with the authors' colour FFDNet
/// (FFDNet_Clip_color, converted by `make`): pydicom's public ultrasound
/// `examples_rgb_color.dcm` (RGB, 240 x 320) with colour noise of sigma 25 (independent per
/// channel, clipped to 8 bits) as a one-slice study: it comes back as a derived RGB DICOM
/// equal to the oracle bit for bit, and closer to the clean image than the noisy one was.
#[test]
fn a_real_ultrasound_image_comes_back_better_than_it_went_in() {
    if !common::have_dicom_testdata() {
        return;
    }
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = root.join("../shared/models/ffdnet/FFDNet_Clip_color.mat");
    assert!(weights.exists(), "{}: absent", weights.display());
    let model = {
        let st = std::process::Command::new("make")
            .args(["-s", "out/ffdnet/clip-colour.npz"])
            .current_dir(root)
            .status()
            .expect("run make");
        assert!(st.success(), "make out/ffdnet/clip-colour.npz failed");
        root.join("out/ffdnet/clip-colour.npz")
            .display()
            .to_string()
    };
    let d = Dir::new(&model);
    std::fs::create_dir_all(d.path("in")).unwrap();
    let src = pydicom_file("examples_rgb_color.dcm");
    let clean = colour_frames_from_bytes(&std::fs::read(&src).unwrap(), &src)
        .unwrap()
        .remove(0);
    let (h, w) = (clean.height(), clean.width());
    let noisy =
        ppdenoise::image::quantize_u8(&ppdenoise::image::rgb::add_noise(&clean, 25.0, 48).planes);
    // The noisy image as the source's own kind of file: its header, RGB samples interleaved.
    let mut obj = dicom_object::open_file(&src).unwrap();
    let samples: Vec<u8> = (0..h * w * 3)
        .map(|k| noisy[[(k % 3) * h + (k / 3) / w, (k / 3) % w]] as u8)
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(samples.into()),
    ));
    obj.write_to_file(d.path("in/us.dcm")).unwrap();
    let j = share(&d, "in");
    assert_eq!(j["colours"], 3, "{j}");
    run_study(&d, "gmw", "out");
    let out = d.path("out/us.dcm");
    let got = colour_frames_from_bytes(&std::fs::read(&out).unwrap(), &out)
        .unwrap()
        .remove(0);
    let input = frames_as_png(&d, &d.path("in/us.dcm"), "noisy");
    assert_eq!(input[0].planes, noisy, "the noisy file reads back as made");
    let want = oracle(&d, &d.path("noisy0.png"), &model, "oracle.png");
    assert_eq!(got.planes, want.planes, "secure vs oracle");
    let psnr = |x: &Array2<f64>| ppdenoise::metrics::psnr(&clean.planes, x, 255.0);
    let (before, after) = (psnr(&noisy), psnr(&got.planes));
    eprintln!("examples_rgb_color.dcm, sigma 25: PSNR {before:.2} dB noisy, {after:.2} dB secure");
    assert!(
        after > before + 5.0,
        "denoised: {before:.2} -> {after:.2} dB"
    );
}
