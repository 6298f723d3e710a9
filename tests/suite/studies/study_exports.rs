//! Studies from exports as hospitals make them (issue 44, item 6): a folder of series
//! sub-folders and a DICOMDIR (written by pydicom's FileSet), with a structured report among
//! the images. `inspect --series` lists the series; `share-study --series` picks one by UID
//! or number (refused, listing them, when several and none is chosen); non-image objects are
//! skipped with a line each; two files of one SOP Instance UID are refused by name. A series
//! picked from a DICOMDIR goes through both servers and comes back as a derived series under
//! its files' names, equal to the plaintext oracle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{bin, dicom_slice, ok, share_study, start_pair, wait_limit};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, FileMetaTableBuilder, InMemDicomObject};

use crate::common;

const CT: &str = "1.2.826.0.1.3680043.8.498.44.1";
const MR: &str = "1.2.826.0.1.3680043.8.498.44.2";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root().join("fixtures").join(name).display().to_string()
}

fn refused(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected a refusal naming {needles:?}");
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}: {err}");
    }
    err
}

/// A slice of `series` (number `number`), as `dicom_slice` makes it, with a Series Number.
fn slice(path: &Path, series: &str, number: i32, instance: i32, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    dicom_slice(path, series, instance, instance as f64, 16, seed);
    let mut obj = open_file(path).unwrap();
    obj.put(DataElement::new(
        tags::SERIES_NUMBER,
        VR::IS,
        PrimitiveValue::from(number.to_string()),
    ));
    obj.write_to_file(path).unwrap();
}

