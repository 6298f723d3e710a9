//! `<out>.rx.json`: what `share-image` tells the receiver alone about a job whose noise
//! level or scaling was derived from the image's pixels (`--sigma auto`, or a level in the
//! image's units on an `auto` window). The job's public header then holds stand-ins
//! ([`super::bodies::JobParams::private_pre`]); `reconstruct --job-facts` decodes with this.
//! A study keeps the same facts per slice in its sources file, which is the receiver's too.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::study::{is_hex_id, read_json, write_json};
use crate::plain::image::window::{Units, Window};

const FORMAT_TAG: &str = "ppdenoise-receiver-facts";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverFacts {
    pub format: String,
    pub version: u32,
    /// The job these facts are of (hex).
    pub job_id: String,
    /// The sigma*/sigma scaling the image was encoded with.
    pub noise_scale: f64,
    /// The image's noise level on the model's 0..255 scale.
    pub sigma: f64,
    /// The window the 0..255 scale spans, in `units` (a DICOM's).
    pub window: Window,
    pub units: Units,
}

/// `<out>.rx.json` beside share-image's `<out>.p0`.
pub fn facts_file(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".rx.json");
    PathBuf::from(s)
}

impl ReceiverFacts {
    pub fn new(job_id: String, noise_scale: f64, sigma: f64, window: Window, units: Units) -> Self {
        ReceiverFacts {
            format: FORMAT_TAG.into(),
            version: VERSION,
            job_id,
            noise_scale,
            sigma,
            window,
            units,
        }
    }

    pub fn read(path: &Path) -> Result<ReceiverFacts> {
        let f: ReceiverFacts = read_json(path)?;
        if f.format != FORMAT_TAG || f.version != VERSION {
            bail!(
                "{}: not a receiver's facts file of this version ({} {})",
                path.display(),
                f.format,
                f.version
            );
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !is_hex_id(&f.job_id) || !positive(f.noise_scale) || !positive(f.sigma) {
            bail!("{}: malformed receiver's facts", path.display());
        }
        Window::new(f.window.lo, f.window.hi)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(f)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}
