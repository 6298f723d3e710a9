//! A server's record of consumed single-use randomness, in its `--state-dir`: job triplets
//! (`serve`) and model masks (`open-weights`). An id is claimed (an exclusive lock) before use,
//! so two overlapping runs cannot both pass the check, and recorded as consumed once protocol
//! data may have left; a claim whose randomness was never used is released, also when its
//! process is killed (the lock goes with it).

use crate::ring::Party;
use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What kind of single-use randomness an id names.
#[derive(Clone, Copy)]
pub enum Record {
    Triplets,
    ModelMask,
}

impl Record {
    fn file(self, party: Party) -> String {
        match self {
            Record::Triplets => format!("consumed-triplets-p{party}"),
            Record::ModelMask => format!("consumed-masks-p{party}"),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Record::Triplets => "correlated randomness (triplet id",
            Record::ModelMask => "model mask (mask id",
        }
    }

    fn claim_name(self, party: Party, id: &str) -> String {
        match self {
            Record::Triplets => format!("claim-p{party}-{id}"),
            Record::ModelMask => format!("claim-mask-p{party}-{id}"),
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Record::Triplets => "ask the dealer for fresh triplets",
            Record::ModelMask => {
                "keep the opened weights of its first use, or ask the dealer for a fresh `gen-model-mask`"
            }
        }
    }
}

/// A claim on one id, held from before the link comes up: an exclusive lock on a claim file,
/// so it ends with the process however that ends (a server killed while it waited for its
/// peer does not strand the randomness).
pub struct Claim {
    path: PathBuf,
    _lock: std::fs::File,
    state_dir: PathBuf,
    party: Party,
    rec: Record,
    id: String,
}

impl Claim {
    pub fn take(
        state_dir: &Path,
        party: Party,
        rec: Record,
        id: &str,
        file: &Path,
    ) -> Result<Claim> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
        let p = state_dir.join(rec.claim_name(party, id));
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .with_context(|| format!("cannot claim {}", p.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{}: this {} {id}) is in use or was used by another run ({} is held); reusing it would leak data: {}",
                file.display(),
                rec.what(),
                p.display(),
                rec.remedy()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", p.display()))
            }
        }
        // A run releasing its claim removes the file: a lock on the removed file is no claim.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let held = f.metadata().map(|m| (m.dev(), m.ino())).ok();
            if std::fs::metadata(&p).map(|m| (m.dev(), m.ino())).ok() != held {
                bail!(
                    "{}: this {} {id}) was being claimed by another run at the same moment; run again",
                    file.display(),
                    rec.what()
                );
            }
        }
        // A claim file left by a run that ended before it used the randomness is taken over;
        // a run that used it recorded it as consumed first. A consumed id needs no claim
        // file: it goes (the record refuses the id from now on).
        if let Err(e) = check_unused(state_dir, party, rec, id, file) {
            let _ = std::fs::remove_file(&p);
            return Err(e);
        }
        prune(state_dir, party, rec, id);
        Ok(Claim {
            path: p,
            _lock: f,
            state_dir: state_dir.to_path_buf(),
            party,
            rec,
            id: id.to_string(),
        })
    }

    /// Records the id as consumed while the claim is still held (a run that takes the claim
    /// after this one then finds the record), then lets the claim go.
    pub fn consume(self) -> Result<()> {
        if let Err(e) = mark_used(&self.state_dir, self.party, self.rec, &self.id) {
            // Not recorded, so not to be used: the run stops here, before anything derived
            // from the randomness is sent, and a later run may have it.
            self.release();
            return Err(e);
        }
        // The record refuses the id from now on: the claim file is no longer needed, and a
        // state directory serving thousands of jobs keeps one record, not a file per job.
        let _ = std::fs::remove_file(&self.path);
        Ok(())
    }

    /// The randomness was never used (no peer, or a mismatched one): a later run may have it.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Cuts a consumed triplet file to its header (a sealed one, whose header cannot be kept
