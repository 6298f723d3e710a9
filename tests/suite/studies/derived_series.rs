//! The derived series as an archive expects it (issue 44, item 5): a new Series Number, the
//! run's dates, Contributing Equipment and a Derivation Code Sequence, the private-tag and
//! overlay policies, and lossless compressed output (JPEG-LS, JPEG 2000) that an independent
//! reader, pydicom, decodes to the very stored values of the uncompressed output, negative
//! values of a signed 12-bit source included. The secure path writes through the same
//! encoder (tests/suite/studies/medical.rs reconstructs an MR study compressed).

use crate::common;

use std::path::Path;

use common::{ok, pydicom_reads, run};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A signed 12-bit MR-like slice, 48 x 40, its values spanning -2048..2047 (a ramp with a
/// block of noise), with a private group, an overlay with its own data (group 6000) and
/// one kept in the pixel data's high bits (group 6002, retired).
fn signed_source(path: &Path) {
    let (rows, cols) = (48u16, 40u16);
    let values: Vec<u16> = (0..usize::from(rows) * usize::from(cols))
        .map(|i| {
            let v = (i as i32 * 97 % 4096) - 2048;
            (v as i16) as u16
        })
        .collect();
    let st = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let obj = InMemDicomObject::from_element_iter([
        st(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
        st(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.9.1",
        ),
        st(tags::MODALITY, VR::CS, "MR"),
        st(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
        st(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.9",
        ),
        st(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.9.2",
        ),
        st(tags::SERIES_NUMBER, VR::IS, "5"),
        st(tags::SERIES_DESCRIPTION, VR::LO, "T1 axial"),
        st(tags::SERIES_DATE, VR::DA, "20240229"),
        st(tags::CONTENT_DATE, VR::DA, "20240229"),
        st(Tag(0x0029, 0x0010), VR::LO, "ACME 1.0"),
        st(Tag(0x0029, 0x1001), VR::LO, "vendor secret"),
        us(tags::SAMPLES_PER_PIXEL, 1),
        st(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 12),
        us(tags::HIGH_BIT, 11),
        us(tags::PIXEL_REPRESENTATION, 1),
        us(Tag(0x6000, 0x0010), rows),
        us(Tag(0x6000, 0x0011), cols),
        us(Tag(0x6000, 0x0100), 1),
        us(Tag(0x6000, 0x0102), 0),
        st(Tag(0x6000, 0x0040), VR::CS, "G"),
        DataElement::new(
            Tag(0x6000, 0x3000),
            VR::OW,
            PrimitiveValue::U16(vec![0u16; usize::from(rows) * usize::from(cols) / 16].into()),
        ),
        us(Tag(0x6002, 0x0010), rows),
        us(Tag(0x6002, 0x0102), 12),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(values.into())),
    ]);
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .media_storage_sop_class_uid(uids::MR_IMAGE_STORAGE)
            .media_storage_sop_instance_uid("1.2.826.0.1.3680043.8.498.9.1"),
    )
    .unwrap()
    .write_to_file(path)
    .unwrap();
}

/// `denoise` of `src` (in the clear: the encoder is the receiver's) written to `out` with
/// the derived-series options `extra`.
fn denoise(src: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "denoise",
        "--image",
        src.to_str().unwrap(),
        "--sigma",
        "40SV",
        "--window",
        "full",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

#[test]
fn compressed_outputs_decode_to_the_stored_values_of_the_uncompressed_one() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("src.dcm");
    signed_source(&src);
    let plain = d.join("plain.dcm");
    denoise(&src, &plain, &[]);
    let want = pydicom_reads(&plain);
    let pixels = want["pixels"].as_array().unwrap().clone();
    assert!(
        pixels.iter().any(|v| v.as_i64().unwrap() < -100),
        "the test needs negative stored values in the output"
    );
    let ours = ppdenoise::image::load(&plain).unwrap();
    for (name, uid) in [
        ("jpeg-ls-lossless", uids::JPEGLS_LOSSLESS),
        ("j2k-lossless", uids::JPEG2000_LOSSLESS),
    ] {
        let out = d.join(format!("{name}.dcm"));
        denoise(&src, &out, &["--transfer-syntax", name]);
        let seen = pydicom_reads(&out);
        assert_eq!(seen["TransferSyntaxUID"], uid, "{name}");
        let got = seen["pixels"].as_array().unwrap();
        let wrong = got.iter().zip(&pixels).filter(|(a, b)| a != b).count();
        assert!(
            got.len() == pixels.len() && wrong == 0,
            "{name}: pydicom reads {wrong} of {} stored values otherwise",
            pixels.len()
        );
        assert_eq!(
            ppdenoise::image::load(&out).unwrap(),
            ours,
            "{name}: ppdenoise's own reading"
        );
        let (a, b) = (
            std::fs::metadata(&out).unwrap().len(),
            std::fs::metadata(&plain).unwrap().len(),
        );
        assert!(a < b, "{name}: {a} bytes, uncompressed {b}");
    }
    let bad = run(&[
        "denoise",
        "--image",
        &s(&src),
        "--sigma",
        "40SV",
        "--out",
        &s(&d.join("x.dcm")),
        "--transfer-syntax",
        "jpeg-lossy",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("jpeg-ls-lossless") && err.contains("jpeg-lossy"),
        "{err}"
    );
}

/// Issue 71, item 13: two runs of the same source file two derived series a viewer tells
/// apart: neither the Series Number nor the Series Description of one is the other's (or
/// the source's); the description still says what was done, and ends with the run's tag.
#[test]
fn a_second_run_of_one_source_gets_another_number_and_description() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("src.dcm");
    signed_source(&src);
    let (one, two) = (d.join("one.dcm"), d.join("two.dcm"));
    denoise(&src, &one, &[]);
    denoise(&src, &two, &[]);
    let (a, b) = (pydicom_reads(&one), pydicom_reads(&two));
    assert_ne!(a["SeriesInstanceUID"], b["SeriesInstanceUID"]);
    for k in ["SeriesNumber", "SeriesDescription"] {
        assert_ne!(a[k], b[k], "{k}: both runs' series have the same");
    }
    for seen in [&a, &b] {
        assert_ne!(seen["SeriesNumber"], "5");
        let desc = seen["SeriesDescription"].as_str().unwrap();
        assert!(
            desc.starts_with("T1 ax")
                && desc.contains(" (denoised")
                && desc.contains(") #")
                && desc.len() <= 64,
            "{desc}"
        );
    }
}

#[test]
fn a_derived_instance_says_what_made_it_and_when() {
    if !common::have_dicom_testdata() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("src.dcm");
    signed_source(&src);
    let today = chrono::Local::now().format("%Y%m%d").to_string();

    let out = d.join("default.dcm");
    denoise(&src, &out, &[]);
    let seen = pydicom_reads(&out);
    let number: i64 = seen["SeriesNumber"].as_str().unwrap().parse().unwrap();
    assert!(
        (1005..2005).contains(&number),
        "the source's number plus 1000 plus the run's offset: {number}"
    );
    // The source's description first, shortened to leave room for what was done and the
    // run's tag (64 characters in all).
    let desc = seen["SeriesDescription"].as_str().unwrap();
    let old = desc.split(" (").next().unwrap();
    assert!(
        old.len() >= 4 && "T1 axial".starts_with(old) && desc.len() <= 64,
        "{desc}"
    );
    for k in ["SeriesDate", "ContentDate", "InstanceCreationDate"] {
        // The run's date (a run across midnight would see yesterday's: allowed).
        let got = seen[k].as_str().unwrap();
        assert!(
            got == today || got.as_bytes() < today.as_bytes() && got > "2026",
            "{k} {got}"
        );
    }
    assert_eq!(seen["ImageType"][0], "DERIVED");
    let eq = &seen["Equipment"][0];
    assert_eq!(eq[0], "ppdenoise");
    assert_eq!(eq[1], env!("CARGO_PKG_VERSION"));
    assert_eq!(eq[2][0], "109102");
    assert_eq!(seen["DerivationCodes"][0][0], "113087");
    assert_eq!(seen["DerivationCodes"][0][1], "DCM");
    assert_eq!(
        seen["PrivateTags"], 0,
        "private attributes are dropped by default"
    );
    assert_eq!(
        seen["OverlayGroups"],
        serde_json::json!([0x6000]),
        "the overlay with its own data is kept, the one in the pixels' bits dropped"
    );

    let out = d.join("chosen.dcm");
    denoise(
        &src,
        &out,
        &[
            "--series-number",
            "77",
            "--series-description",
            "T1 denoised",
            "--private-tags",
            "keep",
            "--overlays",
            "drop",
        ],
    );
    let seen = pydicom_reads(&out);
    assert_eq!(seen["SeriesNumber"], "77");
    assert_eq!(seen["SeriesDescription"], "T1 denoised");
    assert_eq!(seen["PrivateTags"], 2);
    assert_eq!(seen["OverlayGroups"], serde_json::json!([]));

    for (flag, value, needle) in [
        ("--series-description", "a\\b", "backslash"),
        ("--series-description", &"x".repeat(65), "64 characters"),
        ("--private-tags", "maybe", "keep or drop"),
    ] {
        let o = run(&[
            "denoise",
            "--image",
            &s(&src),
            "--sigma",
            "40SV",
            "--out",
            &s(&d.join("refused.dcm")),
            flag,
            value,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{flag} {value}: {err}"
        );
        assert!(!d.join("refused.dcm").exists());
    }
}
