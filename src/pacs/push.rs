//! The derived series filed back with STOW-RS: every file's header read (one study, one
//! series), then each instance stored on its own request to `studies/{study}`, so that the
//! archive's answer is per instance; a failed instance does not stop the others, and the
//! whole is an error naming each that failed. An instance the archive already holds (same
//! SOP Instance UID, as a re-run sends) is stored again in place, not duplicated: the
//! archive files instances by their UIDs.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

use super::http::{status_error, Client, NoAnswer};
use super::{checked_uid, json_value, multipart};

/// The bound of a STOW-RS answer (DICOM JSON naming the instances).
const MAX_ANSWER: u64 = 16 << 20;

/// One instance to file: its file and UIDs.
struct Instance {
    file: PathBuf,
    sop: String,
    series: String,
    study: String,
}

fn text(
    obj: &dicom_object::DefaultDicomObject,
    tag: dicom_core::Tag,
    name: &str,
    file: &Path,
) -> Result<String> {
    let v = obj
        .element(tag)
        .map_err(|_| anyhow!("{}: no {name}", file.display()))?
        .to_str()
        .map_err(|e| anyhow!("{}: {name}: {e}", file.display()))?;
    Ok(v.trim_end_matches(['\0', ' ']).to_string())
}

fn instance(file: &Path) -> Result<Instance> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| anyhow!("{}: not a DICOM file: {e}", file.display()))?;
    Ok(Instance {
        file: file.to_path_buf(),
        sop: text(&obj, tags::SOP_INSTANCE_UID, "SOP Instance UID", file)?,
        series: text(&obj, tags::SERIES_INSTANCE_UID, "Series Instance UID", file)?,
        study: text(&obj, tags::STUDY_INSTANCE_UID, "Study Instance UID", file)?,
    })
}

/// What was filed.
pub struct Filed {
    pub study_uid: String,
    pub series_uid: String,
    pub instances: usize,
    pub bytes: u64,
}

/// The DICOM files of the folder `dir`, by name: every regular file with `DICM` at byte 128
/// (a derived series keeps its sources' names, which need not end in .dcm).
pub fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| anyhow!("{}: cannot read the folder: {e}", dir.display()))?;
    let mut files = Vec::new();
    for e in rd {
        let e = e.map_err(|e| anyhow!("{}: cannot read the folder: {e}", dir.display()))?;
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let p = e.path();
        let mut head = [0u8; 132];
        let dicm = std::fs::File::open(&p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && &head[128..] == b"DICM";
        if dicm {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: holds no DICOM file (none with DICM at byte 128)",
            dir.display()
        );
    }
    Ok(files)
}

/// Files `files` into the archive of `c` and says so: the line and JSON field of a summary.
pub fn file_into(
    c: &Client,
    files: &[PathBuf],
    quiet: bool,
) -> Result<(String, serde_json::Value)> {
    let t = std::time::Instant::now();
    let f = file_series(c, files, quiet)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((
        format!(
            "filed {} instances ({} bytes) into {} in {secs:.2} s: series {} of study {}",
            f.instances, f.bytes, c.url, f.series_uid, f.study_uid
        ),
        serde_json::json!({"archive": c.url.to_string(), "study_uid": f.study_uid,
            "series_uid": f.series_uid, "instances": f.instances, "bytes": f.bytes,
            "seconds": secs}),
    ))
}