/// A basic text structured report: a DICOM object with no pixel data.
fn report(path: &Path) {
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let obj = InMemDicomObject::from_element_iter([
        s(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.11"),
        s(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.44.9.1",
        ),
        s(tags::MODALITY, VR::CS, "SR"),
        s(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.44.9",
        ),
        s(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.7",
        ),
    ]);
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

struct Dir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let d = Dir { _tmp: tmp, dir };
        ok(&[
            "share-model",
            "--model",
            &fixture("tiny-mlp.npz"),
            "--out",
            &d.p("model"),
        ]);
        d
    }

    fn p(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn share(&self, input: &str, out: &str, extra: &[&str]) -> Output {
        share_study(&self.dir, "321.176HU", input, out, extra)
    }

    /// `serve --study` of party `p`; `addr`: its `--addr` (and S0's `--port-file`), from
    /// [`start_pair`].
    fn serve(&self, p: u8, addr: &[String]) -> Child {
        let (me, peer) = (format!("s{p}"), format!("s{}", 1 - p));
        Command::new(bin())
            .args(["--json", "serve", "--quiet", "--party", &p.to_string()])
            .arg("--insecure-unsigned")
            .args(["--model", &self.p(&format!("model.p{p}"))])
            .args(["--study", &self.p("study")])
            .args(["--key", &self.p(&format!("keys/{me}.key"))])
            .args(["--cert", &self.p(&format!("keys/{me}.crt"))])
            .args(["--peer-cert", &self.p(&format!("keys/{peer}.crt"))])
            .args(addr)
            .args(["--state-dir", &self.p(&format!("state{p}"))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve")
    }
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_string())
        .collect()
}

fn sources(d: &Dir, study: &str) -> serde_json::Value {
    let p = d.path(&format!("{study}.sources.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn a_folder_of_series_sub_folders_is_listed_and_one_series_picked() {
    let d = Dir::new();
    // study/ct: three CT slices (names against their order); study/mr: two; study/sr: a report.
    for (name, instance) in [("c", 1), ("a", 2), ("b", 3)] {
        slice(
            &d.path(&format!("exp/ct/{name}")),
            CT,
            3,
            instance,
            instance as u64,
        );
    }
    for instance in [1, 2] {
        slice(
            &d.path(&format!("exp/mr/im{instance}")),
            MR,
            7,
            instance,
            10,
        );
    }
    std::fs::create_dir_all(d.path("exp/sr")).unwrap();
    report(&d.path("exp/sr/report"));

    let j = ok(&["inspect", "--series", &d.p("exp")]);
    let series = j["series"].as_array().unwrap();
    let got: Vec<(String, u64, u64, String)> = series
        .iter()
        .map(|s| {
            (
                s["uid"].as_str().unwrap().to_string(),
                s["number"].as_u64().unwrap(),
                s["slices"].as_u64().unwrap(),
                s["modality"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (CT.to_string(), 3, 3, "CT".to_string()),
            (MR.to_string(), 7, 2, "CT".to_string())
        ]
    );
    assert_eq!(series[0]["description"], "Abdomen");
    let skipped = j["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].as_str().unwrap().contains("sr/report")
            && skipped[0].as_str().unwrap().contains("structured report"),
        "{skipped:?}"
    );

    // Several series and none chosen: refused, listing both; nothing made.
    let e = refused(
        &d.share("exp", "s1", &[]),
        &[
            "2 different series",
            "--series",
            CT,
            MR,
            "number 3",
            "number 7",
        ],
    );
    assert!(e.contains("3 slice(s)") && e.contains("2 slice(s)"), "{e}");
    assert!(!d.path("s1").exists());
    // An unknown one: refused, listing them.
    refused(
        &d.share("exp", "s2", &["--series", "5"]),
        &["--series 5", "no series", CT],
    );
    // By number: the MR (the report is skipped with its line).
    let o = d.share("exp", "s3", &["--series", "7"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("skipped ") && l.contains("sr/report")),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (j["kind"].as_str(), j["slices"].as_u64()),
        (Some("dicom-series"), Some(2))
    );
    assert_eq!(j["skipped"].as_array().unwrap().len(), 1);
    // By UID: the CT, in its instances' order, read from its own folder.
    let j = ok(&[
        "share-study",
        "--sigma",
        "321.176HU",
        "--in",
        &d.p("exp"),
        "--out",
        &d.p("s4"),
        "--model",
        &d.p("model.pub"),
        "--series",
        CT,
    ]);
    assert_eq!(j["slices"], 3);
    let s = sources(&d, "s4");
    assert_eq!(names(&s["slices"]), ["c", "a", "b"]);
    assert_eq!(
        PathBuf::from(s["input_dir"].as_str().unwrap()),
        d.path("exp/ct").canonicalize().unwrap()
    );

    // A copy of a slice (one SOP Instance UID twice) is refused, naming both files.
    std::fs::copy(d.path("exp/ct/a"), d.path("exp/ct/a-copy")).unwrap();
    refused(
        &d.share("exp", "s5", &["--series", "3"]),
        &[
            "exp/ct/a ",
            "exp/ct/a-copy",
            "one SOP Instance UID",
            &format!("{CT}.2"),
        ],
    );
    std::fs::remove_file(d.path("exp/ct/a-copy")).unwrap();
    // One series in two folders: refused by name (its slices are read from one).
    slice(&d.path("exp/ct2/d"), CT, 3, 4, 4);
    refused(
        &d.share("exp", "s6", &["--series", CT]),
        &["exp/ct2/d", "one series in two folders"],
    );
    for s in ["s1", "s2", "s5", "s6"] {
        assert!(!d.path(s).exists(), "{s} was made");
    }
    // Only a report: nothing to share, said so.
    std::fs::create_dir_all(d.path("only-sr")).unwrap();
    report(&d.path("only-sr/report"));
    refused(
        &d.share("only-sr", "s7", &[]),
        &["only-sr", "no image", "not an image"],
    );
}

/// pydicom's FileSet writes a DICOMDIR and its PT*/ST*/SE*/IM* tree from the slices and a
/// report; `share-study --in DICOMDIR --series` takes one series from it, the servers run
/// it, and `reconstruct --study` writes the derived series, each slice the oracle's.
#[test]
fn a_dicomdir_made_by_pydicom_is_read_and_its_series_comes_back_derived() {
    if !common::have_dicom_testdata() {
        return;
    }
    let d = Dir::new();
    for (name, instance) in [("b", 1), ("a", 2)] {
        slice(
            &d.path(&format!("src/{name}")),
            CT,
            3,
            instance,
            instance as u64,
        );
    }
    slice(&d.path("src/m1"), MR, 7, 1, 10);
    let script = r#"
import sys
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian
out, files = sys.argv[1], sys.argv[2:]
fs = FileSet()
for f in files:
    ds = pydicom.dcmread(f)
    for k, v in [("PatientID", "P1"), ("StudyDate", "20260101"), ("StudyTime", "120000"), ("StudyID", "1")]:
        if k not in ds:
            setattr(ds, k, v)
    fs.add(ds)
sr = Dataset()
sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
sr.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.44.9.1"
sr.PatientName = "Doe^Jane"
sr.PatientID = "P1"
sr.StudyInstanceUID = ds.StudyInstanceUID
sr.StudyDate, sr.StudyTime, sr.StudyID = "20260101", "120000", "1"
sr.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.44.9"
sr.SeriesNumber, sr.Modality, sr.InstanceNumber = 99, "SR", 1
sr.ContentDate, sr.ContentTime = "20260101", "120000"
sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "UNVERIFIED"
code = Dataset()
code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121060", "DCM", "History"
sr.ConceptNameCodeSequence = [code]
sr.file_meta = FileMetaDataset()
sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
fs.add(sr)
fs.write(out)
"#;
    let o = Command::new(root().join(".venv-dicom/bin/python"))
        .args(["-c", script, &d.p("cd")])
        .args(["b", "a", "m1"].map(|n| d.p(&format!("src/{n}"))))
        .output()
        .expect("run .venv-dicom/bin/python (make dicom-testdata)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dicomdir = d.p("cd/DICOMDIR");

    let j = ok(&["inspect", "--series", &dicomdir]);
    let got: Vec<(&str, u64)> = j["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["uid"].as_str().unwrap(), s["slices"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [(CT, 2), (MR, 1)]);
    assert_eq!(j["skipped"].as_array().unwrap().len(), 1, "the report");
    refused(
        &d.share("cd/DICOMDIR", "s1", &[]),
        &["2 different series", CT, MR],
    );

    // A record that leaves the file set's folder is refused by name.
    let mut bad = open_file(&dicomdir).unwrap();
    let mut records = bad
        .element(tags::DIRECTORY_RECORD_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .to_vec();
    let k = records
        .iter()
        .position(|r| {
            r.element_opt(tags::REFERENCED_FILE_ID)
                .ok()
                .flatten()
                .is_some()
        })
        .unwrap();
    records[k].put(DataElement::new(
        tags::REFERENCED_FILE_ID,
        VR::CS,
        PrimitiveValue::Strs(vec!["..".to_string(), "src".into(), "a".into()].into()),
    ));
    bad.put(DataElement::new(
        tags::DIRECTORY_RECORD_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(records),
    ));
    // In the file set's own folder, so that every other record still names a file.
    std::fs::copy(&dicomdir, d.path("DICOMDIR.orig")).unwrap();
    bad.write_to_file(&dicomdir).unwrap();
    refused(
        &d.share("cd/DICOMDIR", "s2", &["--series", CT]),
        &["cd/DICOMDIR", "..\\src\\a", "not a path inside its folder"],
    );
    std::fs::copy(d.path("DICOMDIR.orig"), &dicomdir).unwrap();

    // The CT through both servers.
    for n in ["s0", "s1"] {
        ok(&["keygen", "--name", n, "--out-dir", &d.p("keys")]);
    }
    let o = d.share("cd/DICOMDIR", "study", &["--series", CT]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = sources(&d, "study");
    assert_eq!(s["slices"].as_array().unwrap().len(), 2);
    ok(&[
        "gen-triplets",
        "--study",
        &d.p("study"),
        "--model",
        &d.p("model.pub"),
        "--engine",
        "gc",
    ]);
    for o in start_pair(&d.dir, |p, addr| d.serve(p, addr))
        .map(|c| wait_limit(c, Duration::from_secs(180)))
    {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let j = ok(&[
        "reconstruct",
        "--insecure-unsigned",
        "--study",
        &d.p("study"),
        "--out",
        &d.p("out"),
    ]);
    let series = j["series_uid"].as_str().unwrap();
    assert_ne!(series, CT);
    let input_dir = PathBuf::from(s["input_dir"].as_str().unwrap());
    for name in names(&s["slices"]) {
        let (src, out) = (input_dir.join(&name), d.path(&format!("out/{name}")));
        let want = d.p(&format!("oracle-{name}.dcm"));
        let (srcp, srcs) = (src.display().to_string(), src.display().to_string());
        ok(&[
            "denoise",
            "--image",
            &srcp,
            "--model",
            &fixture("tiny-mlp.npz"),
            "--arith",
            "fixed",
            "--sigma",
            "321.176HU",
            "--out",
            &want,
            "--like",
            &srcs,
        ]);
        assert_eq!(
            ppdenoise::image::load(&out).unwrap(),
            ppdenoise::image::load(&want).unwrap(),
            "{name}: the study's slice differs from the oracle"
        );
        let o = open_file(&out).unwrap();
        assert_eq!(
            o.element(tags::SERIES_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim(),
            series
        );
    }
}