/// alone, is removed): its values can never be used again and a study's files are large.
/// The header keeps its ids, so that a second run is refused as consumed by name and a
/// study's records can still be matched to the dealing they were made with. The rest is
/// zeros of the length the header reader requires.
/// Whether the file was sealed is what its one read told ([`super::ReadyJob::triplets_sealed`]):
/// it is not opened again to find out.
pub fn spend_opened(path: &Path, sealed: bool) -> Result<()> {
    use crate::formats::container::MAGIC;
    if sealed {
        return std::fs::remove_file(path)
            .with_context(|| format!("{}: cannot remove the spent triplets", path.display()));
    }
    let cut = || -> std::io::Result<bool> {
        let mut f = OpenOptions::new().read(true).write(true).open(path)?;
        let mut pre = [0u8; 14];
        f.read_exact(&mut pre)?;
        if &pre[..8] != MAGIC {
            return Ok(false);
        }
        let hlen = u32::from_le_bytes(pre[10..14].try_into().expect("4 bytes")) as u64;
        let head = 14 + hlen;
        // Body length and checksum fields: zeros, never the values.
        let keep = head + 8 + 32;
        if f.metadata()?.len() <= keep {
            return Ok(true);
        }
        // The values go first (a shrink, which a full disk or a file-size limit never
        // refuses), then the two fields are zeroed in place: nothing grows the file.
        f.set_len(keep)?;
        f.seek(std::io::SeekFrom::Start(head))?;
        f.write_all(&[0u8; 40])?;
        f.sync_all()?;
        Ok(true)
    };
    match cut() {
        Ok(true) => Ok(()),
        Ok(false) => bail!(
            "{}: not a ppdenoise file; the spent triplets were left as they are",
            path.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("{}: cannot cut the spent triplets", path.display()))
        }
    }
}

/// Removes the claim files of party `party` that no process holds and whose ids are recorded
/// as consumed (left by a server killed after it recorded its run): they can never be taken
/// again, and would otherwise accumulate. `own`, just claimed, is kept. Best effort: a file
/// that cannot be locked or removed stays. Removing one that another run opened a moment
/// ago is safe: that run finds its lock on a removed file and stops ("run again"), and the
/// record refuses the id anyway.
fn prune(state_dir: &Path, party: Party, rec: Record, own: &str) {
    let prefix = rec.claim_name(party, "");
    let Ok(record) = std::fs::read_to_string(state_dir.join(rec.file(party))) else {
        return;
    };
    let consumed: std::collections::HashSet<&str> = record
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let Ok(dir) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if id == own || !consumed.contains(id) {
            continue;
        }
        if let Ok(f) = std::fs::File::open(e.path()) {
            if f.try_lock().is_ok() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Refuses an id already recorded as consumed.
pub fn check_unused(
    state_dir: &Path,
    party: Party,
    rec: Record,
    id: &str,
    file: &Path,
) -> Result<()> {
    let p = state_dir.join(rec.file(party));
    // Only a missing record means nothing was consumed; a record that cannot be read is an
    // error, never "unused".
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read the consumed-randomness record {}", p.display())
            })
        }
    };
    {
        let s = String::from_utf8_lossy(&bytes);
        if s.lines().any(|l| l.split_whitespace().next() == Some(id)) {
            bail!(
                "{}: this {} {id}) was already consumed (recorded in {}); reusing it would leak data: {}",
                file.display(),
                rec.what(),
                p.display(),
                rec.remedy()
            );
        }
    }
    Ok(())
}

