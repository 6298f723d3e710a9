//! The servers' completion records (`done.pN`): which slices a server, or both, finished,
//! and with which run; what a study resumes from.

use crate::ring::Party;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::formats::container::{id_hex, Opened};
use crate::formats::signing::Trust;
use crate::formats::study::{slice_file, Done, Manifest};

/// Server `p`'s record of slice `i` when it is sound: of the study's job, with the output
/// share it names intact, signed by the key `trust` pins for server `p` (any key, with
/// none pinned). An unreadable or malformed record, one whose signature does not verify, or
/// one signed by another key, is an error naming it.
pub fn signed_done(
    dir: &Path,
    i: usize,
    p: Party,
    job_id: &str,
    trust: &Trust,
) -> Result<Option<Done>> {
    Ok(signed_record(dir, i, p, job_id, trust)?
        .filter(|rec| rec.output_intact(&slice_file(dir, i, "out", p))))
}

/// [`signed_done`] without looking at the output share: for a reader that checks the share
/// against the record on its own one open of it ([`Done::intact_open`]).
fn signed_record(
    dir: &Path,
    i: usize,
    p: Party,
    job_id: &str,
    trust: &Trust,
) -> Result<Option<Done>> {
    let path = slice_file(dir, i, "done", p);
    let Some(rec) = Done::read_if_any(&path)? else {
        return Ok(None);
    };
    if rec.party != u8::from(p) {
        bail!("{}: is S{}'s record", path.display(), rec.party);
    }
    rec.check(&path, trust)?;
    Ok((rec.job_id == job_id).then_some(rec))
}

/// For the receiver: per slice, both servers' sound records of the study's job, of one run
/// (None: the slice is not finished on both). The output shares they name are not read
/// here: the receiver checks each against its record on the one open it reads it from.
pub fn run_records(
    m: &Manifest,
    dirs: &[PathBuf; 2],
    trust: &Trust,
) -> Result<Vec<Option<[Done; 2]>>> {
    (0..m.len())
        .map(|i| {
            let job = &m.slices[i];
            Ok(
                match (
                    signed_record(&dirs[0], i, Party::S0, job, trust)?,
                    signed_record(&dirs[1], i, Party::S1, job, trust)?,
                ) {
                    (Some(a), Some(b)) if a.triplet_id == b.triplet_id => Some([a, b]),
                    _ => None,
                },
            )
        })
        .collect()
}

/// Where server `p` stands on a slice: what `serve --study` and `study-status` go by.
pub enum Here {
    /// Finished with the triplets it holds now (or with spent ones since removed).
    Finished,
    /// To run; with its triplet file when that was opened to tell (a record of an earlier
    /// run, the triplets dealt again since): the job reads them from this open.
    ToRun(Option<Box<Opened>>),
}

/// Whether server `p` finished slice `i` with the triplets it holds now (or with spent ones
/// since removed): what `serve --study` skips. Fresh triplets (dealt again because the peer
/// did not finish) mean the slice is to be redone. A server that signs takes only its own
/// records (`trust` pins its key). The triplet file, when there is a record to compare it
/// with, is opened by `open` (once: the slice's job goes on from that open).
pub fn finished_here(
    dir: &Path,
    i: usize,
    p: Party,
    job_id: &str,
    trust: &Trust,
    open: &dyn Fn(&Path) -> Result<Opened>,
) -> Result<Here> {
    let Some(rec) = signed_done(dir, i, p, job_id, trust)? else {
        return Ok(Here::ToRun(None));
    };
    let triplets = slice_file(dir, i, "triplets", p);
    if !triplets.exists() {
        return Ok(Here::Finished);
    }
    let o = open(&triplets)?;
    let current = o.header().triplet_id.map(|id| id_hex(&id));
    Ok(if current.as_deref() == Some(rec.triplet_id.as_str()) {
        Here::Finished
    } else {
        Here::ToRun(Some(Box::new(o)))
    })
}

/// Whether both servers finished slice `i`, in the same run, by records signed by the
/// keys `trust` pins.
pub fn finished(dirs: &[PathBuf; 2], i: usize, job_id: &str, trust: &Trust) -> Result<bool> {
    Ok(
        match (
            signed_done(&dirs[0], i, Party::S0, job_id, trust)?,
            signed_done(&dirs[1], i, Party::S1, job_id, trust)?,
        ) {
            (Some(a), Some(b)) => a.triplet_id == b.triplet_id,
            _ => false,
        },
    )
}

