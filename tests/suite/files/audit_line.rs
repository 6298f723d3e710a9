//! The audit line through the binary (`--audit FILE`), for two of its claims that unit tests
//! held alone: a folder's hash follows no symbolic link (a link to `.` would have it read the
//! folder again and again, a link out of it files that are not the input's), and a summary's
//! list that names files (share-study's `skipped`, a line per object left out) goes into the
//! line as its length, never its text.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{dicom_slice, ok};

use crate::common;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The audit file's lines.
fn lines(f: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(f)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The blake3 the last line of `audit` gives the input of role `role`, if any.
fn input_hash(audit: &Path, role: &str) -> Option<String> {
    let l = lines(audit).pop()?;
    l["inputs"]
        .as_array()?
        .iter()
        .find(|i| i["role"] == role)
        .and_then(|i| i["blake3"].as_str().map(str::to_string))
}

/// A folder holding a link to itself (`.`) and a link out of it: its hash in the line is
/// that of its own files (a file of it changed changes it; the file the outward link reaches
/// changed does not), made in well under the time a walk through the loop would take.
#[test]
fn a_folders_hash_follows_no_link() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    let outside = d.path().join("outside");
    std::fs::create_dir(&input).unwrap();
    std::fs::create_dir(&outside).unwrap();
    for k in 0..20 {
        std::fs::write(input.join(format!("f{k}")), vec![k as u8; 1 << 20]).unwrap();
    }
    std::fs::write(outside.join("other"), b"not the input's").unwrap();
    std::os::unix::fs::symlink(".", input.join("loop")).unwrap();
    std::os::unix::fs::symlink(&outside, input.join("out")).unwrap();
    // A link to a file is read by the input walk as one of the input's: its content counts.
    std::fs::write(outside.join("linked"), b"a slice").unwrap();
    std::os::unix::fs::symlink(outside.join("linked"), input.join("lnk")).unwrap();
    let audit = d.path().join("audit.jsonl");
    let run = || {
        let t = Instant::now();
        // The command fails (no model): its line is written all the same, inputs hashed.
        let o = Command::new(common::bin())
            .args(["--audit", &s(&audit), "share-study", "--in", &s(&input)])
            .args(["--out", &s(&d.path().join("study")), "--sigma", "20HU"])
            .args(["--model", &s(&d.path().join("no-model.pub"))])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let took = t.elapsed();
        assert!(took < Duration::from_secs(20), "{took:?}");
        input_hash(&audit, "in")
            .unwrap_or_else(|| panic!("no hash of --in in the line: {:?}", lines(&audit).pop()))
    };
    let h1 = run();
    assert!(h1.starts_with("tree:"), "{h1}");
    std::fs::write(outside.join("other"), b"changed").unwrap();
    assert_eq!(run(), h1, "the hash read a file outside the folder");
    std::fs::write(outside.join("linked"), b"another slice").unwrap();
    let h2 = run();
    assert_ne!(h2, h1, "the hash does not cover a linked file's content");
    std::fs::write(input.join("f0"), b"changed").unwrap();
    assert_ne!(run(), h2, "the hash does not cover the folder's files");
}

/// A structured report (no pixel module) of the series, named like a patient, at `path`.
fn report(path: &Path, series: &str) {
    use dicom_core::value::PrimitiveValue;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let e = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    InMemDicomObject::from_element_iter([
        e(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.11"),
        e(tags::SOP_INSTANCE_UID, VR::UI, &format!("{series}.99")),
        e(tags::MODALITY, VR::CS, "SR"),
        e(tags::SERIES_INSTANCE_UID, VR::UI, series),
    ])
    .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
    .unwrap()
    .write_to_file(path)
    .unwrap();
}

/// share-study of a folder holding a report beside its two slices, the report's file named
/// for a patient: the summary's `skipped` names the file, the audit line says only how many
/// were skipped.
#[test]
fn a_list_naming_files_goes_into_the_line_as_its_length() {
    let d = tempfile::tempdir().unwrap();
    let series = "1.2.826.0.1.3680043.8.498.72";
    let input = d.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for k in 1..=2 {
        dicom_slice(
            &input.join(format!("s{k}.dcm")),
            series,
            k,
            k as f64,
            16,
            k as u64,
        );
    }
    report(&input.join("DOE^JANE-report.dcm"), series);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    ok(&[
        "share-model",
        "--model",
        &s(&root.join("fixtures/default-model.npz")),
        "--out",
        &s(&d.path().join("model")),
    ]);
    let audit = d.path().join("audit.jsonl");
    let j = ok(&[
        "--audit",
        &s(&audit),
        "share-study",
        "--in",
        &s(&input),
        "--out",
        &s(&d.path().join("study")),
        "--sigma",
        "40HU",
        "--model",
        &s(&d.path().join("model.pub")),
        "--quiet",
    ]);
    assert!(j["skipped"].to_string().contains("DOE^JANE"), "{j}");
    let l = lines(&audit).pop().unwrap();
    assert_eq!(
        (l["command"].as_str(), l["result"].as_str()),
        (Some("share-study"), Some("ok"))
    );
    assert_eq!(l["skipped"], 1, "{l}");
    let text = l.to_string();
    assert!(
        !text.contains("DOE") && !text.contains(&s(d.path())),
        "{text}"
    );
}