/// Records an id as consumed, durably, before any data derived from it is sent.
pub fn mark_used(state_dir: &Path, party: Party, rec: Record, id: &str) -> Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    let p = state_dir.join(rec.file(party));
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .with_context(|| format!("cannot record consumed randomness in {}", p.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // A write cut short (a full disk, a killed process) can leave a line without its end:
    // this one starts on a line of its own, or the id would be glued to the broken one and
    // never found again. A failed write is undone where it can be. Writers of the record
    // (runs of this party sharing the state dir) take turns, so that an undo removes only
    // its own bytes; the lock goes with the file, or with the process.
    f.lock()
        .with_context(|| format!("cannot lock {}", p.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let broken = len > 0 && {
        let mut last = [0u8];
        let mut r = std::fs::File::open(&p)?;
        r.seek(std::io::SeekFrom::Start(len - 1))?;
        r.read_exact(&mut last)?;
        last[0] != b'\n'
    };
    let line = format!("{}{id} {now}\n", if broken { "\n" } else { "" });
    if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_all()) {
        let _ = f.set_len(len);
        return Err(e)
            .with_context(|| format!("cannot record consumed randomness in {}", p.display()));
    }
    // The record's directory entry too, the first time the record is made.
    if let Ok(d) = std::fs::File::open(state_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Refuses an output path that would overwrite one of the run's `inputs`, that is a folder, or
/// whose folder does not exist or cannot be written in (a temporary file is made there and
/// removed): checked before any randomness is claimed, so a bad --out burns nothing.
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "{}: the output folder {} does not exist",
            out.display(),
            dir.display()
        );
    }
    if out.is_dir() {
        bail!("{}: is a folder, not an output file", out.display());
    }
    tempfile::Builder::new()
        .prefix(".ppdenoise-")
        .suffix(".probe")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "{}: cannot write in the output folder {}",
                out.display(),
                dir.display()
            )
        })?;
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if let Some(o) = canon(out) {
        for i in inputs {
            if canon(i).as_ref() == Some(&o) {
                bail!(
                    "{}: the output would overwrite the input {}",
                    out.display(),
                    i.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_recorded_after_a_broken_line_is_still_found() {
        // A write cut short by a full disk left "cd" without its line end (found by the soak).
        let t = tempfile::tempdir().unwrap();
        let (dir, f) = (t.path(), Path::new("t.p0"));
        mark_used(dir, Party::S0, Record::Triplets, "ab").unwrap();
        let rec = dir.join(Record::Triplets.file(Party::S0));
        let mut w = OpenOptions::new().append(true).open(&rec).unwrap();
        w.write_all(b"cd").unwrap();
        mark_used(dir, Party::S0, Record::Triplets, "ef").unwrap();
        for id in ["ab", "ef"] {
            let e = check_unused(dir, Party::S0, Record::Triplets, id, f).unwrap_err();
            assert!(e.to_string().contains("already consumed"), "{e}");
        }
        check_unused(dir, Party::S0, Record::Triplets, "cdef", f).unwrap();
    }

    #[test]
    fn a_claim_is_held_by_its_process_alone_and_ends_with_it() {
        let d = tempfile::tempdir().unwrap();
        let (dir, f) = (d.path(), Path::new("triplets.p0"));
        let take = || Claim::take(dir, Party::S0, Record::Triplets, "ab", f);
        let held = take().unwrap();
        let e = take().err().expect("a held claim is refused").to_string();
        assert!(e.contains("in use"), "{e}");
        // Dropped without release (as when its process is killed): the file stays, unlocked,
        // and the next run takes it over.
        drop(held);
        assert!(dir.join("claim-p0-ab").exists());
        let again = take().unwrap();
        // Consumed under the claim: no moment without either the lock or the record; the
        // claim file then goes, and a refused take leaves none.
        again.consume().unwrap();
        assert!(!dir.join("claim-p0-ab").exists());
        let e = take().err().expect("consumed").to_string();
        assert!(e.contains("already consumed"), "{e}");
        assert!(!dir.join("claim-p0-ab").exists());
        // A claim left by a run killed after it recorded its id (here: made by hand) goes
        // with the next claim of that party, a held or unconsumed one stays.
        std::fs::write(dir.join("claim-p0-ab"), b"").unwrap();
        std::fs::write(dir.join("claim-p0-cd"), b"").unwrap();
        let next = Claim::take(dir, Party::S0, Record::Triplets, "ef", f).unwrap();
        assert!(!dir.join("claim-p0-ab").exists());
        assert!(dir.join("claim-p0-cd").exists() && dir.join("claim-p0-ef").exists());
        next.release();
        // Released: the file goes.
        let other = Claim::take(dir, Party::S1, Record::Triplets, "ab", f).unwrap();
        other.release();
        assert!(!dir.join("claim-p1-ab").exists());
    }

    #[test]
    fn output_paths_that_cannot_be_written_are_refused_up_front() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::write(&input, b"x").unwrap();
        let e = check_output(d.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        let e = check_output(&input, &[&input]).unwrap_err().to_string();
        assert!(e.contains("would overwrite the input"), "{e}");
        let e = check_output(&d.path().join("no/out"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        // A file where the folder should be.
        let e = check_output(&input.join("out"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        check_output(&d.path().join("out"), &[&input]).unwrap();
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "probe left behind"
        );
    }
}
