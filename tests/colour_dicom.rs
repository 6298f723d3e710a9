//! Colour DICOM (issue 48, item 1): every colour form read is checked against pydicom's
//! decoding of the same file (`make dicom-testdata` writes pydicom's pixels beside its
//! colour test files and the forms made there); the refusals are named; a colour job goes
//! through the binary's secure pipeline (both engines) from a YBR_FULL_422 JPEG and an RGB
//! DICOM and comes back as a derived RGB DICOM, bit-exact with the oracle.

use std::path::PathBuf;

use ppdenoise::image::dicom::decode_colour;
use ppdenoise::image::{load_picture, ColourImage, Picture};

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
        Some(rest) => {
            let lib = root().join(".venv-dicom/lib");
            let python = std::fs::read_dir(&lib)
                .unwrap()
                .filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .expect("a python3 folder in .venv-dicom/lib")
                .path();
            python
                .join("site-packages/pydicom/data/test_files")
                .join(rest)
        }
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