/// Files the DICOM `files` (one series of one study) into the archive.
pub fn file_series(c: &Client, files: &[PathBuf], quiet: bool) -> Result<Filed> {
    if files.is_empty() {
        bail!("no DICOM file to file into {}", c.url);
    }
    // Every header read before anything is sent: a series is filed whole or not begun.
    let all = files
        .iter()
        .map(|f| instance(f))
        .collect::<Result<Vec<_>>>()?;
    let (study, series) = super::one_series(all.iter().map(|i| (&i.file, &i.study, &i.series)))?;
    for i in &all {
        checked_uid(&i.sop, &format!("{}: SOP Instance UID", i.file.display()))?;
    }
    checked_uid(
        &study,
        &format!("{}: Study Instance UID", all[0].file.display()),
    )?;
    checked_uid(
        &series,
        &format!("{}: Series Instance UID", all[0].file.display()),
    )?;
    let url = format!("{}/studies/{study}", c.url.root);
    let mut failed = Vec::new();
    let mut bytes = 0u64;
    for (k, i) in all.iter().enumerate() {
        let data = crate::image::read_file(&i.file)?;
        bytes += data.len() as u64;
        let (body, ct) = multipart::dicom_body(&[&data]);
        drop(data);
        match stow_one(c, &url, &body, &ct, &i.sop) {
            Ok(()) => {
                if !quiet {
                    eprintln!("filed {}/{}: {}", k + 1, all.len(), i.file.display());
                }
            }
            // Not reached, or not answering, after this request's retries: the next instance
            // would wait out the same retries, and so on for the series. Stopped here, said once.
            Err(e) if e.is::<NoAnswer>() => {
                let before = if failed.is_empty() {
                    String::new()
                } else {
                    format!("; failed before it: {}", failed.join("; "))
                };
                bail!(
                    "{}: the archive did not answer ({e:#}): filing stopped at instance {} of {} \
                     ({} filed, {} failed before it), the rest not sent (a re-run sends them \
                     again, and what the archive holds is not duplicated){before}",
                    c.url,
                    k + 1,
                    all.len(),
                    k - failed.len(),
                    failed.len()
                );
            }
            Err(e) => failed.push(format!(
                "{} (SOP Instance UID {}): {e:#}",
                i.file.display(),
                i.sop
            )),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} instances not filed into {} (a re-run sends them again, and what the \
             archive holds is not duplicated): {}",
            failed.len(),
            all.len(),
            c.url,
            failed.join("; ")
        );
    }
    Ok(Filed {
        study_uid: study,
        series_uid: series,
        instances: all.len(),
        bytes,
    })
}

/// One instance stored: the answer must name it among the stored, not the failed.
fn stow_one(c: &Client, url: &str, body: &[u8], ct: &str, sop: &str) -> Result<()> {
    let r = c.post(url, ct, body, MAX_ANSWER)?;
    // 200: all stored; 202: stored with warnings or some failed; anything else: none.
    if r.status != 200 && r.status != 202 {
        return Err(status_error("POST", url, &r));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|_| {
        anyhow!(
            "POST {url}: HTTP {}, the answer is not DICOM JSON",
            r.status
        )
    })?;
    let seq = |tag: &str| -> Vec<serde_json::Value> {
        v.get(tag)
            .and_then(|s| s.get("Value"))
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default()
    };
    // Failed SOP Sequence: the instance and its Failure Reason (0008,1197).
    if let Some(f) = seq("00081198")
        .iter()
        .find(|f| json_value(f, "00081155").as_deref() == Some(sop))
    {
        bail!(
            "POST {url}: HTTP {}, the archive failed it (reason {})",
            r.status,
            json_value(f, "00081197").map_or("not given".into(), |r| crate::pacs::printable(&r))
        );
    }
    // Referenced SOP Sequence: the instances stored.
    if !seq("00081199")
        .iter()
        .any(|s| json_value(s, "00081155").as_deref() == Some(sop))
    {
        bail!(
            "POST {url}: HTTP {}, the answer does not name the instance as stored",
            r.status
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folders_dicom_files_are_found_by_their_preamble_not_their_names() {
        let d = tempfile::tempdir().unwrap();
        let dicm = |name: &str| {
            let mut b = vec![0u8; 128];
            b.extend_from_slice(b"DICM\x02\x00");
            std::fs::write(d.path().join(name), b).unwrap();
        };
        dicm("IM0001");
        dicm("slice.2.dcm");
        std::fs::write(d.path().join("notes.dcm"), b"not DICOM").unwrap();
        std::fs::write(d.path().join("short"), b"DICM").unwrap();
        std::fs::create_dir(d.path().join("sub.dcm")).unwrap();
        let got: Vec<String> = dicom_files(d.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["IM0001", "slice.2.dcm"]);
        let empty = tempfile::tempdir().unwrap();
        let e = dicom_files(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no DICOM file"), "{e}");
    }
}
