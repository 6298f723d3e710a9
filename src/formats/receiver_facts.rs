//! `<out>.rx.json`: what `share-image` tells the receiver alone about a job whose noise
//! level or scaling was derived from the image's pixels (`--sigma auto`, or a level in the
//! image's units on an `auto` window). The job's public header then holds stand-ins
//! ([`super::bodies::JobParams::private_pre`]); `reconstruct --job-facts` decodes with this.
//! A study keeps the same facts per slice in its sources file, which is the receiver's too.

use crate::ring::Party;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::container::{self, Header, Kind, Seal};
use super::signing::{Signer, Trust};
use super::study::{is_hex_id, read_json, write_json};
use crate::fileio::bounded::open_at_most;
use crate::image::window::{Units, Window};

const FORMAT_TAG: &str = "ppdenoise-receiver-facts";
const VERSION: u32 = 1;
/// Largest signed facts file read (a few hundred bytes of JSON in a container).
const MAX_SIG_BYTES: u64 = 64 << 10;

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

/// `<facts>.sig` beside the facts file: the gateway's signed copy of them.
pub fn facts_sig(facts: &Path) -> PathBuf {
    let mut s = facts.as_os_str().to_owned();
    s.push(".sig");
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

    /// Writes the facts to `path` and their copy signed by the gateway `by` (unsigned
    /// without one: plain test jobs, which a receiver pinning keys refuses) to
    /// `<path>.sig`. The facts decide how the receiver decodes and writes the image (its
    /// window, scaling and level), so whoever can write beside the shares must not choose
    /// them.
    pub fn write_signed(&self, path: &Path, by: Option<&Signer>) -> Result<()> {
        let text = serde_json::to_string(self)?;
        let mut h = Header::new(Kind::ReceiverFacts, Party::S0, 0);
        h.job_id = super::study::parse_id(&self.job_id);
        container::write(&facts_sig(path), &h, &text, Seal::new(None, by))?;
        self.write(path)
    }

    /// The facts at `path`, as the gateway signed them (`<path>.sig`, checked whole and
    /// signed by the gateway key `trust` pins) before any field is used: the file must say
    /// the same. With no key pinned (`--insecure-unsigned`, plain test jobs) a missing
    /// signed copy is taken.
    pub fn read_checked(path: &Path, trust: &Trust) -> Result<ReceiverFacts> {
        let plain = ReceiverFacts::read(path)?;
        let sig = facts_sig(path);
        let pinned = matches!(trust, Trust::Pinned(_));
        let f = match open_at_most(&sig, MAX_SIG_BYTES, "signed receiver's facts")? {
            None if !pinned => return Ok(plain),
            None => bail!(
                "{}: no signed copy of the receiver's facts {} (share-image --sign-key writes \
                 it beside them): unsigned facts could name another window or scaling",
                sig.display(),
                path.display()
            ),
            Some(f) => f,
        };
        // One open, its size bounded above: the signer is checked against the pinned gateway
        // key before the body is read; the signature itself is verified with the whole file,
        // read from the same handle.
        let o = container::Opened::from_file(&sig, f)?;
        o.expect(Kind::ReceiverFacts, None)?;
        trust.check(&sig, o.header())?;
        let (h, text): (Header, String) = o.read(Kind::ReceiverFacts, None)?;
        let signed: ReceiverFacts = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed signed receiver's facts", sig.display()))?;
        if h.job_id.map(|id| container::id_hex(&id)).as_deref() != Some(signed.job_id.as_str()) {
            bail!(
                "{}: its header and its facts name different jobs",
                sig.display()
            );
        }
        if signed != plain {
            bail!(
                "{}: says other facts than the gateway signed ({}): changed after share-image; \
                 nothing written",
                path.display(),
                sig.display()
            );
        }
        Ok(signed)
    }
}
