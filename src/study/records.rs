//! The servers' completion records (`done.pN`): which slices a server, or both, finished,
//! and with which run; what a study resumes from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::formats::container::{self, id_hex};
use crate::formats::signing::Trust;
use crate::formats::study::{slice_file, Done, Manifest};

/// Server `p`'s record of slice `i` when it is sound: of the study's job, with the output
/// share it names intact, signed by the key `trust` pins for server `p` (any key, with
/// none pinned). An unreadable or malformed record, one whose signature does not verify, or
/// one signed by another key, is an error naming it.
pub fn signed_done(
    dir: &Path,
    i: usize,
    p: u8,
    job_id: &str,
    trust: &Trust,
) -> Result<Option<Done>> {
    let path = slice_file(dir, i, "done", p);
    let Some(rec) = Done::read_if_any(&path)? else {
        return Ok(None);
    };
    if rec.party != p {
        bail!("{}: is S{}'s record", path.display(), rec.party);
    }
    rec.check(&path, trust)?;
    Ok((rec.job_id == job_id && rec.output_intact(&slice_file(dir, i, "out", p))).then_some(rec))
}

/// Whether server `p` finished slice `i` with the triplets it holds now (or with spent ones
/// since removed): what `serve --study` skips. Fresh triplets (dealt again because the peer
/// did not finish) mean the slice is to be redone. A server that signs takes only its own
/// records (`trust` pins its key).
pub fn finished_here(dir: &Path, i: usize, p: u8, job_id: &str, trust: &Trust) -> Result<bool> {
    let Some(rec) = signed_done(dir, i, p, job_id, trust)? else {
        return Ok(false);
    };
    let triplets = slice_file(dir, i, "triplets", p);
    if !triplets.exists() {
        return Ok(true);
    }
    let current = container::read_header(&triplets)?
        .triplet_id
        .map(|id| id_hex(&id));
    Ok(current.as_deref() == Some(rec.triplet_id.as_str()))
}

/// Whether both servers finished slice `i`, in the same run, by records signed by the
/// keys `trust` pins.
pub fn finished(dirs: &[PathBuf; 2], i: usize, job_id: &str, trust: &Trust) -> Result<bool> {
    Ok(
        match (
            signed_done(&dirs[0], i, 0, job_id, trust)?,
            signed_done(&dirs[1], i, 1, job_id, trust)?,
        ) {
            (Some(a), Some(b)) => a.triplet_id == b.triplet_id,
            _ => false,
        },
    )
}

pub fn unfinished_by(m: &Manifest, dirs: &[PathBuf; 2], trust: &Trust) -> Result<Vec<usize>> {
    let mut left = Vec::new();
    for i in 0..m.len() {
        if !finished(dirs, i, &m.slices[i], trust)? {
            left.push(i);
        }
    }
    Ok(left)
}

/// The dealer's [`unfinished_by`]: a record it cannot take (planted, rewritten, signed by
/// another key, unreadable) leaves its slice to be dealt again, with a line naming it,
/// instead of stopping the study (whoever can write the folder could otherwise stop every
/// dealing; deleting a record already gets the slice dealt again).
pub fn unfinished_for_dealer(
    m: &Manifest,
    dirs: &[PathBuf; 2],
    trust: &Trust,
) -> (Vec<usize>, Vec<String>) {
    let (mut left, mut warnings) = (Vec::new(), Vec::new());
    for i in 0..m.len() {
        match finished(dirs, i, &m.slices[i], trust) {
            Ok(true) => {}
            Ok(false) => left.push(i),
            Err(e) => {
                warnings.push(format!(
                    "slice {i}: record not taken: {e:#}: not finished; dealing it again"
                ));
                left.push(i);
            }
        }
    }
    (left, warnings)
}
