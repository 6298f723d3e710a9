//! Crafted encapsulated files: the stream decoded is the stream checked (issue 45, item 2),
//! and a stream cut short is refused on every codec (item 3).

use std::path::Path;

use charls::{CharLS, FrameInfo};
use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::compress::{self, Samples};
use super::decode;
use crate::image::jpeg12;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Baseline,
    Lossless,
    JpegLs,
    J2k,
}

impl Kind {
    fn uid(self) -> &'static str {
        match self {
            Kind::Baseline => uids::JPEG_BASELINE8_BIT,
            Kind::Lossless => uids::JPEG_LOSSLESS_SV1,
            Kind::JpegLs => uids::JPEGLS_LOSSLESS,
            Kind::J2k => uids::JPEG2000_LOSSLESS,
        }
    }
}

/// 8-bit stored values with some texture (so the coded data is not tiny).
fn values(rows: usize, cols: usize, seed: usize) -> Vec<i32> {
    (0..rows * cols)
        .map(|i| ((i * 7 + (i / cols) * 13 + seed * 91 + (i * i) % 17) % 256) as i32)
        .collect()
}

/// One `rows x cols` 8-bit stream of `kind`, of even length.
fn stream(kind: Kind, rows: usize, cols: usize, seed: usize) -> Vec<u8> {
    let v = values(rows, cols, seed);
    let bytes: Vec<u8> = v.iter().map(|&x| x as u8).collect();
    let mut s = match kind {
        Kind::Baseline => jpeg12::encode8(&bytes, rows, cols, None, 90),
        Kind::Lossless => jpeg12::encode8(&bytes, rows, cols, Some(()), 100),
        Kind::JpegLs => CharLS::default()
            .encode(
                FrameInfo {
                    width: cols as u32,
                    height: rows as u32,
                    bits_per_sample: 8,
                    component_count: 1,
                },
                0,
                &bytes,
            )
            .unwrap(),
        Kind::J2k => compress::j2k_lossless(
            &v,
            &Samples {
                rows,
                cols,
                frames: 1,
                bits_allocated: 8,
                bits_stored: 8,
                signed: false,
                stored: &v,
            },
        )
        .unwrap(),
    };
    if s.len() % 2 == 1 {
        s.push(0);
    }
    s
}

/// A single-frame 8-bit `rows x cols` file of `kind` with these fragments and offset table.
fn file(kind: Kind, rows: usize, cols: usize, table: Vec<u32>, fragments: Vec<Vec<u8>>) -> Vec<u8> {
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let st = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let mut obj = InMemDicomObject::from_element_iter([
        st(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7"),
        st(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.9",
        ),
        us(tags::SAMPLES_PER_PIXEL, 1),
        st(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows as u16),
        us(tags::COLUMNS, cols as u16),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PixelFragmentSequence::new(table, fragments),
    ));
    let f = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(kind.uid()))
        .unwrap();
    let mut b = Vec::new();
    f.write_all(&mut b).unwrap();
    b
}

