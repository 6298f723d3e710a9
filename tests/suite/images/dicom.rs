//! DICOM in and out (issue 13, item 1). Every file is built here with dicom-object's
//! in-memory API: 8-bit MONOCHROME2 (explicit and implicit VR), a 12-bit signed CT-like
//! slice with a rescale intercept of -1024, MONOCHROME1, 16-bit unsigned, RLE Lossless
//! (encoded by hand). Round trips give the same stored values and keep the patient, study
//! and series attributes, with a new SOP Instance UID and DERIVED. Refusals (several frames,
//! colour, a syntax without a decoder, absurd sizes, crafted lengths, damage) name the file
//! and the problem. On the command line: add-noise, metrics and denoise on a DICOM, and a
//! real secure run whose output is reconstructed `--like` the noisy DICOM.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{blocks, own_loopback_addr, pydicom_reads, start_pair};
use std::time::{Duration, Instant};

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, FileMetaTableBuilder, InMemDicomObject};
use ndarray::Array2;
use ppdenoise::image::{load, DicomTemplate, Encoding, Format, GrayImage, ImageError};

const PATIENT: &str = "Doe^Jane";
const STUDY: &str = "1.2.826.0.1.3680043.8.498.1";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.1.2";
const INSTANCE: &str = "1.2.826.0.1.3680043.8.498.1.2.3";
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

/// What a test DICOM holds.
#[derive(Clone)]
struct Spec {
    rows: u16,
    cols: u16,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    photometric: &'static str,
    samples: u16,
    frames: Option<u32>,
    transfer_syntax: &'static str,
    /// Stored values, row-major (one frame, or `frames` frames).
    values: Vec<i32>,
    /// Rescale slope and intercept, and a window (centre, width).
    rescale: Option<(f64, f64)>,
    window: Option<(f64, f64)>,
    /// The pixel data as given, instead of the values (encapsulated syntaxes).
    fragments: Option<Vec<Vec<u8>>>,
    /// SOP Instance UID (slices of one series each need their own).
    sop: String,
}

impl Spec {
    fn new(rows: u16, cols: u16, bits_stored: u16, signed: bool, values: Vec<i32>) -> Spec {
        Spec {
            rows,
            cols,
            bits_allocated: if bits_stored <= 8 { 8 } else { 16 },
            bits_stored,
            signed,
            photometric: "MONOCHROME2",
            samples: 1,
            frames: None,
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN,
            values,
            rescale: None,
            window: None,
            fragments: None,
            sop: INSTANCE.to_string(),
        }
    }

    /// The raw pixel data: two's complement (sign-extended) in the allocated width.
    fn raw(&self) -> Vec<u8> {
        if self.bits_allocated == 8 {
            let mut b: Vec<u8> = self.values.iter().map(|&v| v as u8).collect();
            if b.len() % 2 == 1 {
                b.push(0);
            }
            b
        } else {
            self.values
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let str_el = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        let mut obj = InMemDicomObject::from_element_iter([
            str_el(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE),
            str_el(tags::SOP_INSTANCE_UID, VR::UI, &self.sop),
            DataElement::new(
                tags::IMAGE_TYPE,
                VR::CS,
                PrimitiveValue::Strs(
                    ["ORIGINAL", "PRIMARY", "AXIAL"]
                        .map(String::from)
                        .into_iter()
                        .collect(),
                ),
            ),
            str_el(tags::MODALITY, VR::CS, "CT"),
            str_el(tags::PATIENT_NAME, VR::PN, PATIENT),
            str_el(tags::PATIENT_ID, VR::LO, "P-0042"),
            str_el(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
            str_el(tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
            str_el(tags::STUDY_DATE, VR::DA, "20240229"),
            str_el(tags::ACCESSION_NUMBER, VR::SH, "A-7"),
            str_el(tags::SERIES_INSTANCE_UID, VR::UI, SERIES),
            str_el(tags::SERIES_NUMBER, VR::IS, "3"),
            str_el(tags::INSTANCE_NUMBER, VR::IS, "12"),
            us(tags::SAMPLES_PER_PIXEL, self.samples),
            str_el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, self.photometric),
            us(tags::ROWS, self.rows),
            us(tags::COLUMNS, self.cols),
            us(tags::BITS_ALLOCATED, self.bits_allocated),
            us(tags::BITS_STORED, self.bits_stored),
            us(tags::HIGH_BIT, self.bits_stored - 1),
            us(tags::PIXEL_REPRESENTATION, u16::from(self.signed)),
            us(tags::SMALLEST_IMAGE_PIXEL_VALUE, 0),
        ]);
        if let Some(n) = self.frames {
            obj.put(str_el(tags::NUMBER_OF_FRAMES, VR::IS, &n.to_string()));
        }
        if let Some((slope, intercept)) = self.rescale {
            obj.put(str_el(tags::RESCALE_SLOPE, VR::DS, &slope.to_string()));
            obj.put(str_el(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                &intercept.to_string(),
            ));
            obj.put(str_el(tags::RESCALE_TYPE, VR::LO, "HU"));
        }
        if let Some((c, w)) = self.window {
            obj.put(str_el(tags::WINDOW_CENTER, VR::DS, &c.to_string()));
            obj.put(str_el(tags::WINDOW_WIDTH, VR::DS, &w.to_string()));
        }
        match &self.fragments {
            Some(f) => obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), f.clone()),
            )),
            None if self.bits_allocated == 8 => obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::U8(self.raw().into()),
            )),
            None => {
                let words: Vec<u16> = self
                    .raw()
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OW,
                    PrimitiveValue::U16(words.into()),
                ))
            }
        };
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(self.transfer_syntax))
            .unwrap();
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        bytes
    }

    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.bytes()).unwrap();
        path.to_path_buf()
    }
}

/// A string attribute of a DICOM file.
fn attr(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// The stored values of a DICOM file (little-endian words, sign-extended per the file).
fn stored_values(path: &Path) -> Vec<i32> {
    let obj = open_file(path).unwrap();
    let ba: u16 = obj.element(tags::BITS_ALLOCATED).unwrap().to_int().unwrap();
    let signed: u16 = obj
        .element(tags::PIXEL_REPRESENTATION)
        .unwrap()
        .to_int()
        .unwrap();
    let (rows, cols): (usize, usize) = (
        obj.element(tags::ROWS).unwrap().to_int().unwrap(),
        obj.element(tags::COLUMNS).unwrap().to_int().unwrap(),
    );
    let bytes = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let n = rows * cols;
    match (ba, signed) {
        (8, 0) => bytes[..n].iter().map(|&b| i32::from(b)).collect(),
        (8, _) => bytes[..n].iter().map(|&b| i32::from(b as i8)).collect(),
        (_, 0) => bytes
            .chunks_exact(2)
            .take(n)
            .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .take(n)
            .map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
    }
}

/// Asserts what every derived DICOM keeps and changes of the template `src`; the library's
/// writer keeps the template's series, the command line puts its outputs in a new one.
fn assert_derived(out: &Path, src: &Path) {
    assert_derived_in(out, src, false)
}

/// [`assert_derived`] of a command's output: in a new series, described.
fn assert_derived_cli(out: &Path, src: &Path) {
    assert_derived_in(out, src, true)
}

fn assert_derived_in(out: &Path, src: &Path, new_series: bool) {
    let (a, b) = (open_file(out).unwrap(), open_file(src).unwrap());
    let (sa, sb) = (
        attr(&a, tags::SERIES_INSTANCE_UID),
        attr(&b, tags::SERIES_INSTANCE_UID),
    );
    if new_series {
        assert!(
            sa != sb && sa.starts_with("2.25."),
            "series {sa} (source {sb})"
        );
        let desc = attr(&a, tags::SERIES_DESCRIPTION);
        assert!(desc.len() <= 64 && !desc.is_empty(), "{desc:?}");
        // A derived series is numbered apart from its source (issue 44, item 5): its plus
        // 1000 plus the run's offset (0 to 999; more only past a known series' number,
        // issue 71, item 13).
        let n: i64 = attr(&b, tags::SERIES_NUMBER).parse().unwrap();
        let got: i64 = attr(&a, tags::SERIES_NUMBER).parse().unwrap();
        assert!((n + 1000..n + 3000).contains(&got), "{got} (source {n})");
    } else {
        assert_eq!(sa, sb, "series changed");
        assert_eq!(attr(&a, tags::SERIES_NUMBER), attr(&b, tags::SERIES_NUMBER));
    }
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
        tags::STUDY_INSTANCE_UID,
        tags::STUDY_DATE,
        tags::ACCESSION_NUMBER,
        tags::SOP_CLASS_UID,
        tags::MODALITY,
        tags::PHOTOMETRIC_INTERPRETATION,
        tags::ROWS,
        tags::COLUMNS,
        tags::BITS_ALLOCATED,
        tags::BITS_STORED,
        tags::HIGH_BIT,
        tags::PIXEL_REPRESENTATION,
    ] {
        assert_eq!(attr(&a, tag), attr(&b, tag), "{tag} changed");
    }
    for tag in [
        tags::RESCALE_INTERCEPT,
        tags::RESCALE_SLOPE,
        tags::WINDOW_CENTER,
    ] {
        if b.element_opt(tag).unwrap().is_some() {
            assert_eq!(attr(&a, tag), attr(&b, tag), "{tag} changed");
        }
    }
    let sop = attr(&a, tags::SOP_INSTANCE_UID);
    assert_ne!(
        sop,
        attr(&b, tags::SOP_INSTANCE_UID),
        "SOP Instance UID kept"
    );
    assert!(sop.starts_with("2.25.") && sop.len() <= 64, "{sop}");
    assert_eq!(
        a.meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        sop
    );
    assert_eq!(
        a.meta().transfer_syntax().trim_end_matches('\0'),
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    );
    let it = a.element(tags::IMAGE_TYPE).unwrap().to_multi_str().unwrap();
    assert_eq!(&it[..2], &["DERIVED".to_string(), "SECONDARY".to_string()]);
    assert_eq!(
        &it[2..],
        &["AXIAL".to_string()],
        "the template's third value on is kept"
    );
    assert!(attr(&a, tags::DERIVATION_DESCRIPTION).contains("ppdenoise"));
    let src_seq = a.element(tags::SOURCE_IMAGE_SEQUENCE).unwrap();
    let items = src_seq.items().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        attr(&items[0], tags::REFERENCED_SOP_INSTANCE_UID),
        attr(&b, tags::SOP_INSTANCE_UID)
    );
    // No longer true of new pixels.
    assert!(a
        .element_opt(tags::SMALLEST_IMAGE_PIXEL_VALUE)
        .unwrap()
        .is_none());
}

