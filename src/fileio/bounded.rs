//! A small file opened once and its size bounded on that open: the size a reader checks is
//! the size of the file it then reads, not of whatever the path named a moment before.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Opens `path` (None when there is no such file) and refuses it, naming it, when it holds
/// more than `max` bytes (`what` says what it was to be).
pub fn open_at_most(path: &Path, max: u64, what: &str) -> Result<Option<File>> {
    let f = match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.with_context(|| format!("{}: cannot read", path.display()))?,
    };
    let len = f
        .metadata()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    if len > max {
        bail!("{}: {len} bytes, more than {what} can be", path.display());
    }
    Ok(Some(f))
}

/// The whole of `f`, opened at `path` by [`open_at_most`] with `max`: read to `max` bytes
/// only, should it have grown since.
pub fn read_at_most(path: &Path, f: File, max: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{}: grew past {max} bytes while read", path.display());
    }
    Ok(bytes)
}