fn refused(bytes: &[u8], needles: &[&str]) {
    let e = decode(bytes, Path::new("crafted.dcm"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("crafted.dcm"), "{e}");
    for n in needles {
        assert!(e.contains(n), "{e:?} does not mention {n:?}");
    }
}

/// An offset table pointing at a second fragment made the JPEG-LS and JPEG 2000 decoders read
/// a stream the checks never saw (the same size: decoded silently; larger, up to past the
/// pixel cap: cropped with a warning; smaller: zero-filled). Now refused, and without the
/// table the frame's bytes are its fragments in order: the first stream, checked, decoded.
#[test]
fn an_offset_table_pointing_at_a_second_stream_is_refused() {
    for kind in [Kind::JpegLs, Kind::J2k, Kind::Baseline, Kind::Lossless] {
        let a = stream(kind, 64, 64, 0);
        for (r, c) in [(64, 64), (128, 128), (32, 32)] {
            let b = stream(kind, r, c, 1);
            let table = vec![a.len() as u32 + 8];
            refused(
                &file(kind, 64, 64, table, vec![a.clone(), b]),
                &["Basic Offset Table", "single frame"],
            );
        }
        // A table of two frames for a single-frame image.
        let b = stream(kind, 64, 64, 1);
        refused(
            &file(
                kind,
                64,
                64,
                vec![0, a.len() as u32 + 8],
                vec![a.clone(), b.clone()],
            ),
            &["Basic Offset Table"],
        );
        let alone = decode(
            &file(kind, 64, 64, vec![0], vec![a.clone()]),
            Path::new("a.dcm"),
        )
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        if !matches!(kind, Kind::Baseline) {
            let want: Vec<f64> = values(64, 64, 0).iter().map(|&v| f64::from(v)).collect();
            assert_eq!(
                alone.pixels.iter().copied().collect::<Vec<_>>(),
                want,
                "{kind:?}"
            );
        }
        // A stream split over two fragments, no table: read whole.
        let mid = (a.len() / 2) & !1;
        let split = decode(
            &file(
                kind,
                64,
                64,
                vec![],
                vec![a[..mid].to_vec(), a[mid..].to_vec()],
            ),
            Path::new("split.dcm"),
        )
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(split, alone, "{kind:?}");
    }
}

/// Where the entropy-coded data of a JPEG's first scan starts.
fn scan_start(j: &[u8]) -> usize {
    let sos = j.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    sos + 2 + usize::from(u16::from_be_bytes([j[sos + 2], j[sos + 3]]))
}

/// A JPEG (DCT, lossless) or JPEG-LS stream cut to 30% of its coded data and closed with EOI,
/// as an outside review did (the 8-bit DCT one decoded silently, its lower part grey); and
/// ([`a_jpeg_2000_stream_cut_short_is_refused`]) a JPEG 2000 codestream whose last tile-part
/// (Psot = 0: up to EOC) is cut, with and without an EOC after the cut (openjp2's default
/// mode zero-fills what is missing).
#[test]
fn a_stream_cut_short_is_refused_on_every_codec() {
    for (kind, what) in [
        (Kind::Baseline, "JPEG pixel data"),
        (Kind::Lossless, "JPEG pixel data"),
        (Kind::JpegLs, "JPEG-LS pixel data"),
    ] {
        let a = stream(kind, 64, 64, 0);
        let start = scan_start(&a);
        let mut cut = a[..start + (a.len() - 2 - start) * 3 / 10].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        if cut.len() % 2 == 1 {
            cut.push(0);
        }
        refused(&file(kind, 64, 64, vec![], vec![cut]), &[what]);
    }
}

/// The JPEG 2000 half of [`a_stream_cut_short_is_refused_on_every_codec`]: without its EOC,
/// the tile-part walk refuses it; with one, openjp2's strict mode.
#[test]
fn a_jpeg_2000_stream_cut_short_is_refused() {
    let a = stream(Kind::J2k, 64, 64, 0);
    let sot = a.windows(2).position(|w| w == [0xFF, 0x90]).unwrap();
    let mut zero = a.clone();
    zero[sot + 6..sot + 10].copy_from_slice(&[0; 4]); // Psot = 0: the tile-part runs to EOC
                                                      // Psot = 0 itself is read.
    let whole = decode(
        &file(Kind::J2k, 64, 64, vec![], vec![zero.clone()]),
        Path::new("z.dcm"),
    );
    assert!(whole.is_ok(), "{whole:?}");
    let keep = sot + 14 + (a.len() - sot - 16) * 3 / 10;
    let mut no_eoc = zero[..keep].to_vec();
    if no_eoc.len() % 2 == 1 {
        no_eoc.pop();
    }
    refused(
        &file(Kind::J2k, 64, 64, vec![], vec![no_eoc.clone()]),
        &["JPEG 2000 data cut short"],
    );
    let mut with_eoc = no_eoc;
    with_eoc.extend_from_slice(&[0xFF, 0xD9]);
    refused(
        &file(Kind::J2k, 64, 64, vec![], vec![with_eoc]),
        &["JPEG 2000 pixel data"],
    );
}

/// A `rows x cols` YBR_FULL_422 object: a JPEG baseline stream (`jpeg`) encapsulated, or
/// native 4:2:2 samples (Y1 Y2 Cb Cr per pair) of a flat grey.
fn ybr422_file(rows: usize, cols: usize, jpeg: Option<Vec<u8>>) -> Vec<u8> {
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let st = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let mut obj = InMemDicomObject::from_element_iter([
        st(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.6.1"),
        st(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.10",
        ),
        us(tags::SAMPLES_PER_PIXEL, 3),
        st(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "YBR_FULL_422"),
        us(tags::PLANAR_CONFIGURATION, 0),
        us(tags::ROWS, rows as u16),
        us(tags::COLUMNS, cols as u16),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]);
    let ts = match jpeg {
        Some(mut j) => {
            if j.len() % 2 == 1 {
                j.push(0);
            }
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(vec![], vec![j]),
            ));
            uids::JPEG_BASELINE8_BIT
        }
        None => {
            let mut b = vec![128u8; rows * cols * 2];
            if b.len() % 2 == 1 {
                b.push(0);
            }
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::U8(b.into()),
            ));
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        }
    };
    let f = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
        .unwrap();
    let mut b = Vec::new();
    f.write_all(&mut b).unwrap();
    b
}