/// Loads `src`, writes it back like itself, and checks stored values and attributes.
fn round_trip(src: &Path, out: &Path) -> GrayImage {
    let img = load(src).unwrap();
    let t = DicomTemplate::read(src)
        .unwrap()
        .with_derivation("copied by a ppdenoise test");
    Encoding::Dicom(Box::new(t)).save(&img, out).unwrap();
    assert_eq!(Format::of_file(out), Some(Format::Dicom));
    assert_eq!(
        stored_values(out),
        stored_values(src),
        "stored values changed"
    );
    assert_derived(out, src);
    assert_eq!(load(out).unwrap(), img);
    img
}

#[test]
fn eight_bit_monochrome2_explicit_and_implicit_vr() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i32> = (0..35).map(|i| (i * 37) % 256).collect();
    let mut spec = Spec::new(5, 7, 8, false, values.clone());
    for ts in [
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
    ] {
        spec.transfer_syntax = ts;
        let src = spec.write(&dir.path().join("mono2.dcm"));
        let img = round_trip(&src, &dir.path().join("out.dcm"));
        assert_eq!((img.height(), img.width(), img.bit_depth), (5, 7, 8));
        let expect: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(
            img.pixels.iter().copied().collect::<Vec<_>>(),
            expect,
            "{ts}"
        );
    }
}

#[test]
fn ct_like_12_bit_signed_slice_keeps_its_stored_values_and_hounsfield_scale() {
    let dir = tempfile::tempdir().unwrap();
    // Air, water, bone and both ends of the 12-bit signed range.
    let mut values: Vec<i32> = (0..63).map(|i| -2048 + i * 65).collect();
    values[0] = -2048;
    values[62] = 2047;
    values[30] = 0;
    let mut spec = Spec::new(7, 9, 12, true, values.clone());
    spec.rescale = Some((1.0, -1024.0));
    spec.window = Some((40.0, 400.0));
    let src = spec.write(&dir.path().join("ct.dcm"));
    let img = round_trip(&src, &dir.path().join("ct-out.dcm"));
    assert_eq!(img.bit_depth, 16);
    for (x, &v) in img.pixels.iter().zip(&values) {
        assert!(
            (x - f64::from(v + 2048) * 255.0 / 4095.0).abs() < 1e-9,
            "{v}: {x}"
        );
    }
    assert_eq!(img.pixels[[0, 0]], 0.0);
    assert_eq!(img.pixels[[6, 8]], 255.0);
    // Neither rescale nor window was applied: they are kept as they were.
    let out = open_file(dir.path().join("ct-out.dcm")).unwrap();
    assert_eq!(attr(&out, tags::RESCALE_INTERCEPT), "-1024");
    assert_eq!(attr(&out, tags::WINDOW_WIDTH), "400");

    // A changed image is rounded and clamped to the stored range.
    let t = DicomTemplate::read(&src).unwrap();
    let mut changed = img.clone();
    changed.pixels[[0, 0]] = -30.0;
    changed.pixels[[0, 1]] = 400.0;
    changed.pixels[[0, 2]] = 128.0; // round(128 * 4095 / 255 = 2055.5) - 2048 = 8
    let p = dir.path().join("changed.dcm");
    let enc = Encoding::Dicom(Box::new(t));
    enc.save(&changed, &p).unwrap();
    let stored = stored_values(&p);
    assert_eq!(&stored[..3], &[-2048, 2047, 8]);
    assert_eq!(&stored[3..], &values[3..]);
    // quantize says what the file holds.
    assert_eq!(load(&p).unwrap().pixels, enc.quantize(&changed.pixels));
    assert_eq!(enc.describe(), "12-bit DICOM");
}

#[test]
fn monochrome1_is_inverted_on_load_and_back_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i32> = (0..20).map(|i| i * 53).collect(); // 0 .. 1007, 10 bits
    let mut spec = Spec::new(4, 5, 10, false, values.clone());
    spec.photometric = "MONOCHROME1";
    let src = spec.write(&dir.path().join("cr.dcm"));
    let img = round_trip(&src, &dir.path().join("cr-out.dcm"));
    // Stored 0 is white in MONOCHROME1: 255 for the model.
    assert_eq!(img.pixels[[0, 0]], 255.0);
    for (x, &v) in img.pixels.iter().zip(&values) {
        assert!((x - f64::from(1023 - v) * 255.0 / 1023.0).abs() < 1e-9);
    }
    let out = open_file(dir.path().join("cr-out.dcm")).unwrap();
    assert_eq!(attr(&out, tags::PHOTOMETRIC_INTERPRETATION), "MONOCHROME1");
}

#[test]
fn sixteen_bit_maps_like_16_bit_png_and_converts_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i32> = vec![0, 1, 257, 1000, 32768, 40000, 65534, 65535];
    let src = Spec::new(2, 4, 16, false, values.clone()).write(&dir.path().join("u16.dcm"));
    let img = round_trip(&src, &dir.path().join("u16-out.dcm"));
    for (x, &v) in img.pixels.iter().zip(&values) {
        assert_eq!(*x, f64::from(v) / 257.0);
    }
    // DICOM 16 -> 16-bit PNG and TIFF -> DICOM keeps every stored value.
    let t = DicomTemplate::read(&src).unwrap();
    for name in ["u16.png", "u16.tif"] {
        let p = dir.path().join(name);
        ppdenoise::image::save(&img, &p, 16).unwrap();
        let back = load(&p).unwrap();
        let q = dir.path().join("again.dcm");
        Encoding::Dicom(Box::new(t.clone()))
            .save(&back, &q)
            .unwrap();
        assert_eq!(stored_values(&q), values, "{name}");
    }
}

/// One RLE Lossless frame (PS3.5 annex G) of 16-bit samples: a 64-byte header and two
/// segments (high bytes, then low bytes), each one literal PackBits run per 128 bytes.
fn rle_frame(values: &[i32]) -> Vec<u8> {
    let segment = |shift: u32| -> Vec<u8> {
        let bytes: Vec<u8> = values
            .iter()
            .map(|&v| ((v as u16) >> shift) as u8)
            .collect();
        let mut s = Vec::new();
        for chunk in bytes.chunks(128) {
            s.push((chunk.len() - 1) as u8);
            s.extend_from_slice(chunk);
        }
        if s.len() % 2 == 1 {
            s.push(0);
        }
        s
    };
    let (hi, lo) = (segment(8), segment(0));
    let mut frame = vec![0u8; 64];
    frame[0..4].copy_from_slice(&2u32.to_le_bytes());
    frame[4..8].copy_from_slice(&64u32.to_le_bytes());
    frame[8..12].copy_from_slice(&(64 + hi.len() as u32).to_le_bytes());
    frame.extend_from_slice(&hi);
    frame.extend_from_slice(&lo);
    frame
}

#[test]
fn rle_lossless_decodes_to_the_same_image_and_is_written_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i32> = (0..30).map(|i| -1000 + i * 97).collect();
    let mut spec = Spec::new(5, 6, 12, true, values.clone());
    let plain = load(spec.write(&dir.path().join("plain.dcm"))).unwrap();
    spec.transfer_syntax = uids::RLE_LOSSLESS;
    spec.fragments = Some(vec![rle_frame(&values)]);
    let src = spec.write(&dir.path().join("rle.dcm"));
    let img = load(&src).unwrap();
    assert_eq!(img, plain);
    let out = dir.path().join("rle-out.dcm");
    Encoding::Dicom(Box::new(DicomTemplate::read(&src).unwrap()))
        .save(&img, &out)
        .unwrap();
    assert_eq!(stored_values(&out), values);
    assert_derived(&out, &src);
}

/// Malformed encapsulated pixel data is refused before a decoder sizes anything from it
/// (an outside review found the registry's decoders panic or allocate what the data claims).
#[test]
fn malformed_rle_and_jpeg_data_are_refused_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i32> = (0..30).map(|i| -1000 + i * 97).collect();
    let good = rle_frame(&values);
    let cases: Vec<(&str, &str, Vec<Vec<u8>>, &str)> = vec![
        (
            "rle-empty.dcm",
            uids::RLE_LOSSLESS,
            vec![vec![]],
            "fragment",
        ),
        (
            "rle-two.dcm",
            uids::RLE_LOSSLESS,
            vec![good.clone(), good.clone()],
            "RLE data",
        ),
        (
            "rle-count.dcm",
            uids::RLE_LOSSLESS,
            {
                let mut f = good.clone();
                f[0] = 16;
                vec![f]
            },
            "RLE data",
        ),
        (
            "rle-offset.dcm",
            uids::RLE_LOSSLESS,
            {
                let mut f = good.clone();
                f[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
                vec![f]
            },
            "RLE data",
        ),
        // SOI, then a frame header claiming 65535 x 65535 x 4 components of 16 bits.
        (
            "jpeg-huge.dcm",
            uids::JPEG_LOSSLESS_SV1,
            vec![vec![
                0xFF, 0xD8, 0xFF, 0xC3, 0, 20, 16, 0xFF, 0xFF, 0xFF, 0xFF, 4, 1, 0x11, 0, 2, 0x11,
                0, 3, 0x11, 0, 4, 0x11, 0,
            ]],
            "the JPEG data is 65535 x 65535, 4 component",
        ),
    ];
    for (name, ts, fragments, needle) in cases {
        let mut spec = Spec::new(5, 6, 12, true, values.clone());
        spec.transfer_syntax = ts;
        spec.fragments = Some(fragments);
        let path = spec.write(&dir.path().join(name));
        refused(&path, &[needle]);
    }
}

/// `load_frames` fails with an error naming the file and containing every needle.
fn frames_refused(path: &Path, needles: &[&str]) {
    let e = ppdenoise::image::load_frames(path).unwrap_err().to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(e.contains(&*name), "{e:?} does not name {name}");
    for n in needles {
        assert!(e.contains(n), "{e:?} does not mention {n:?}");
    }
}

/// `load` fails with an error naming the file and containing every needle.
fn refused(path: &Path, needles: &[&str]) -> ImageError {
    let e = load(path).unwrap_err();
    let msg = e.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "{msg:?} does not name {name}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not mention {n:?}");
    }
    e
}

