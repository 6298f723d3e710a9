//! Free space before a long write: the dealer's triplet files are large (about 1.9 GB for a
//! 512x512 FFDNet slice), and a disk that fills half-way through a study wastes the hours
//! spent on it. The estimate is compared with what statvfs says is available to this user.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Environment variable that replaces the free bytes statvfs reports (tests; a value the
/// size of a small disk shows the refusal without filling one).
pub const FREE_BYTES_ENV: &str = "PPDENOISE_FREE_BYTES";

/// Bytes available to this (unprivileged) user on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var(FREE_BYTES_ENV) {
        return v
            .trim()
            .parse()
            .ok()
            .with_context(|| format!("{FREE_BYTES_ENV}={v:?}: not a number of bytes"));
    }
    statvfs_free(dir)
}

#[cfg(unix)]
fn statvfs_free(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("{}: a path with a NUL byte", dir.display()))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("{}: cannot read its free space", dir.display()));
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn statvfs_free(_dir: &Path) -> Result<u64> {
    Ok(u64::MAX)
}

/// The folder a new file `path` goes into (its parent; `.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses, with the numbers, writing `need` bytes (`what`) into `dir` when only `free`
/// are available.
pub fn check(dir: &Path, need: u64, free: u64, what: &str) -> Result<()> {
    if need > free {
        bail!(
            "{}: {what} needs about {} ({need} bytes) but only {} ({free} bytes) are free there; \
             free some space or write elsewhere (nothing was written)",
            dir.display(),
            human_bytes(need),
            human_bytes(free)
        );
    }
    Ok(())
}

/// `1.9 GB`, `512 KB`: decimal units, as disks are sold.
pub fn human_bytes(b: u64) -> String {
    let units = ["bytes", "KB", "MB", "GB", "TB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1000.0 && u < units.len() - 1 {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_larger_than_the_free_space_is_refused_with_the_numbers() {
        let dir = Path::new("/some/dir");
        check(dir, 1_000, 1_000, "x").unwrap();
        let e = check(dir, 1_900_000_000, 512_000_000, "the triplets")
            .unwrap_err()
            .to_string();
        for n in [
            "/some/dir",
            "the triplets",
            "1.9 GB",
            "512.0 MB",
            "1900000000",
            "512000000",
        ] {
            assert!(e.contains(n), "{n}: {e}");
        }
    }

    #[test]
    fn the_free_space_of_a_real_folder_is_read() {
        // The environment variable is for the binary's tests; unset here.
        if std::env::var_os(FREE_BYTES_ENV).is_none() {
            assert!(statvfs_free(Path::new(".")).unwrap() > 0);
            assert!(statvfs_free(Path::new("/no/such/folder")).is_err());
        }
    }
}