/// The slices not finished on both servers ([`finished`]), for the dealer: a record it cannot take (planted, rewritten, signed by
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
        // Being served now: its pair may yet finish it with the triplets it holds.
        let busy = in_progress(dirs, &[i]);
        if let Some((_, who)) = busy.first() {
            warnings.push(format!(
                "slice {i}: being served now ({who}): not dealt again while it runs"
            ));
            continue;
        }
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

/// Server `p`'s record that it is serving slice `i` now: `slice<I>/serving.pP`, locked
/// (an exclusive `flock`) by the serving process for as long as it serves the slice, and
/// saying which process that is. The lock goes with the process however it ends, so a
/// record left by a killed server is no claim: `study-status` tells a slice being served
/// from one that stopped (issue 71, item 12) by the lock alone.
pub struct Serving {
    path: PathBuf,
    _lock: std::fs::File,
}

impl Serving {
    /// Takes the record of slice `i` in `dir` for server `p`. A record another process
    /// holds is waited for briefly (a `study-status` looking at it holds a shared lock for
    /// a moment), then refused naming that process. None, after a warning, where the file
    /// system cannot lock files: the slice is then served without a record.
    pub fn take(dir: &Path, i: usize, p: Party) -> Result<Option<Serving>> {
        use std::io::Write;
        let path = slice_file(dir, i, "serving", p);
        let mut f = open_record(&path, true)?;
        let mut tries = 0;
        loop {
            match f.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => bail!(
                    "{}: slice {i} is being served by another S{p} process ({}); one server \
                     per slice and party",
                    path.display(),
                    who(&f, p)
                ),
                Err(std::fs::TryLockError::Error(e)) if no_flock(&e) => {
                    // Served all the same, without a record: refusing would stop every
                    // study on such a file system.
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        eprintln!(
                            "warning: {}: this file system cannot lock files ({e}): slices \
                             are served without a serving record, so study-status cannot \
                             tell a slice being served from one whose server stopped, and \
                             may offer to deal it again",
                            path.display()
                        )
                    });
                    drop(f);
                    let _ = std::fs::remove_file(&path);
                    return Ok(None);
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("{}: cannot lock", path.display()))
                }
            }
        }
        let since = chrono::Local::now().format("%Y-%m-%d %H:%M:%S %z");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "this host".into());
        f.set_len(0)
            .and_then(|()| {
                writeln!(
                    f,
                    "S{p} on {host}, process {}, since {since}",
                    std::process::id()
                )
            })
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(Some(Serving { path, _lock: f }))
    }
}

impl Drop for Serving {
    /// The slice is no longer served: finished (its `done.pP` says so) or failed.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who serves slice `i` as server `p` now (what its record says), if a live process holds
/// the record: none when there is no record, or one whose process has gone.
pub fn serving_now(dir: &Path, i: usize, p: Party) -> Option<String> {
    let f = open_record(&slice_file(dir, i, "serving", p), false).ok()?;
    // A shared lock, let go at once: refused only while a server holds the record.
    match f.try_lock_shared() {
        Err(std::fs::TryLockError::WouldBlock) => Some(who(&f, p)),
        _ => None,
    }
}

/// Serving record `path`, to write (made when missing) or only to read: never through a
/// symlink someone who can write the folder planted (its target would be truncated and
/// written), never blocking on a FIFO in its place; a regular file only, used through this
/// one handle.
fn open_record(path: &Path, write: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("{}: cannot open (a symlink is refused)", path.display()))?;
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        bail!("{}: is not a regular file", path.display());
    }
    Ok(f)
}

/// What serving record `f` says of its process, bounded and in printable ASCII only (it is
/// printed in status lines and warnings: no terminal escapes), or `S<p>` when it says
/// nothing.
fn who(f: &std::fs::File, p: Party) -> String {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    let mut f = f;
    let _ = f.rewind();
    let _ = f.take(256).read_to_end(&mut bytes);
    let s: String = bytes
        .iter()
        .filter(|b| (b' '..=b'~').contains(*b))
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        format!("S{p}")
    } else {
        s.to_string()
    }
}

/// Whether a failed `flock` says the file system cannot lock at all (not that the lock is
/// held).
fn no_flock(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::ENOLCK)
    )
}

/// The slices of `left` that a server is serving now ([`serving_now`]), with who serves
/// each: not to be dealt again while they run.
pub fn in_progress(dirs: &[PathBuf; 2], left: &[usize]) -> Vec<(usize, String)> {
    left.iter()
        .filter_map(|&i| {
            let who: Vec<String> = Party::BOTH
                .into_iter()
                .filter_map(|p| serving_now(&dirs[p.index()], i, p))
                .collect();
            (!who.is_empty()).then(|| (i, who.join("; ")))
        })
        .collect()
}