#[test]
fn refusals_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let base = Spec::new(4, 4, 8, false, (0..16).collect());

    let mut multi = base.clone();
    multi.frames = Some(2);
    multi.values = (0..32).collect();
    let e = refused(&multi.write(&d("multi.dcm")), &["2 frames", "single-frame"]);
    assert!(matches!(e, ImageError::Unsupported { .. }));
    // As a template it reads, and takes two frames, not one image.
    let t = DicomTemplate::read(d("multi.dcm")).unwrap();
    assert_eq!(t.frames(), 2);
    let one = ppdenoise::image::load(Spec::new(4, 4, 8, false, vec![0; 16]).write(&d("one.dcm")))
        .unwrap();
    let e = Encoding::Dicom(Box::new(t))
        .save(&one, d("out.dcm"))
        .unwrap_err();
    assert!(
        e.to_string().contains("1 image(s) for the 2 frame(s)"),
        "{e}"
    );

    let mut rgb = base.clone();
    rgb.samples = 3;
    rgb.photometric = "RGB";
    rgb.values = (0..48).collect();
    refused(
        &rgb.write(&d("rgb.dcm")),
        &["colour", "3 samples per pixel", "RGB"],
    );

    let mut palette = base.clone();
    palette.photometric = "PALETTE COLOR";
    refused(&palette.write(&d("palette.dcm")), &["PALETTE COLOR"]);

    let mut deep = base.clone();
    deep.bits_allocated = 32;
    deep.bits_stored = 20;
    deep.values = vec![0; 32]; // 16 samples of 32 bits, as 16-bit words
    refused(&deep.write(&d("deep.dcm")), &["32 bits allocated"]);

    let mut huge = base.clone();
    huge.rows = 65535;
    huge.cols = 65535;
    refused(&huge.write(&d("huge.dcm")), &["65535 x 65535"]);

    let mut short = base.clone();
    short.values = (0..10).collect();
    refused(
        &short.write(&d("short.dcm")),
        &["pixel data holds 10 bytes", "16"],
    );

    // An element declaring ~4 GiB is refused before any allocation (this would otherwise
    // reserve and zero 4 GiB).
    let mut crafted = base.bytes();
    let at = crafted
        .windows(8)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0])
        .unwrap();
    crafted[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(d("crafted.dcm"), &crafted).unwrap();
    let e = refused(
        &d("crafted.dcm"),
        &["(7FE0,0010)", "declares 4294967280 bytes"],
    );
    assert!(matches!(e, ImageError::Corrupt { .. }));

    let good = base.bytes();
    std::fs::write(d("cut.dcm"), &good[..good.len() - 5]).unwrap();
    refused(&d("cut.dcm"), &["corrupted DICOM"]);

    // Not a DICOM at all.
    std::fs::write(d("text.dcm"), b"hello").unwrap();
    let e = refused(&d("text.dcm"), &["not a PNG, TIFF or DICOM"]);
    assert!(matches!(e, ImageError::UnknownFormat { .. }));
}

#[test]
fn dicom_output_needs_a_fitting_template() {
    let dir = tempfile::tempdir().unwrap();
    let img = GrayImage::new(Array2::from_elem((3, 3), 10.0), 8);
    let out = dir.path().join("x.dcm");
    let e = Encoding::for_path(&out, 8, None).unwrap_err();
    assert!(
        e.to_string().contains("x.dcm") && e.to_string().contains("--like"),
        "{e}"
    );
    let e = ppdenoise::image::save(&img, &out, 8).unwrap_err();
    assert!(e.to_string().contains("--like"), "{e}");

    let src = Spec::new(4, 4, 8, false, (0..16).collect()).write(&dir.path().join("t.dcm"));
    let t = DicomTemplate::read(&src).unwrap();
    // Another size than the template's.
    let e = Encoding::Dicom(Box::new(t.clone()))
        .save(&img, &out)
        .unwrap_err();
    assert!(
        e.to_string().contains("3 x 3") && e.to_string().contains("t.dcm"),
        "{e}"
    );
    // A template for a PNG output.
    let e = Encoding::for_path(&dir.path().join("x.png"), 8, Some(t)).unwrap_err();
    assert!(e.to_string().contains("t.dcm"), "{e}");
    // A PNG as a template.
    let png = dir.path().join("p.png");
    ppdenoise::image::save_png(&img, &png, 8).unwrap();
    let e = DicomTemplate::read(&png).unwrap_err();
    assert!(
        e.to_string().contains("p.png") && e.to_string().contains("not a DICOM"),
        "{e}"
    );
    assert!(!out.exists());
}

// ---- command line ----

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ppdenoise")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn ppd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .arg("--json")
        .args(args)
        .output()
        .expect("run ppdenoise")
}

/// Runs a step that must succeed; returns its JSON summary.
fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> serde_json::Value {
    let o = ppd(args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "ppdenoise {args:?} failed: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(out.trim()).expect("one line of JSON")
}

/// A refusal: non-zero exit and every needle in the error.
fn cli_refused<S: AsRef<std::ffi::OsStr>>(args: &[S], needles: &[&str]) {
    let o = ppd(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "expected a refusal: {text}");
    for n in needles {
        assert!(text.contains(n), "{text:?} does not mention {n:?}");
    }
}

/// The CT `dcm` holds `tif`'s image (both on the CT's default window) to within the two
/// files' rounding, wherever the noisy slice it was made from lay inside the window (the
/// DICOM holds the rest back unchanged).
fn assert_same_inside_window(dcm: &Path, tif: &GrayImage, noisy: &Path, full: bool) {
    use ppdenoise::image::{load_windowed, window::WindowChoice};
    let choice = if full {
        WindowChoice::Full
    } else {
        WindowChoice::Default
    };
    let on_window = |p: &Path| load_windowed(p, &choice, false).unwrap().frames.remove(0);
    let (a, noisy) = (on_window(dcm), on_window(noisy));
    // What the container holds at most or least (a 12-bit CT's stored range ends at 1023
    // HU, inside the window): a value past it is clamped there.
    let t = DicomTemplate::read(dcm).unwrap();
    let i = t.intensity();
    let (lo, hi) = i.stored_range();
    let w = if full {
        i.full_window()
    } else {
        ppdenoise::image::window::CT_WINDOW
    };
    let (lo, hi) = (i.to_scale(lo, &w), i.to_scale(hi, &w));
    let step = 255.0 / 4095.0 / 2.0 + 255.0 / 65535.0 / 2.0 + 1e-9;
    let mut compared = 0;
    for ((x, y), n) in a.pixels.iter().zip(&tif.pixels).zip(&noisy.pixels) {
        if *n > 0.0 && *n < 255.0 && *x > lo + step && *x < hi - step {
            assert!((x - y).abs() <= step, "{x} vs {y}");
            compared += 1;
        }
    }
    assert!(compared >= 10, "{compared}");
}

/// A 12-bit signed CT-like slice of the n x n phantom.
fn ct_phantom(path: &Path, n: usize) -> PathBuf {
    let ph = ppdenoise::image::phantom::builtin(&format!("phantom:{n}")).unwrap();
    let values: Vec<i32> = ph
        .pixels
        .iter()
        .map(|&p| (p * 4095.0 / 255.0).round() as i32 - 2048)
        .collect();
    let mut spec = Spec::new(n as u16, n as u16, 12, true, values);
    spec.rescale = Some((1.0, -1024.0));
    spec.write(path)
}

#[test]
fn cli_add_noise_metrics_and_denoise_on_a_dicom() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| s(&dir.path().join(n));
    let ct = ct_phantom(&dir.path().join("ct.dcm"), 64);
    let j = ok(&[
        "add-noise",
        "--image",
        &s(&ct),
        "--sigma",
        "400HU",
        "--seed",
        "1",
        "--out",
        &d("noisy.dcm"),
    ]);
    let noisy = dir.path().join("noisy.dcm");
    assert_derived_cli(&noisy, &ct);
    assert!(attr(&open_file(&noisy).unwrap(), tags::SERIES_DESCRIPTION)
        .contains("noise sigma 400HU added"));
    assert!(
        attr(&open_file(&noisy).unwrap(), tags::DERIVATION_DESCRIPTION).contains("sigma 400HU")
    );
    // What was written is what add-noise measured.
    let m = ok(&["metrics", &s(&ct), &d("noisy.dcm")]);
    assert_eq!(m["psnr"], j["psnr"]);
    let p = m["psnr"].as_f64().unwrap();
    assert!((18.0..26.0).contains(&p), "PSNR {p}");

    // Denoise in the fixed-point arithmetic: a DICOM like the input, and a 16-bit TIFF. The
    // phantom fills the container's whole range (-3072 to 1023 HU, past a CT's window), and
    // so does its noise: on the full range, as add-noise put it there.
    ok(&[
        "denoise",
        "--sigma",
        "400HU",
        "--window",
        "full",
        "--image",
        &d("noisy.dcm"),
        "--arith",
        "fixed",
        "--out",
        &d("den.dcm"),
    ]);
    assert_derived_cli(&dir.path().join("den.dcm"), &noisy);
    ok(&[
        "denoise",
        "--sigma",
        "400HU",
        "--window",
        "full",
        "--image",
        &d("noisy.dcm"),
        "--arith",
        "fixed",
        "--out",
        &d("den.tif"),
    ]);
    let b = load(dir.path().join("den.tif")).unwrap();
    assert_eq!(b.bit_depth, 16);
    assert_same_inside_window(
        &dir.path().join("den.dcm"),
        &b,
        &dir.path().join("noisy.dcm"),
        true,
    );
    let after = ok(&["metrics", &s(&ct), &d("den.dcm")])["psnr"]
        .as_f64()
        .unwrap();
    assert!(after > p, "denoising did not help: {p} -> {after}");

    // Refusals: a DICOM output of a non-DICOM input, a template for a PNG.
    cli_refused(
        &[
            "add-noise",
            "--sigma",
            "400HU",
            "--image",
            "builtin:phantom:16",
            "--out",
            &d("x.dcm"),
        ],
        &["x.dcm", "--like"],
    );
    cli_refused(
        &[
            "add-noise",
            "--sigma",
            "400HU",
            "--image",
            &s(&ct),
            "--out",
            &d("x.png"),
            "--like",
            &s(&ct),
        ],
        &["ct.dcm", "DICOM output only"],
    );
    assert!(!dir.path().join("x.dcm").exists() && !dir.path().join("x.png").exists());
}

