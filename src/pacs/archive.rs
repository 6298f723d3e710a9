//! An archive as `share-study --from`, `reconstruct --to` and `file-series --to` reach it:
//! through DICOMweb (`dicomweb:URL`) or DIMSE (`dimse:AET@HOST:PORT`), each taking a series
//! out into a folder and filing a folder's series back the same way for its callers.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::dimse::retrieve::DimseLocal;
use super::dimse::{store_scu, DimseAddr};
use super::http::Client;
use super::pull::Fetched;

pub enum Archive {
    Web(Client),
    Dimse { to: DimseAddr, local: DimseLocal },
}

impl std::fmt::Display for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Archive::Web(c) => write!(f, "{}", c.url),
            Archive::Dimse { to, .. } => write!(f, "{to}"),
        }
    }
}

impl Archive {
    /// Fetches the series `series` (its UID or Series Number; the study's one series when
    /// None) of study `study` into the folder `dir` (which exists and is empty).
    pub fn fetch_series(
        &self,
        study: &str,
        series: Option<&str>,
        dir: &Path,
        quiet: bool,
    ) -> Result<Fetched> {
        match self {
            Archive::Web(c) => super::pull::fetch_series(c, study, series, dir, quiet),
            Archive::Dimse { to, local } => {
                super::dimse::retrieve::fetch_series(to, local, study, series, dir, quiet)
            }
        }
    }

    /// Files `files` (one series) and says so: the line and JSON field of a summary.
    pub fn file_into(&self, files: &[PathBuf], quiet: bool) -> Result<(String, serde_json::Value)> {
        match self {
            Archive::Web(c) => super::push::file_into(c, files, quiet),
            Archive::Dimse { to, local } => {
                let t = std::time::Instant::now();
                let f = store_scu::file_series(to, &local.scu, files, quiet)?;
                let secs = t.elapsed().as_secs_f64();
                let warned = if f.warnings.is_empty() {
                    String::new()
                } else {
                    let mut st: Vec<String> = f
                        .warnings
                        .iter()
                        .map(|w| format!("{:04X}H", w.status))
                        .collect();
                    st.sort();
                    st.dedup();
                    format!(
                        " ({} of them stored with a warning status: {})",
                        f.warnings.len(),
                        st.join(", ")
                    )
                };
                Ok((
                    format!(
                        "filed {} instances ({} bytes) into {to} in {secs:.2} s{warned}: series {} of study {}",
                        f.instances, f.bytes, f.series_uid, f.study_uid
                    ),
                    serde_json::json!({"archive": to.to_string(), "study_uid": f.study_uid,
                        "series_uid": f.series_uid, "instances": f.instances, "bytes": f.bytes,
                        "warnings": f.warnings, "seconds": secs}),
                ))
            }
        }
    }
}
