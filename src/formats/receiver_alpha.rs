//! `<out>.alpha`: an RGBA image's alpha samples, which `share-image` keeps for the receiver
//! alone (issue 48). The alpha is pixel data: it never goes into the servers' files
//! (`.p0`, `.p1`, `.pub`), and nothing the servers or the dealer get depends on it. The
//! receiver puts it back beside the denoised planes (`reconstruct --alpha`).
//!
//! One container of its own kind, bound to its job (header `job_id`) and signed by the
//! gateway like the receiver's facts: a receiver pinning the gateway key refuses an unsigned
//! or altered one, and every receiver refuses the alpha of another job or of another size.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::container::{self, id_hex, Header, Id, Kind, Seal};
use super::signing::{Signer, Trust};
use crate::fileio::bounded::open_at_most;

/// The body: the samples row by row at the source's depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AlphaBody {
    height: u64,
    width: u64,
    bit_depth: u8,
    samples: Vec<u16>,
}

/// `<out>.alpha` beside share-image's `<out>.p0`.
pub fn alpha_file(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".alpha");
    PathBuf::from(s)
}

/// Writes `alpha` (h x w samples at `bit_depth`, 8 or 16) of job `job_id` to `path`, signed
/// by the gateway `by` (unsigned without one: plain test jobs, which a receiver pinning keys
/// refuses).
pub fn write_signed(
    path: &Path,
    job_id: &Id,
    alpha: &Array2<u16>,
    bit_depth: u8,
    by: Option<&Signer>,
) -> Result<()> {
    let (h, w) = alpha.dim();
    let mut hdr = Header::new(Kind::ReceiverAlpha, 0, 0);
    hdr.job_id = Some(*job_id);
    hdr.shapes.push(("alpha".into(), vec![h as u64, w as u64]));
    let body = AlphaBody {
        height: h as u64,
        width: w as u64,
        bit_depth,
        samples: alpha.iter().copied().collect(),
    };
    container::write(path, &hdr, &body, Seal::new(None, by))
}

/// The alpha at `path` for job `job` of `dim` (h, w) pixels: (samples, bit depth). Its size
/// is bounded by the image's before it is read, its kind and signer checked against `trust`
/// before its body is, and its job, size and depth checked before it is used.
pub fn read_checked(
    path: &Path,
    trust: &Trust,
    job: &Id,
    dim: (usize, usize),
) -> Result<(Array2<u16>, u8)> {
    let (h, w) = dim;
    // Two bytes a sample at most (bincode's varints), and room for the header and signature.
    let max = 2 * (h as u64) * (w as u64) + (64 << 10);
    let Some(f) = open_at_most(path, max, &format!("the alpha of a {h} x {w} image"))? else {
        bail!("--alpha {}: no such file", path.display());
    };
    let o = container::Opened::from_file(path, f)?;
    o.expect(Kind::ReceiverAlpha, None)?;
    trust.check(path, o.header())?;
    if o.header().job_id.as_ref() != Some(job) {
        bail!(
            "--alpha {}: the alpha of job {}, not of this job ({})",
            path.display(),
            o.header()
                .job_id
                .map(|id| id_hex(&id))
                .unwrap_or_else(|| "none".into()),
            id_hex(job)
        );
    }
    let (_, b): (Header, AlphaBody) = o.read(Kind::ReceiverAlpha, None)?;
    if (b.height, b.width) != (h as u64, w as u64) || b.samples.len() != h * w {
        bail!(
            "--alpha {}: {} x {} samples ({} held), but the denoised image is {h} x {w}",
            path.display(),
            b.height,
            b.width,
            b.samples.len()
        );
    }
    match b.bit_depth {
        8 if b.samples.iter().any(|&v| v > 255) => {
            bail!("--alpha {}: 8-bit samples above 255", path.display())
        }
        8 | 16 => {}
        d => bail!("--alpha {}: bit depth {d}, not 8 or 16", path.display()),
    }
    let a = Array2::from_shape_vec((h, w), b.samples).expect("h * w samples");
    Ok((a, b.bit_depth))
}