#[test]
fn reconstruct_refuses_a_dicom_output_before_reading_the_shares() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| s(&dir.path().join(n));
    let png = dir.path().join("p.png");
    ppdenoise::image::save_png(&GrayImage::new(Array2::zeros((2, 2)), 8), &png, 8).unwrap();
    // The shares do not even exist: the output's form is refused first.
    let base = [
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &d("none.p0"),
        "--share1",
        &d("none.p1"),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|x| x.to_string()).collect()
    };
    cli_refused(&with(&["--out", &d("o.dcm")]), &["o.dcm", "--like"]);
    cli_refused(
        &with(&["--out", &d("o.dcm"), "--like", &s(&png)]),
        &["p.png", "not a DICOM"],
    );
    cli_refused(
        &with(&["--out", &d("o.png"), "--like", &d("t.dcm")]),
        &["t.dcm", "DICOM output only"],
    );
    let multi = {
        let mut m = Spec::new(2, 2, 8, false, (0..8).collect());
        m.frames = Some(2);
        m.write(&dir.path().join("multi.dcm"))
    };
    cli_refused(
        &with(&["--out", &d("o.dcm"), "--like", &s(&multi)]),
        &["multi.dcm", "2 frames"],
    );
    cli_refused(
        &with(&[
            "--out",
            &d("o.dcm"),
            "--like",
            &s(&multi),
            "--bit-depth",
            "16",
        ]),
        &["--bit-depth"],
    );
}

