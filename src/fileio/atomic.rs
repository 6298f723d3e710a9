//! Atomic output files: write to a temporary file in the destination directory, then rename,
//! so an interrupted run never leaves a half-written result under the final name. Every file
//! is created readable by its owner only (mode 0600): shares, seeds, masks and images are
//! secrets of the party that holds them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Creates `path` atomically with the content produced by `f`.
pub fn write_with<F>(path: &Path, f: F) -> anyhow::Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> anyhow::Result<()>,
{
    let mut set = Staged::default();
    set.add(path, f)?;
    set.commit()
}

/// Files written as a set (a party's `.p0`, `.p1` and `.pub`): each goes to a temporary file
/// beside its final name, and only when all are written are they moved into place, so a
/// failure while writing leaves the previous set untouched (dropped, the temporaries vanish).
#[derive(Default)]
pub struct Staged(Vec<(tempfile::NamedTempFile, PathBuf)>);

impl Staged {
    /// Writes the content produced by `f` for `path` (not yet in place).
    pub fn add<F>(&mut self, path: &Path, f: F) -> anyhow::Result<()>
    where
        F: FnOnce(&mut BufWriter<&mut File>) -> anyhow::Result<()>,
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".ppdenoise-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "{}: cannot create a temporary file in {}",
                    path.display(),
                    dir.display()
                )
            })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("{}: cannot restrict its permissions", path.display()))?;
        }
        {
            let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            f(&mut w).with_context(|| format!("{}: write failed", path.display()))?;
            w.flush()
                .with_context(|| format!("{}: write failed", path.display()))?;
        }
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("{}: sync failed", path.display()))?;
        self.0.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// Moves every written file into place, in the order added.
    pub fn commit(self) -> anyhow::Result<()> {
        // The renames cannot be one atomic step; refuse the common reason for one to fail (a
        // folder where a file goes) before the first, so the set is not left half-moved.
        for (_, path) in &self.0 {
            if path.is_dir() {
                anyhow::bail!(
                    "{}: is a folder; nothing of the set was written",
                    path.display()
                );
            }
        }
        for (tmp, path) in self.0 {
            tmp.persist(&path).map_err(|e| e.error).with_context(|| {
                format!(
                    "{}: cannot move the finished file into place",
                    path.display()
                )
            })?;
        }
        Ok(())
    }
}

/// Writes bytes atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_with(path, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

/// Fills the new folder `out` as a whole: `fill` writes into a staging folder beside it,
/// moved into place only when `fill` succeeds, so a failure leaves nothing behind. `out`
/// must not exist, or be empty: nothing (an input least of all) is replaced.
pub fn new_folder(
    out: &Path,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            anyhow::bail!(
                "--out {}: exists and is not an empty folder; a folder of outputs is written \
                 into a new one",
                out.display()
            );
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("{}: cannot create", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".ppdenoise-folder-")
        .tempdir_in(&parent)
        .with_context(|| format!("{}: cannot make a folder in it", parent.display()))?;
    fill(staging.path())?;
    if out.exists() {
        std::fs::remove_dir(out)
            .with_context(|| format!("{}: cannot replace the empty folder", out.display()))?;
    }
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, out) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e)
            .with_context(|| format!("{}: cannot move the folder into place", out.display()));
    }
    Ok(())
}
