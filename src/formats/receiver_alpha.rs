//! `<out>.alpha`: an RGBA image's alpha samples, which `share-image` keeps for the receiver
//! alone (issue 48). The alpha is pixel data: it never goes into the servers' files
//! (`.p0`, `.p1`, `.pub`), and nothing the servers or the dealer get depends on it. The
//! receiver puts it back beside the denoised planes (`reconstruct --alpha`).
//!
//! One container of its own kind, bound to its job (header `job_id`) and signed by the
//! gateway like the receiver's facts: a receiver pinning the gateway key refuses an unsigned
//! or altered one, and every receiver refuses the alpha of another job or of another size.

use crate::ring::Party;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::container::{self, id_hex, Header, Id, Kind, Seal};
use super::signing::Trust;
use crate::fileio::atomic::Staged;
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

/// Stages `alpha` (h x w samples at `bit_depth`, 8 or 16) of job `job_id` for `path` in
/// `set` (the job's share files' set: all of them appear together or none), sealed to the
/// receiver and signed by the gateway as `seal` says (plain and unsigned without them:
/// plain test jobs, which a receiver pinning keys refuses).
pub fn stage(
    set: &mut Staged,
    path: &Path,
    job_id: &Id,
    alpha: &Array2<u16>,
    bit_depth: u8,
    seal: Seal<'_>,
) -> Result<()> {
    let (h, w) = alpha.dim();
    let mut hdr = Header::new(Kind::ReceiverAlpha, Party::S0, 0);
    hdr.job_id = Some(*job_id);
    hdr.shapes.push(("alpha".into(), vec![h as u64, w as u64]));
    let body = AlphaBody {
        height: h as u64,
        width: w as u64,
        bit_depth,
        samples: alpha.iter().copied().collect(),
    };
    container::stage(set, path, &hdr, &body, seal)
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
    // Two bytes a sample (fixed-width u16), and room for the header, signature and seal.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::signing::{new_key, Role, Signer};

    /// The alpha written alone, as share-image stages it beside the shares.
    fn write_signed(p: &Path, job: &Id, alpha: &Array2<u16>, depth: u8, by: Option<&Signer>) {
        let mut set = Staged::default();
        stage(&mut set, p, job, alpha, depth, Seal::new(None, by)).unwrap();
        set.commit().unwrap();
    }

    fn signer(dir: &Path, name: &str) -> Signer {
        let path = dir.join(format!("{name}.sign-key"));
        std::fs::write(&path, new_key(name).unwrap().0).unwrap();
        Signer::load(&path, Role::Gateway).unwrap()
    }

    /// Under a pinned gateway key: the gateway's alpha is taken; one unsigned or signed by
    /// another key is refused; another job's or another size's is refused under any trust.
    #[test]
    fn the_alpha_is_taken_signed_by_the_pinned_gateway_of_its_job_only() {
        let d = tempfile::tempdir().unwrap();
        let (gw, other) = (signer(d.path(), "gw"), signer(d.path(), "other"));
        let pinned = Trust::Pinned(vec![(Role::Gateway, gw.public())]);
        let (job, job2) = ([7u8; 16], [8u8; 16]);
        let alpha = Array2::from_shape_fn((3, 4), |(r, c)| (r * 20000 + c) as u16);
        let p = d.path().join("x.alpha");
        write_signed(&p, &job, &alpha, 16, Some(&gw));
        assert_eq!(
            read_checked(&p, &pinned, &job, (3, 4)).unwrap(),
            (alpha.clone(), 16)
        );
        let err = |p: &Path, t: &Trust, j: &Id, dim| {
            format!("{:#}", read_checked(p, t, j, dim).unwrap_err())
        };
        let e = err(&p, &pinned, &job2, (3, 4));
        assert!(e.contains("the alpha of job 0707"), "{e}");
        let e = err(&p, &Trust::InsecureUnsigned, &job, (4, 3));
        assert!(
            e.contains("3 x 4 samples (12 held), but the denoised image is 4 x 3"),
            "{e}"
        );
        write_signed(&p, &job, &alpha, 16, None);
        assert!(read_checked(&p, &Trust::InsecureUnsigned, &job, (3, 4)).is_ok());
        let e = err(&p, &pinned, &job, (3, 4));
        assert!(e.contains("x.alpha: not signed"), "{e}");
        write_signed(&p, &job, &alpha, 16, Some(&other));
        let e = err(&p, &pinned, &job, (3, 4));
        assert!(e.contains("not by the pinned gateway key"), "{e}");
    }
}
