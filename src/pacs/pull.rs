//! `share-study --from dicomweb:URL --study UID`: the study's series listed with QIDO-RS,
//! one picked, its instances listed and each fetched with WADO-RS into a new folder of the
//! receiver's (moved into place only when every instance came whole), which `share-study`
//! then shares as it shares `--in DIR`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::http::{status_error, Client};
use super::{checked_uid, json_value, multipart};

/// The bound of a QIDO-RS answer (a list of series or instances).
const MAX_LIST: u64 = 64 << 20;
/// The bound of one instance (a single-frame slice is a few MB; a multi-frame object more).
pub const MAX_INSTANCE: u64 = 2 << 30;
/// The most instances a series may list.
const MAX_INSTANCES: usize = crate::formats::study::MAX_SLICES;

/// What was fetched.
pub struct Fetched {
    pub series_uid: String,
    pub instances: usize,
    pub bytes: u64,
}

/// A DICOM JSON list (QIDO-RS's answer) at `url`; none when the archive says the
/// resource does not exist (404, or 204 No Content).
fn list(c: &Client, url: &str) -> Result<Option<Vec<serde_json::Value>>> {
    let r = c.get(url, "application/dicom+json", MAX_LIST)?;
    match r.status {
        200 => {}
        204 | 404 => return Ok(None),
        _ => return Err(status_error("GET", url, &r)),
    }
    if r.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .with_context(|| format!("GET {url}: the answer is not DICOM JSON"))?;
    match v {
        serde_json::Value::Array(a) if a.is_empty() => Ok(None),
        serde_json::Value::Array(a) => Ok(Some(a)),
        _ => bail!("GET {url}: the answer is not a DICOM JSON list"),
    }
}

/// The page a QIDO-RS list is asked in (`limit`); an archive may answer fewer, its own cap.
const PAGE: usize = 1000;

/// The whole QIDO-RS list at `url`, asked page by page (`limit`, `offset`): archives cap
/// their answers (Orthanc's LimitFindInstances, dcm4chee's page size), and a series of more
/// instances than one page must come whole. Pages are asked until one is empty (a cap below
/// `limit` answers short pages that are not the last); a page that brings nothing new (an
/// archive that ignores `offset`) ends the list too. Items are told apart by the attribute
/// `key` (a UID); at most `max` are taken. None when the first page says no such resource.
fn list_all(
    c: &Client,
    url: &str,
    key: &str,
    max: usize,
) -> Result<Option<Vec<serde_json::Value>>> {
    let mut all: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let page_url = format!("{url}?limit={PAGE}&offset={}", all.len());
        let Some(page) = list(c, &page_url)? else {
            break;
        };
        let before = all.len();
        for item in page {
            let k = json_value(&item, key).unwrap_or_default();
            if seen.insert(k) {
                all.push(item);
            }
        }
        if all.len() == before {
            break;
        }
        if all.len() > max {
            bail!("GET {url}: more than {max} items listed, more than a study may hold");
        }
    }
    Ok((!all.is_empty()).then_some(all))
}

/// Fetches the series `series` (its UID or Series Number; the study's one series when
/// None) of study `study` into the folder `dir` (which exists and is empty).
pub fn fetch_series(
    c: &Client,
    study: &str,
    series: Option<&str>,
    dir: &Path,
    quiet: bool,
) -> Result<Fetched> {
    let study = checked_uid(study, "--study")?;
    let root = &c.url.root;
    let url = format!("{root}/studies/{study}/series");
    let Some(all) = list_all(c, &url, "0020000E", MAX_INSTANCES)? else {
        bail!("--study {study}: no such study at {} (GET {url})", c.url);
    };
    // Each series: its UID, number and modality, as QIDO-RS gives them.
    let found: Vec<(String, Option<String>, String)> = all
        .iter()
        .map(|s| {
            (
                json_value(s, "0020000E").unwrap_or_default(),
                json_value(s, "00200011"),
                json_value(s, "00080060").unwrap_or_default(),
            )
        })
        .collect();
    let series_uid = super::pick_series(&found, series, study, &c.url)?;
    let url = format!("{root}/studies/{study}/series/{series_uid}/instances");
    let Some(instances) = list_all(c, &url, "00080018", MAX_INSTANCES)? else {
        bail!(
            "series {series_uid} of study {study} at {}: no instances (GET {url})",
            c.url
        );
    };
    if instances.len() > MAX_INSTANCES {
        bail!(
            "GET {url}: {} instances, more than a study may hold ({MAX_INSTANCES})",
            instances.len()
        );
    }
    let mut sops = Vec::with_capacity(instances.len());
    for i in &instances {
        let sop = json_value(i, "00080018").unwrap_or_default();
        checked_uid(&sop, &format!("GET {url}: an instance's SOP Instance UID"))?;
        sops.push(sop);
    }
    // The files' names say nothing of the patient: their order in the archive's list (the
    // share orders slices by their headers, as it does a folder's).
    let mut bytes = 0u64;
    for (k, sop) in sops.iter().enumerate() {
        let url = format!("{root}/studies/{study}/series/{series_uid}/instances/{sop}");
        // Any transfer syntax the archive holds (`*`): no transcoding on its side, and the
        // gateway reads what it reads of a folder.
        let r = c.get(
            &url,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            MAX_INSTANCE,
        )?;
        if r.status != 200 {
            return Err(status_error("GET", &url, &r));
        }
        let file = if multipart::media_type(&r.content_type) == "application/dicom" {
            r.body
        } else {
            let mut parts =
                multipart::parts(&r.body, &r.content_type).with_context(|| format!("GET {url}"))?;
            if parts.len() != 1 {
                bail!("GET {url}: {} parts, one instance asked", parts.len());
            }
            let p = parts.remove(0);
            let t = multipart::media_type(&p.content_type);
            if !t.is_empty() && t != "application/dicom" {
                bail!("GET {url}: a part of type {t}, not application/dicom");
            }
            p.body.to_vec()
        };
        if file.len() < 132 || &file[128..132] != b"DICM" {
            bail!("GET {url}: the answer is not a DICOM file (no DICM at byte 128)");
        }
        let path = dir.join(format!("instance-{:05}.dcm", k + 1));
        crate::fileio::atomic::write_bytes(&path, &file)?;
        bytes += file.len() as u64;
        if !quiet {
            eprintln!("fetched {}/{}: {url}", k + 1, sops.len());
        }
    }
    Ok(Fetched {
        series_uid,
        instances: sops.len(),
        bytes,
    })
}