fn wait_limit(mut c: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if c.try_wait().unwrap().is_some() {
            return c.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            let o = c.wait_with_output().unwrap();
            panic!(
                "process did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn secure_run_on_a_dicom_is_reconstructed_like_it() {
    if !common::have_dicom_testdata() {
        return;
    }
    use ppdenoise::model::mlp::{random_model, Activation, ModelMeta};
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| s(&dir.path().join(n));
    let ct = ct_phantom(&dir.path().join("ct.dcm"), 24);
    ok(&[
        "add-noise",
        "--sigma",
        "401.471HU",
        "--image",
        &s(&ct),
        "--seed",
        "2",
        "--out",
        &d("noisy.dcm"),
    ]);
    let meta = ModelMeta {
        sigma: 25.0,
        mean_shift: true,
        residual: true,
        activation: Activation::TanhStar,
        aggregation_sigma: 4.0,
    };
    random_model(&[49, 8, 9], 7, meta)
        .save(&dir.path().join("m.npz"))
        .unwrap();
    for n in ["s0", "s1"] {
        ok(&["keygen", "--name", n, "--out-dir", &d("keys")]);
    }
    // A model name that would not fit a series description is refused, and nothing written.
    let long = "x".repeat(49);
    cli_refused(
        &[
            "share-model",
            "--model",
            &d("m.npz"),
            "--out",
            &d("long"),
            "--name",
            &long,
        ],
        &["--name", "1 to 48 printable ASCII characters"],
    );
    assert!(!dir.path().join("long.pub").exists());
    ok(&["share-model", "--model", &d("m.npz"), "--out", &d("model")]);
    ok(&[
        "share-image",
        "--sigma",
        "401.471HU",
        "--image",
        &d("noisy.dcm"),
        "--out",
        &d("image"),
    ]);
    ok(&[
        "gen-triplets",
        "--model",
        &d("model.pub"),
        "--image",
        &d("image.pub"),
        "--batch",
        "64",
        "--out",
        &d("triplets"),
    ]);
    let spawn = |p: u8, addr: &[String]| {
        let (me, peer) = if p == 0 { ("s0", "s1") } else { ("s1", "s0") };
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &d(&format!("model.p{p}"))])
            .args(["--image", &d(&format!("image.p{p}"))])
            .args(["--triplets", &d(&format!("triplets.p{p}"))])
            .args(["--key", &d(&format!("keys/{me}.key"))])
            .args(["--cert", &d(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &d(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--timeout", "60"])
            .args(["--state-dir", &d("state")])
            .args(["--out", &d(&format!("out.p{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for o in start_pair(dir.path(), spawn).map(|c| wait_limit(c, Duration::from_secs(120))) {
        assert!(
            o.status.success(),
            "serve: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let rec = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "reconstruct".to_string(),
            "--insecure-unsigned".into(),
            "--share0".into(),
            d("out.p0"),
            "--share1".into(),
            d("out.p1"),
            "--out".into(),
            d(out),
        ];
        args.extend(extra.iter().map(|x| x.to_string()));
        ok(&args)
    };
    let j = rec("den.dcm", &["--like", &d("noisy.dcm"), "--clean", &s(&ct)]);
    assert!(j["psnr"].as_f64().unwrap().is_finite());
    let den = dir.path().join("den.dcm");
    assert_derived_cli(&den, &dir.path().join("noisy.dcm"));
    let obj = open_file(&den).unwrap();
    // The model's name, its id (share-model's) and the level (issue 44, item 5).
    let how = attr(&obj, tags::DERIVATION_DESCRIPTION);
    assert!(
        how.contains("secret shares (m, model id ") && how.ends_with(", sigma 401.471 HU)"),
        "{how}"
    );
    // The model's name (its file's, by default) and the job's sigma, carried by the servers.
    assert!(attr(&obj, tags::SERIES_DESCRIPTION).contains("(denoised, m, sigma 401.471 HU) #"));
    // An independent reader (pydicom) sees the derived attributes and our pixels.
    let seen = pydicom_reads(&den);
    assert_eq!(
        seen["SeriesInstanceUID"],
        attr(&obj, tags::SERIES_INSTANCE_UID).as_str()
    );
    assert_ne!(
        seen["SeriesInstanceUID"],
        attr(
            &open_file(d("noisy.dcm")).unwrap(),
            tags::SERIES_INSTANCE_UID
        )
        .as_str()
    );
    assert_eq!(seen["ImageType"][0], "DERIVED");
    assert_eq!(seen["ImageType"][1], "SECONDARY");
    assert_eq!(
        seen["SourceImageSOPInstanceUIDs"][0],
        attr(&open_file(d("noisy.dcm")).unwrap(), tags::SOP_INSTANCE_UID).as_str()
    );
    assert_eq!(seen["TransferSyntaxUID"], uids::EXPLICIT_VR_LITTLE_ENDIAN);
    assert_eq!(
        seen["SeriesDescription"],
        attr(&obj, tags::SERIES_DESCRIPTION).as_str()
    );
    let px = pixels_seen(&seen);
    assert_eq!(px, stored_values(&den));
    // --series-uid puts the result in a series of one's choosing, and refuses a bad UID.
    rec(
        "den2.dcm",
        &[
            "--like",
            &d("noisy.dcm"),
            "--series-uid",
            "1.2.826.0.1.3680043.8.498.77",
        ],
    );
    assert_eq!(
        attr(
            &open_file(d("den2.dcm")).unwrap(),
            tags::SERIES_INSTANCE_UID
        ),
        "1.2.826.0.1.3680043.8.498.77"
    );
    let bad: Vec<String> = [
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &d("out.p0"),
        "--share1",
        &d("out.p1"),
        "--out",
        &d("bad2.dcm"),
        "--like",
        &d("noisy.dcm"),
        "--series-uid",
        "1.2.03",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    cli_refused(&bad, &["--series-uid", "1.2.03", "not a DICOM UID"]);
    // A server that writes another model name into its output share's header (a backslash
    // and a control character in it) is not believed: the model's id is named instead.
    {
        use ppdenoise::formats::bodies::{load, OutputShare};
        use ppdenoise::formats::container::{self, Kind};
        let (mut h, o): (_, OutputShare) =
            load(Path::new(&d("out.p1")), Kind::OutputShare, None).unwrap();
        for (k, v) in h.info.iter_mut() {
            if k == "name" {
                *v = "FDA-cleared\\diagnostic\u{7}".into();
            }
        }
        container::write(
            Path::new(&d("out.p1")),
            &h,
            &o,
            ppdenoise::formats::container::Seal::PLAIN,
        )
        .unwrap();
    }
    rec("den3.dcm", &["--like", &d("noisy.dcm")]);
    let desc = attr(&open_file(d("den3.dcm")).unwrap(), tags::SERIES_DESCRIPTION);
    assert!(
        desc.contains("(denoised, model ")
            && desc.contains(", sigma 401.471 HU) #")
            && !desc.contains("FDA"),
        "{desc}"
    );
    // The model owner cannot publish such a name either.
    cli_refused(
        &[
            "share-model",
            "--model",
            &d("m.npz"),
            "--out",
            &d("bs"),
            "--name",
            "a\\b",
        ],
        &["--name", "printable ASCII", "no backslash"],
    );
    // The same result as a 16-bit TIFF: equal within the two formats' rounding.
    rec("den.tif", &[]);
    let b = load(dir.path().join("den.tif")).unwrap();
    assert_eq!(b.pixels.dim(), (24, 24));
    assert_same_inside_window(&den, &b, &dir.path().join("noisy.dcm"), false);
    // A template of another size is refused, and nothing is written.
    let small = Spec::new(4, 4, 12, true, vec![0; 16]).write(&dir.path().join("small.dcm"));
    let args: Vec<String> = [
        "reconstruct",
        "--insecure-unsigned",
        "--share0",
        &d("out.p0"),
        "--share1",
        &d("out.p1"),
        "--out",
        &d("bad.dcm"),
        "--like",
        &s(&small),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    cli_refused(&args, &["small.dcm", "4 x 4", "24 x 24"]);
    assert!(!dir.path().join("bad.dcm").exists());
}

/// The shell block of docs/dicom.md, run as written on a generated three-slice series: every
/// slice comes out as a DICOM of one new derived series (as pydicom reads it too), and equal
/// to the plaintext fixed-point oracle's result of the same slice.
#[test]
fn dicom_walkthrough_runs_as_written() {
    if !common::have_dicom_testdata() {
        return;
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dicom.md"))
        .unwrap();
    let script = *blocks(&doc, "sh")
        .first()
        .expect("docs/dicom.md has a ```sh block");
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series");
    // A real signed 16-bit CT (pydicom's CT_small, HU = stored - 1024) as a series of three
    // slices with 20 HU of Gaussian noise: the walk-through's default sigma.
    let clean = testdata("pydicom/CT_small.dcm");
    let o = Command::new(root().join(".venv-dicom/bin/python"))
        .arg(root().join("scripts/noisy-series.py"))
        .args([s(&clean), s(&series)])
        .args(["--slices", "3", "--sigma", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/default-model.npz");
    let run = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env("B", bin())
        .env("MODEL", &model)
        .env("ADDR", own_loopback_addr())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the walk-through failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let mut derived_series = std::collections::BTreeSet::new();
    for k in 1..=3 {
        let noisy = series.join(format!("slice{k:03}.dcm"));
        let out = dir.path().join(format!("denoised/slice{k:03}.dcm"));
        assert_derived_cli(&out, &noisy);
        let seen = pydicom_reads(&out);
        derived_series.insert(seen["SeriesInstanceUID"].as_str().unwrap().to_string());
        assert_eq!(seen["ImageType"][0], "DERIVED");
        assert!(
            seen["SeriesDescription"]
                .as_str()
                .unwrap()
                .contains("denoised, default-model, sigma 20 HU #"),
            "{}",
            seen["SeriesDescription"]
        );
        let oracle = dir.path().join(format!("oracle-{k}.dcm"));
        ok(&[
            "denoise",
            "--model",
            &s(&model),
            "--arith",
            "fixed",
            "--image",
            &s(&noisy),
            "--sigma",
            "20HU",
            "--out",
            &s(&oracle),
        ]);
        assert_eq!(
            stored_values(&out),
            stored_values(&oracle),
            "slice {k}: secure result and fixed-point oracle differ"
        );
        let px = pixels_seen(&seen);
        assert_eq!(
            px,
            stored_values(&out),
            "slice {k}: pydicom reads other pixels"
        );
        // Better than it went in, in HU as pydicom reads them.
        let o = Command::new(root().join(".venv-dicom/bin/python"))
            .arg(root().join("scripts/dicom-rmse.py"))
            .args([s(&clean), s(&noisy), s(&out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rmse: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let (before, after) = (
            rmse[s(&noisy)].as_f64().unwrap(),
            rmse[s(&out)].as_f64().unwrap(),
        );
        eprintln!("slice {k}: RMSE {before:.2} HU -> {after:.2} HU");
        assert!(
            after < 0.9 * before,
            "slice {k}: {before:.2} HU -> {after:.2} HU"
        );
    }
    assert_eq!(
        derived_series.len(),
        1,
        "one derived series: {derived_series:?}"
    );
}

// ---- transfer syntaxes as archives hold them (issue 28, item 1) ----

/// The stored values pydicom read ([`pydicom_reads`]), every frame in order.
fn pixels_seen(seen: &serde_json::Value) -> Vec<i32> {
    seen["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i32)
        .collect()
}

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of `make dicom-testdata`: pydicom's test files (`pydicom/...`, shipped in PyPI's
/// pydicom wheel, see their README.txt for origins and licences) or one the script made.
fn testdata(name: &str) -> PathBuf {
    let path = if let Some(rest) = name.strip_prefix("pydicom/") {
        let lib = root().join(".venv-dicom/lib");
        let python = std::fs::read_dir(&lib)
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok())
                    .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
            })
            .map(|e| e.path())
            .unwrap_or(lib);
        python
            .join("site-packages/pydicom/data/test_files")
            .join(rest)
    } else {
        root().join("out/dicom-testdata").join(name)
    };
    assert!(
        path.exists(),
        "{}: missing; run `make dicom-testdata` (pydicom and OpenJPEG from PyPI)",
        path.display()
    );
    path
}

/// The stored values `load` decoded (the 0..255 scale mapped back exactly), with the rows
/// and columns.
fn decoded(path: &Path) -> (Vec<i32>, usize, usize) {
    let img = load(path).unwrap_or_else(|e| panic!("{e}"));
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .unwrap();
    let int = |tag| obj.element(tag).unwrap().to_int::<i32>().unwrap();
    let (bits, signed) = (int(tags::BITS_STORED), int(tags::PIXEL_REPRESENTATION) == 1);
    let mono1 = attr(&obj, tags::PHOTOMETRIC_INTERPRETATION) == "MONOCHROME1";
    let top = f64::from((1u32 << bits) - 1);
    let offset = if signed { 1 << (bits - 1) } else { 0 };
    let values = img
        .pixels
        .iter()
        .map(|&x| {
            let u = (x * top / 255.0).round();
            let u = if mono1 { top - u } else { u };
            u as i32 - offset
        })
        .collect();
    (values, img.pixels.nrows(), img.pixels.ncols())
}

/// `v[r][c]` of a row-major image `cols` wide; negative indices count from the end.
fn at(v: &[i32], cols: usize, r: isize, c: isize) -> i32 {
    let rows = (v.len() / cols) as isize;
    let (r, c) = (
        r.rem_euclid(rows) as usize,
        c.rem_euclid(cols as isize) as usize,
    );
    v[r * cols + c]
}

/// pydicom's MR_small in every lossless form it ships decodes to the same stored values,
/// which are the ones pydicom's own tests assert (tests/pixels/pixels_reference.py).
#[test]
fn mr_small_in_every_lossless_syntax_gives_pydicoms_values() {
    if !common::have_dicom_testdata() {
        return;
    }
    let (reference, rows, cols) = decoded(&testdata("pydicom/MR_small.dcm"));
    assert_eq!((rows, cols), (64, 64));
    let row0: Vec<i32> = (31..34).map(|c| at(&reference, cols, 0, c)).collect();
    assert_eq!(row0, [422, 319, 361]);
    let row31: Vec<i32> = (0..3).map(|c| at(&reference, cols, 31, c)).collect();
    assert_eq!(row31, [366, 363, 322]);
    let last: Vec<i32> = (-3..0).map(|c| at(&reference, cols, -1, c)).collect();
    assert_eq!(last, [1369, 1129, 862]);
    for name in [
        "MR_small_implicit.dcm",     // implicit VR little endian
        "MR_small_bigendian.dcm",    // explicit VR big endian
        "MR_small_expb.dcm",         // explicit VR big endian (dcmconv)
        "MR_small_RLE.dcm",          // RLE Lossless
        "MR_small_jp2klossless.dcm", // JPEG 2000 lossless, 16 bits
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm", // 128 bytes of trailing padding
    ] {
        let (v, r, c) = decoded(&testdata(&format!("pydicom/{name}")));
        assert_eq!((r, c), (rows, cols), "{name}");
        assert!(
            v == reference,
            "{name}: stored values differ from MR_small's"
        );
    }
}

/// Lossy and deflated files of pydicom's: the values its tests assert, from other decoders
/// (pylibjpeg, GDCM).
#[test]
fn lossy_jpeg_2000_12_bit_jpeg_and_deflated_files_give_pydicoms_values() {
    if !common::have_dicom_testdata() {
        return;
    }
    // JPEG extended, 12 bits stored (process 4), decoded by libjpeg-turbo.
    let (v, rows, cols) = decoded(&testdata("pydicom/JPGExtended.dcm"));
    assert_eq!((rows, cols), (1024, 256));
    assert_eq!((at(&v, cols, 420, 140), at(&v, cols, 230, 120)), (244, 95));
    // Deflated explicit VR little endian, 8 bits.
    let (v, rows, cols) = decoded(&testdata("pydicom/image_dfl.dcm"));
    assert_eq!((rows, cols), (512, 512));
    let row = |r: usize| &v[r * cols..(r + 1) * cols];
    assert_eq!(row(10).iter().min(), Some(&41));
    assert_eq!(row(10).iter().max(), Some(&255));
    assert_eq!(&row(300)[255..263], [138, 65, 65, 65, 65, 35, 35, 35]);
    assert_eq!(row(500).iter().min(), Some(&65));
    assert_eq!(row(500).iter().max(), Some(&219));
    // JPEG 2000 lossless, 13 bits signed, where the codestream says unsigned.
    let (v, _, cols) = decoded(&testdata("pydicom/J2K_pixelrep_mismatch.dcm"));
    assert_eq!(at(&v, cols, 0, 0), -2000);
    let col: Vec<i32> = (47..57).map(|r| at(&v, cols, r, 279)).collect();
    assert_eq!(
        col,
        [621, 412, 138, -193, -520, -767, -907, -966, -988, -995]
    );
    let col: Vec<i32> = (328..338).map(|r| at(&v, cols, r, 106)).collect();
    assert_eq!(
        col,
        [-377, -121, 141, 383, 633, 910, 1198, 1455, 1638, 1732]
    );
    // JPEG 2000 lossy (14 and 16 bits) and JPEG-LS near-lossless (8 and 16 bits): read.
    for (name, size) in [
        ("693_J2KI.dcm", (512, 512)),
        ("JPEG2000.dcm", (1024, 256)),
        ("JPEGLSNearLossless_08.dcm", (45, 10)),
        ("JPEGLSNearLossless_16.dcm", (50, 10)),
    ] {
        let (_, r, c) = decoded(&testdata(&format!("pydicom/{name}")));
        assert_eq!((r, c), size, "{name}");
    }
}

/// 8- and 12-bit JPEG 2000, lossless equal to the source and lossy close to it (made by
/// OpenJPEG through pydicom in `make dicom-testdata`).
#[test]
fn jpeg_2000_of_8_and_12_bits_decodes_to_its_source() {
    if !common::have_dicom_testdata() {
        return;
    }
    for bits in [8, 12] {
        let (reference, ..) = decoded(&testdata(&format!("j2k{bits}-ref.dcm")));
        let (lossless, ..) = decoded(&testdata(&format!("j2k{bits}-lossless.dcm")));
        assert!(
            lossless == reference,
            "{bits}-bit lossless JPEG 2000 differs"
        );
    }
    // Lossy: exactly what OpenJPEG's own decoder (pylibjpeg-openjpeg) gave, which differs
    // from the source.
    let (reference, ..) = decoded(&testdata("j2k8-ref.dcm"));
    let (lossy, ..) = decoded(&testdata("j2k8-lossy.dcm"));
    let (openjpeg, ..) = decoded(&testdata("j2k8-lossy-openjpeg.dcm"));
    assert!(lossy == openjpeg, "lossy JPEG 2000 decoded unlike OpenJPEG");
    assert!(lossy != reference);
}

/// The CLI says it ignored trailing padding; the image is the frame.
#[test]
fn trailing_padding_is_read_with_a_warning() {
    if !common::have_dicom_testdata() {
        return;
    }
    let o = ppd(&["inspect", &s(&testdata("pydicom/MR_small_padded.dcm"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("MR_small_padded.dcm")
            && err.contains("128 bytes past its 64 x 64 frame")
            && err.contains("trailing padding"),
        "{err}"
    );
}

/// Files this test writes itself in the other syntaxes dicom-rs encodes: big endian,
/// deflated, JPEG-LS lossless and near-lossless (CharLS), and 12-bit JPEG (libjpeg-turbo).
#[test]
fn big_endian_deflated_jpeg_ls_and_12_bit_jpeg_written_here_decode_to_their_source() {
    use dicom_pixeldata::Transcode;
    use dicom_transfer_syntax_registry::entries;
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let cases = [
        (
            8,
            false,
            (0..60).map(|i| (i * 37) % 256).collect::<Vec<i32>>(),
        ),
        (12, true, (0..60).map(|i| -2000 + i * 67).collect()),
        (12, false, (0..60).map(|i| i * 67).collect()),
        (16, false, (0..60).map(|i| i * 1091).collect()),
    ];
    for (bits, signed, values) in cases {
        let spec = Spec::new(6, 10, bits, signed, values.clone());
        let plain = spec.write(&d(&format!("plain{bits}.dcm")));
        assert_eq!(decoded(&plain).0, values);
        for ts in [
            "1.2.840.10008.1.2.2", // explicit VR big endian
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        ] {
            let mut s2 = spec.clone();
            s2.transfer_syntax = ts;
            let p = s2.write(&d(&format!("{bits}-{ts}.dcm")));
            assert_eq!(decoded(&p).0, values, "{bits} bits in {ts}");
        }
        // JPEG-LS through dicom-pixeldata's own encoder (CharLS).
        let mut obj = open_file(&plain).unwrap();
        obj.transcode(&entries::JPEG_LS_LOSSLESS_IMAGE_COMPRESSION.erased())
            .unwrap();
        let p = d(&format!("jls{bits}.dcm"));
        obj.write_to_file(&p).unwrap();
        assert_eq!(decoded(&p).0, values, "{bits}-bit JPEG-LS lossless");
        // Near-lossless only for unsigned data: dicom-rs hands CharLS sign-extended words,
        // which are outside a signed image's sample range (lossless survives it: modular).
        if !signed {
            let mut obj = open_file(&plain).unwrap();
            let mut opts = dicom_encoding::adapters::EncodeOptions::new();
            // dicom-rs's NEAR is 2^(bits-4) (100 - quality) / 100; CharLS takes at most 255.
            let quality = if bits == 16 { 95 } else { 50 };
            opts.quality = Some(quality);
            obj.transcode_with_options(&entries::JPEG_LS_LOSSY_IMAGE_COMPRESSION.erased(), opts)
                .unwrap_or_else(|e| panic!("{bits} bits: {e:?}"));
            let p = d(&format!("jls-near{bits}.dcm"));
            obj.write_to_file(&p).unwrap();
            let near = (1 << (bits - 4)) * (100 - i32::from(quality)) / 100;
            assert!(near > 0);
            let back = decoded(&p).0;
            let worst = values.iter().zip(&back).map(|(a, b)| (a - b).abs()).max();
            assert!(
                worst.unwrap() <= near,
                "{bits}-bit near-lossless: {worst:?} > {near}"
            );
        }
    }
    // 12-bit lossy JPEG (process 4), as a CT would export it.
    let values: Vec<i32> = (0..48 * 40)
        .map(|i| (i % 40) * 100 + (i / 40) * 3)
        .collect();
    let raw: Vec<u16> = values.iter().map(|&v| v as u16).collect();
    let jpeg = ppdenoise::image::jpeg12::encode(&raw, 48, 40, 95).unwrap();
    let mut spec = Spec::new(48, 40, 12, false, values.clone());
    spec.transfer_syntax = uids::JPEG_EXTENDED12_BIT;
    spec.fragments = Some(vec![jpeg.clone()]);
    let back = decoded(&spec.write(&d("jpeg12.dcm"))).0;
    let worst = values.iter().zip(&back).map(|(a, b)| (a - b).abs()).max();
    assert!(
        worst.unwrap() <= 40,
        "12-bit JPEG at quality 95: worst {worst:?} of 4095"
    );
    // The same stream split over two fragments is one frame.
    let (a, b) = jpeg.split_at(jpeg.len() / 2);
    spec.fragments = Some(vec![a.to_vec(), b.to_vec()]);
    assert_eq!(decoded(&spec.write(&d("jpeg12-split.dcm"))).0, back);
    // Said to be 8 bits allocated: the stream's 12 bits do not fit.
    let mut narrow = spec.clone();
    narrow.bits_allocated = 8;
    narrow.bits_stored = 8;
    narrow.values = vec![0; 48 * 40];
    refused(
        &narrow.write(&d("jpeg12-8.dcm")),
        &["12 bits", "8 bits allocated"],
    );
}

/// What stays unread says "unsupported transfer syntax", names it, and says how to transcode.
#[test]
fn unsupported_transfer_syntaxes_say_so_and_how_to_transcode() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let base = Spec::new(4, 4, 8, false, (0..16).collect());
    for (name, ts, needles) in [
        (
            "jxl.dcm",
            "1.2.840.10008.1.2.4.110",
            vec!["JPEG XL", "no decoder"],
        ),
        (
            "mpeg.dcm",
            "1.2.840.10008.1.2.4.100",
            vec!["MPEG2", "no decoder"],
        ),
        ("jpip.dcm", "1.2.840.10008.1.2.4.94", vec!["JPIP"]),
        (
            "dfl-frames.dcm",
            uids::DEFLATED_IMAGE_FRAME_COMPRESSION,
            vec!["without a bound"],
        ),
        // A private syntax dicom-rs cannot write: patched over explicit VR little endian's
        // UID, which has the same length.
        (
            "private.dcm",
            "1.2.3.4.5.6.7.8.9.1",
            vec!["not one DICOM defines"],
        ),
    ] {
        let mut spec = base.clone();
        let path = if ts.starts_with("1.2.3.") {
            let mut b = spec.bytes();
            let at = b
                .windows(ts.len())
                .position(|w| w == uids::EXPLICIT_VR_LITTLE_ENDIAN.as_bytes())
                .unwrap();
            b[at..at + ts.len()].copy_from_slice(ts.as_bytes());
            std::fs::write(d(name), b).unwrap();
            d(name)
        } else {
            spec.transfer_syntax = ts;
            spec.fragments = Some(vec![vec![0; 8]]);
            spec.write(&d(name))
        };
        let mut all = vec!["unsupported transfer syntax", ts, "docs/formats.md"];
        all.extend(needles);
        let e = refused(&path, &all);
        assert!(matches!(e, ImageError::Unsupported { .. }), "{name}: {e}");
    }
    // A transfer syntax UID padded with a tab: the parser would trim it and read big endian
    // what the length walk read as little endian (an outside review's bypass).
    let mut be = base.clone();
    be.transfer_syntax = "1.2.840.10008.1.2.2";
    let mut b = be.bytes();
    let at = b
        .windows(20)
        .position(|w| w == b"1.2.840.10008.1.2.2\0")
        .unwrap();
    b[at + 19] = b'\t';
    std::fs::write(d("tab.dcm"), b).unwrap();
    let e = refused(&d("tab.dcm"), &["transfer syntax UID", "is not a UID"]);
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
    // 16-bit samples typed OB in a big-endian file: the byte order is not said.
    let mut be16 = Spec::new(4, 4, 12, false, (0..16).collect());
    be16.transfer_syntax = "1.2.840.10008.1.2.2";
    let mut b = be16.bytes();
    let at = b
        .windows(6)
        .position(|w| w == [0x7F, 0xE0, 0x00, 0x10, b'O', b'W'])
        .unwrap();
    b[at + 5] = b'B';
    std::fs::write(d("be-ob.dcm"), b).unwrap();
    refused(
        &d("be-ob.dcm"),
        &["typed OB in a big-endian file", "ambiguous"],
    );

    // JPEG 2000 whose header is missing, hidden in a JP2 wrapper, says another size or three
    // components, subsamples, tiles in tiny tiles, or lacks its tiles.
    let mut j2k = base.clone();
    j2k.transfer_syntax = JPEG_2000_LOSSLESS;
    j2k.fragments = Some(vec![vec![0xFF, 0x4F, 0xFF, 0x51]]);
    refused(
        &j2k.write(&d("j2k-cut.dcm")),
        &["JPEG 2000 data without its codestream header"],
    );
    // SOC, SIZ (rows x cols, tiles of `tile`, `comps` components subsampled `sub`), and a
    // tile-part of every tile when `parts`, then EOC.
    let siz = |rows: u32, cols: u32, comps: u16, tile: u32, sub: u8, parts: bool| {
        let mut b = vec![0xFF, 0x4F, 0xFF, 0x51];
        b.extend_from_slice(&(38 + 3 * comps).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        for v in [cols, rows, 0, 0, tile, tile, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&comps.to_be_bytes());
        for _ in 0..comps {
            b.extend_from_slice(&[7, sub, sub]);
        }
        if parts {
            let tiles = cols.div_ceil(tile) * rows.div_ceil(tile);
            for t in 0..tiles as u16 {
                // SOT (Psot 14: the marker segment and an empty SOD), SOD.
                b.extend_from_slice(&[0xFF, 0x90, 0, 10]);
                b.extend_from_slice(&t.to_be_bytes());
                b.extend_from_slice(&14u32.to_be_bytes());
                b.extend_from_slice(&[0, 1, 0xFF, 0x93]);
            }
        }
        b.extend_from_slice(&[0xFF, 0xD9]);
        b
    };
    for (name, ts) in [
        ("j2k-big.dcm", JPEG_2000_LOSSLESS),
        ("j2k-part2.dcm", "1.2.840.10008.1.2.4.92"),
    ] {
        j2k.transfer_syntax = ts;
        j2k.fragments = Some(vec![siz(4000, 4000, 1, 4000, 1, true)]);
        refused(&j2k.write(&d(name)), &["the JPEG 2000 data is 4000 x 4000"]);
    }
    j2k.transfer_syntax = JPEG_2000_LOSSLESS;
    j2k.fragments = Some(vec![siz(4, 4, 3, 4, 1, true)]);
    refused(&j2k.write(&d("j2k-rgb.dcm")), &["3 component(s)"]);
    let mut jp2 = vec![0, 0, 0, 12, b'j', b'P', b' ', b' ', 0x0D, 0x0A, 0x87, 0x0A];
    jp2.extend(siz(4, 4, 1, 4, 1, true));
    j2k.fragments = Some(vec![jp2]);
    refused(
        &j2k.write(&d("j2k-jp2.dcm")),
        &["JP2 file wrapper", "bare codestream"],
    );
    j2k.fragments = Some(vec![siz(4, 4, 1, 4, 2, true)]);
    refused(&j2k.write(&d("j2k-sub.dcm")), &["subsampled 2 x 2"]);
    let mut tiny = Spec::new(64, 64, 8, false, vec![0; 64 * 64]);
    tiny.transfer_syntax = JPEG_2000_LOSSLESS;
    tiny.fragments = Some(vec![siz(64, 64, 1, 8, 1, true)]);
    refused(
        &tiny.write(&d("j2k-tiles.dcm")),
        &["tiles of 8 x 8 pixels (64 tiles)"],
    );
    tiny.fragments = Some(vec![siz(64, 64, 1, 64, 1, false)]);
    refused(
        &tiny.write(&d("j2k-no-tiles.dcm")),
        &["cut short or missing some of its 1 tile(s)"],
    );
}

/// A lossy decoder's overshoot is clamped to the stored range, not wrapped: a 10-bit image
/// in a 12-bit JPEG (as 10-bit X-ray is often stored) keeps its white edge white.
#[test]
fn lossy_overshoot_past_bits_stored_is_clamped_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (32, 32);
    let values: Vec<i32> = (0..rows * cols)
        .map(|i| if i % cols < 13 { 0 } else { 1023 }) // an edge inside an 8x8 block
        .collect();
    let raw: Vec<u16> = values.iter().map(|&v| v as u16).collect();
    let mut spec = Spec::new(rows as u16, cols as u16, 10, false, values.clone());
    spec.transfer_syntax = uids::JPEG_EXTENDED12_BIT;
    for q in [75, 90] {
        let jpeg = ppdenoise::image::jpeg12::encode(&raw, rows, cols, q).unwrap();
        // The decoder itself overshoots 1023 somewhere (else this test shows nothing).
        let back = ppdenoise::image::jpeg12::decode_for_test(&jpeg, rows, cols);
        assert!(back.iter().any(|&v| v > 1023), "quality {q}: no overshoot");
        spec.fragments = Some(vec![jpeg]);
        let got = decoded(&spec.write(&dir.path().join(format!("edge{q}.dcm")))).0;
        for (i, (&v, &w)) in values.iter().zip(&got).enumerate() {
            if v == 1023 {
                assert!(w >= 900, "quality {q}: pixel {i} of the white half is {w}");
            }
        }
    }
}

// ---- multi-frame objects (issue 28, item 2) ----

/// A 3-frame 12-bit signed CT-like object, each frame with its own rescale intercept in the
/// per-frame functional groups (as an enhanced CT holds it), and the frames' values.
fn multi_frame(path: &Path, encapsulate_rle: bool) -> Vec<Vec<i32>> {
    let (rows, cols) = (16u16, 20u16);
    let frames: Vec<Vec<i32>> = (0..3)
        .map(|k| {
            (0..i32::from(rows) * i32::from(cols))
                .map(|i| -1500 + (i * 37 + k * 500) % 3000)
                .collect()
        })
        .collect();
    let mut spec = Spec::new(rows, cols, 12, true, frames.concat());
    spec.frames = Some(3);
    if encapsulate_rle {
        spec.transfer_syntax = uids::RLE_LOSSLESS;
        spec.fragments = Some(frames.iter().map(|f| rle_frame(f)).collect());
    }
    let mut obj = open_file(spec.write(path)).unwrap().into_inner();
    let items: Vec<InMemDicomObject> = (0..3)
        .map(|k| {
            let pvt = InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::RESCALE_INTERCEPT,
                    VR::DS,
                    PrimitiveValue::from(format!("{}", -1024 - 10 * k)),
                ),
                DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")),
            ]);
            InMemDicomObject::from_element_iter([DataElement::new(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![pvt]),
            )])
        })
        .collect();
    obj.put(DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(items),
    ));
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(spec.transfer_syntax))
        .unwrap()
        .write_to_file(path)
        .unwrap();
    frames
}

/// The per-frame rescale intercepts of a file.
fn frame_intercepts(path: &Path) -> Vec<String> {
    let obj = open_file(path).unwrap();
    obj.element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|item| {
            let pvt = item
                .element(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE)
                .unwrap();
            attr(&pvt.items().unwrap()[0], tags::RESCALE_INTERCEPT)
        })
        .collect()
}

/// Stored values of every frame `load_frames` decoded (the scale mapped back, 12-bit signed).
fn frames_stored(path: &Path) -> Vec<Vec<i32>> {
    ppdenoise::image::load_frames(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|f| {
            f.pixels
                .iter()
                .map(|&x| (x * 4095.0 / 255.0).round() as i32 - 2048)
                .collect()
        })
        .collect()
}

#[test]
fn multi_frame_objects_are_read_whole_and_written_like_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let values = multi_frame(&d("mf.dcm"), false);
    // Native and RLE (one fragment per frame) decode to the frames' values.
    assert_eq!(frames_stored(&d("mf.dcm")), values);
    assert_eq!(multi_frame(&d("mf-rle.dcm"), true), values);
    assert_eq!(frames_stored(&d("mf-rle.dcm")), values);
    // A single-image reader refuses it, saying which commands take it.
    refused(&d("mf.dcm"), &["3 frames", "share-study"]);
    // Written like itself: every frame's stored values, the per-frame groups kept.
    let frames = ppdenoise::image::load_frames(d("mf.dcm")).unwrap();
    let t = DicomTemplate::read(d("mf.dcm")).unwrap();
    assert_eq!(t.frames(), 3);
    Encoding::Dicom(Box::new(t.clone()))
        .save_frames(&frames, d("copy.dcm"))
        .unwrap();
    assert_eq!(frames_stored(&d("copy.dcm")), values);
    assert_eq!(
        frame_intercepts(&d("copy.dcm")),
        ["-1024", "-1034", "-1044"]
    );
    assert_eq!(
        attr(&open_file(d("copy.dcm")).unwrap(), tags::NUMBER_OF_FRAMES),
        "3"
    );
    // One image for a 3-frame template, or frames as PNG: refused, nothing written.
    let e = Encoding::Dicom(Box::new(t))
        .save(&frames[0], d("one.dcm"))
        .unwrap_err();
    assert!(
        e.to_string().contains("1 image(s) for the 3 frame(s)"),
        "{e}"
    );
    let e = Encoding::Png(8)
        .save_frames(&frames, d("f.png"))
        .unwrap_err();
    assert!(e.to_string().contains("3 frames"), "{e}");
    assert!(!d("one.dcm").exists() && !d("f.png").exists());
    // Frames in fewer fragments than frames: refused by name.
    let mut two = Spec::new(4, 4, 12, true, vec![0; 48]);
    two.frames = Some(3);
    two.transfer_syntax = uids::RLE_LOSSLESS;
    two.fragments = Some(vec![rle_frame(&[0; 16]), rle_frame(&[0; 16])]);
    // Absurdly many frames (each an image of its own) are refused from the header.
    let mut many = Spec::new(1, 1, 8, false, vec![0; 200_000]);
    many.frames = Some(200_000);
    frames_refused(
        &many.write(&d("many.dcm")),
        &["200000 frames (at most 100000"],
    );
    frames_refused(&two.write(&d("two.dcm")), &["3 frames in 2 fragments"]);
}

#[test]
fn add_noise_and_denoise_take_every_frame_and_write_one_object() {
    if !common::have_dicom_testdata() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let p = |n: &str| s(&d(n));
    multi_frame(&d("mf.dcm"), false);
    let j = ok(&[
        "add-noise",
        "--image",
        &p("mf.dcm"),
        "--sigma",
        "320HU",
        "--seed",
        "7",
        "--out",
        &p("noisy.dcm"),
    ]);
    assert_eq!(j["frames"], 3);
    // Frame k has the noise of seed 7 + k: as add-noise gives a single frame k.
    let clean = ppdenoise::image::load_frames(d("mf.dcm")).unwrap();
    let noisy = ppdenoise::image::load_frames(d("noisy.dcm")).unwrap();
    let t = DicomTemplate::read(d("mf.dcm")).unwrap();
    for (k, (c, n)) in clean.iter().zip(&noisy).enumerate() {
        // 320 HU on the default CT window, as add-noise reads it.
        let level = 320.0 / ppdenoise::image::window::CT_WINDOW.per_level();
        let want = ppdenoise::image::add_noise(c, level, 7 + k as u64);
        assert_eq!(n.pixels, t.quantize(&want.pixels), "frame {k}");
    }
    assert_eq!(
        frame_intercepts(&d("noisy.dcm")),
        ["-1024", "-1034", "-1044"]
    );
    // Denoised in fixed point: every frame as the frame alone gives.
    ok(&[
        "denoise",
        "--sigma",
        "400HU",
        "--image",
        &p("noisy.dcm"),
        "--arith",
        "fixed",
        "--out",
        &p("den.dcm"),
    ]);
    let den = frames_stored(&d("den.dcm"));
    assert_eq!(den.len(), 3);
    let noisy_values = frames_stored(&d("noisy.dcm"));
    for (k, frame) in noisy_values.iter().enumerate() {
        let one = Spec::new(16, 20, 12, true, frame.clone()).write(&d(&format!("f{k}.dcm")));
        let out = d(&format!("f{k}-den.dcm"));
        ok(&[
            "denoise",
            "--sigma",
            "400HU",
            "--image",
            &s(&one),
            "--arith",
            "fixed",
            "--out",
            &s(&out),
        ]);
        assert_eq!(den[k], stored_values(&out), "frame {k}");
    }
    // pydicom reads the same three frames.
    let seen = pydicom_reads(&d("den.dcm"));
    assert_eq!(seen["NumberOfFrames"], 3);
    let px = pixels_seen(&seen);
    assert_eq!(px, den.concat());
    // A multi-frame input cannot become a PNG, nor take --clean.
    cli_refused(
        &[
            "add-noise",
            "--sigma",
            "400HU",
            "--image",
            &p("mf.dcm"),
            "--out",
            &p("x.png"),
        ],
        &["3 frames", "one DICOM"],
    );
    cli_refused(
        &[
            "denoise",
            "--sigma",
            "400HU",
            "--image",
            &p("mf.dcm"),
            "--clean",
            &p("mf.dcm"),
        ],
        &["3 frames", "--clean"],
    );
}

/// Multi-frame JPEG: the decoder reads the fragments as one stream, so each fragment must
/// hold exactly its frame's stream; one with a second stream hidden after its end (which
/// would be decoded, unchecked, as the next frame) is refused (an outside review's case).
#[test]
fn multi_frame_jpeg_is_read_frame_by_frame_and_a_hidden_stream_is_refused() {
    use dicom_pixeldata::Transcode;
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let frames: Vec<Vec<i32>> = (0..3)
        .map(|k| (0..256).map(|i| (i * 3 + k * 60) % 256).collect())
        .collect();
    let mut spec = Spec::new(16, 16, 8, false, frames.concat());
    spec.frames = Some(3);
    let mut obj = open_file(spec.write(&d("native.dcm"))).unwrap();
    obj.transcode(&dicom_transfer_syntax_registry::entries::JPEG_BASELINE.erased())
        .unwrap();
    obj.write_to_file(d("jpeg.dcm")).unwrap();
    let got = ppdenoise::image::load_frames(d("jpeg.dcm")).unwrap();
    let want = ppdenoise::image::load_frames(d("native.dcm")).unwrap();
    assert_eq!(got.len(), 3);
    // Lossy: each frame close to its own source, and closer to it than to the others.
    let err = |a: &GrayImage, b: &GrayImage| (&a.pixels - &b.pixels).mapv(f64::abs).mean().unwrap();
    for (k, g) in got.iter().enumerate() {
        let own = err(g, &want[k]);
        assert!(own < 6.0, "frame {k}: mean error {own}");
        for (j, w) in want.iter().enumerate().filter(|(j, _)| *j != k) {
            assert!(own < err(g, w), "frame {k} is closer to source frame {j}");
        }
    }

    // Fragment 0 carries frame 1's stream again after its own end.
    let pixel = obj.element(tags::PIXEL_DATA).unwrap();
    let mut fragments = pixel.value().fragments().unwrap().to_vec();
    assert_eq!(fragments.len(), 3);
    let hidden = fragments[1].clone();
    fragments[0].extend_from_slice(&hidden);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(Vec::<u32>::new(), fragments),
    ));
    obj.write_to_file(d("hidden.dcm")).unwrap();
    frames_refused(&d("hidden.dcm"), &["exactly one stream"]);
}

/// A folder where an image is expected (issue 28, item 4): add-noise and denoise take a
/// DICOM series whole, in its order, and write the derived series into a new folder under
/// the inputs' names, in one new series; every slice as the command gives it alone.
#[test]
fn add_noise_and_denoise_take_a_series_folder_and_write_one_derived_series() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let p = |n: &str| s(&d(n));
    std::fs::create_dir(d("ct")).unwrap();
    // Slices named without an extension, as archives name them.
    for (k, name) in ["IM0002", "IM0001", "IM0003"].iter().enumerate() {
        let values: Vec<i32> = (0..24 * 24)
            .map(|i| -1200 + (i * 31 + k as i32 * 700) % 2400)
            .collect();
        let mut spec = Spec::new(24, 24, 12, true, values);
        spec.rescale = Some((1.0, -1024.0));
        // Each slice its own instance: a copied slice is refused (issue 44, item 6).
        spec.sop = format!("{INSTANCE}.{k}");
        spec.write(&d(&format!("ct/{name}")));
    }
    let j = ok(&[
        "add-noise",
        "--image",
        &p("ct"),
        "--sigma",
        "240HU",
        "--seed",
        "3",
        "--out",
        &p("noisy"),
    ]);
    let series = j["series_uid"].as_str().unwrap().to_string();
    assert_eq!(j["files"].as_array().unwrap().len(), 3);
    let denoised = ok(&[
        "denoise",
        "--sigma",
        "400HU",
        "--image",
        &p("noisy"),
        "--arith",
        "fixed",
        "--out",
        &p("den"),
    ]);
    let den_series = denoised["series_uid"].as_str().unwrap().to_string();
    assert_ne!(series, den_series);
    // Slices are taken in name order here (their InstanceNumbers are equal): slice i of the
    // order IM0001, IM0002, IM0003 has seed 3 + i.
    for (i, name) in ["IM0001", "IM0002", "IM0003"].iter().enumerate() {
        let noisy = d(&format!("noisy/{name}"));
        assert_eq!(Format::of_file(&noisy), Some(Format::Dicom), "{name}");
        assert_eq!(
            attr(&open_file(&noisy).unwrap(), tags::SERIES_INSTANCE_UID),
            series
        );
        let one = d(&format!("one-{name}.dcm"));
        ok(&[
            "add-noise",
            "--image",
            &p(&format!("ct/{name}")),
            "--sigma",
            "240HU",
            "--seed",
            &(3 + i).to_string(),
            "--out",
            &s(&one),
        ]);
        assert_eq!(stored_values(&noisy), stored_values(&one), "{name}: noise");
        let den = d(&format!("den/{name}"));
        assert_derived_cli(&den, &noisy);
        assert_eq!(
            attr(&open_file(&den).unwrap(), tags::SERIES_INSTANCE_UID),
            den_series
        );
        let alone = d(&format!("den-{name}.dcm"));
        ok(&[
            "denoise",
            "--sigma",
            "400HU",
            "--image",
            &s(&noisy),
            "--arith",
            "fixed",
            "--out",
            &s(&alone),
        ]);
        assert_eq!(
            stored_values(&den),
            stored_values(&alone),
            "{name}: denoised"
        );
    }
    // Into an existing, non-empty folder: refused, nothing replaced.
    cli_refused(
        &[
            "denoise",
            "--sigma",
            "400HU",
            "--image",
            &p("noisy"),
            "--out",
            &p("ct"),
        ],
        &["exists and is not an empty folder"],
    );
    assert_eq!(std::fs::read_dir(d("ct")).unwrap().count(), 3);
}

/// The stored values pydicom itself decodes from `path` (its pixel_array, with the
/// decoders .venv-dicom has), in order.
fn pydicom_pixels(path: &Path) -> Vec<i32> {
    let o = Command::new(root().join(".venv-dicom/bin/python"))
        .args([
            "-c",
            "import json, sys, pydicom\n\
             a = pydicom.dcmread(sys.argv[1]).pixel_array\n\
             print(json.dumps([int(v) for v in a.reshape(-1)]))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// pydicom's JPEG-lossy.dcm (issue 71, item 3): NEMA's NM1_JPLY, a 12-bit JPEG extended
/// stream whose scan header says Se 0, a field sequential JPEG does not use (libjpeg-turbo
/// and GDCM only warn). JPGExtended.dcm is pydicom's fixed copy: the same stream with Se 63.
/// It decodes to the copy's values exactly (the same decoder, the same coefficients), and
/// those are pydicom's own decoding of the copy (pylibjpeg's libjpeg, which refuses the
/// original's header), within 1 of 4095: two IDCTs' rounding.
#[test]
fn a_12_bit_jpeg_with_a_wrong_scan_header_decodes_as_pydicom_decodes_its_fixed_copy() {
    let (lossy, fixed) = (
        testdata("pydicom/JPEG-lossy.dcm"),
        testdata("pydicom/JPGExtended.dcm"),
    );
    // The two streams differ in the scan header's Se byte only.
    let fragment = |p: &Path| {
        let obj = open_file(p).unwrap();
        let f = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .value()
            .fragments()
            .unwrap()
            .to_vec();
        assert_eq!(f.len(), 1);
        f[0].clone()
    };
    let (a, b) = (fragment(&lossy), fragment(&fixed));
    assert_eq!(a.len(), b.len());
    let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    let sos = a.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    // SOS: its length, Ns, one component's selector and tables, Ss, then Se.
    assert_eq!(differ, [sos + 8]);
    assert_eq!((a[sos + 8], b[sos + 8]), (0, 63));
    let (v, rows, cols) = decoded(&lossy);
    assert_eq!((rows, cols), (1024, 256));
    let (w, _, _) = decoded(&fixed);
    assert!(v == w, "the original and its fixed copy decode differently");
    assert_eq!((at(&v, cols, 420, 140), at(&v, cols, 230, 120)), (244, 95));
    let theirs = pydicom_pixels(&fixed);
    assert_eq!(theirs.len(), v.len());
    let worst = v
        .iter()
        .zip(&theirs)
        .map(|(x, y)| (x - y).abs())
        .max()
        .unwrap();
    let differing = v.iter().zip(&theirs).filter(|(x, y)| x != y).count();
    eprintln!("JPEG-lossy.dcm against pydicom: {differing} values differ, by at most {worst}");
    assert!(
        worst <= 1,
        "{differing} values differ from pydicom's, by up to {worst}"
    );
}

/// pydicom's JPEG2000-embedded-sequence-delimiter.dcm (issue 45, item 7): a copy of
/// JPEG2000.dcm with 4 codestream bytes (in its SIZ marker, Rsiz and the top of Xsiz) set to
/// a sequence delimiter's tag. Its fragments are walked by their item lengths, so the bytes
/// after the delimiter's are read as the one fragment pydicom reads too (250 bytes) and its
/// SIZ is read whole: rows 1024 as the header says, and the columns those 4 bytes made. The
/// codestream is damaged (pydicom's README says so; pylibjpeg refuses its header, Pillow
/// its size, and pydicom's own tests list it as one it cannot decode): refused,
/// naming the size it claims. A walk that split the fragment at the delimiter's bytes would
/// find no SIZ at all.
#[test]
fn an_embedded_sequence_delimiter_is_fragment_data_and_its_damage_is_refused() {
    if !common::have_dicom_testdata() {
        return;
    }
    let path = testdata("pydicom/JPEG2000-embedded-sequence-delimiter.dcm");
    let obj = open_file(&path).unwrap();
    let pixel = obj.element(tags::PIXEL_DATA).unwrap();
    let sizes: Vec<usize> = pixel
        .value()
        .fragments()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [250]);
    let f = &pixel.value().fragments().unwrap()[0];
    assert!(f.windows(4).any(|w| w == [0xFE, 0xFF, 0xDD, 0xE0]));
    // The damage is in the codestream, not in how it was cut from the file: it is
    // JPEG2000.dcm's codestream but for those 4 bytes, SIZ's Rsiz and Xsiz's top half (a
    // width of 0xDDE00100). Nothing says what they were; pydicom's decoders refuse it too.
    let original = open_file(testdata("pydicom/JPEG2000.dcm")).unwrap();
    let g = &original
        .element(tags::PIXEL_DATA)
        .unwrap()
        .value()
        .fragments()
        .unwrap()[0];
    assert_eq!(g.len(), f.len());
    let differ: Vec<usize> = (0..f.len()).filter(|&i| f[i] != g[i]).collect();
    assert_eq!(differ, [6, 7, 8, 9]);
    assert_eq!(&g[..4], [0xFF, 0x4F, 0xFF, 0x51], "SOC, then SIZ");
    refused(
        &path,
        &[
            "corrupted DICOM",
            "the JPEG 2000 data is 1024 x 3722445056",
            "the header says 1024 x 256",
        ],
    );
}