/// A YBR_FULL_422 JPEG of an odd width (what an ultrasound may write: the JPEG's own
/// sampling factors pad its chroma) reads as libjpeg-turbo decodes it; native 4:2:2 of an odd
/// width, which cannot pair its last pixel, is refused by name.
#[test]
fn an_odd_width_ybr_full_422_jpeg_is_read_and_native_is_refused() {
    let (rows, cols) = (8, 15);
    let rgb: Vec<u8> = (0..rows * cols * 3)
        .map(|i| ((i * 37 + (i / (3 * cols)) * 11) % 256) as u8)
        .collect();
    let jpeg = jpeg12::encode_rgb422(&rgb, rows, cols, 90);
    let want = jpeg12::decode(&jpeg, rows, cols, 3).unwrap();
    let path = Path::new("odd.dcm");
    let got = super::decode_colour(&ybr422_file(rows, cols, Some(jpeg)), path, false).unwrap();
    assert_eq!((got[0].height(), got[0].width()), (rows, cols));
    for (i, &v) in want.iter().enumerate() {
        let (p, c) = (i / 3, i % 3);
        assert_eq!(
            got[0].planes[[c * rows + p / cols, p % cols]],
            f64::from(v),
            "pixel {p} component {c}"
        );
    }
    let e = super::decode_colour(&ybr422_file(rows, cols, None), path, false)
        .map(|_| ())
        .expect_err("native odd 4:2:2")
        .to_string();
    assert!(
        e.contains("odd.dcm") && e.contains("native YBR_FULL_422 of an odd number of columns (15)"),
        "{e}"
    );
}

/// A native RGB object of `bits` stored in 16 allocated, 2 x 3 pixels, its samples
/// `0, 1, ..., 17` scaled so the last is the stored maximum.
fn rgb16_file(bits: u16) -> Vec<u8> {
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let st = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let top = (1u32 << bits) - 1;
    let samples: Vec<u16> = (0..18u32).map(|i| (i * top / 17) as u16).collect();
    let mut obj = InMemDicomObject::from_element_iter([
        st(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7"),
        st(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.11",
        ),
        us(tags::SAMPLES_PER_PIXEL, 3),
        st(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::PLANAR_CONFIGURATION, 0),
        us(tags::ROWS, 2),
        us(tags::COLUMNS, 3),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, bits),
        us(tags::HIGH_BIT, bits - 1),
        us(tags::PIXEL_REPRESENTATION, 0),
    ]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(samples.into()),
    ));
    let f = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    let mut b = Vec::new();
    f.write_all(&mut b).unwrap();
    b
}

/// A 12-bit colour DICOM's planes span 0..255 for its 0..4095, and a level in stored
/// values (`--sigma 40.95SV`) is read against 4095, not against the 16-bit depth it is
/// written back at; a 16-bit one against 65535.
#[test]
fn a_twelve_bit_colour_level_in_stored_values_is_read_against_its_range() {
    use crate::image::window::Sigma;
    let path = Path::new("rgb12.dcm");
    for (bits, sv, want) in [(12u16, 40.95, 2.55), (16, 257.0, 1.0)] {
        let got = super::decode_colour(&rgb16_file(bits), path, false).unwrap();
        let img = &got[0];
        assert_eq!(img.bit_depth, 16);
        assert_eq!(img.stored_max, (bits == 12).then_some(4095));
        assert_eq!(
            img.planes[[2 * 2 + 1, 2]],
            255.0,
            "{bits}: the last sample, B"
        );
        let level = img
            .value_scale()
            .level_of(Sigma::Stored(sv), &img.planes)
            .unwrap();
        assert!((level - want).abs() < 1e-9, "{bits} bits: {level}");
    }
}
