//! A server's record of consumed single-use randomness, in its `--state-dir`: job triplets
//! (`serve`) and model masks (`open-weights`). An id is claimed atomically before use, so two
//! overlapping runs cannot both pass the check, and recorded as consumed once protocol data
//! may have left; a claim whose randomness was never used is released.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What kind of single-use randomness an id names.
#[derive(Clone, Copy)]
pub enum Record {
    Triplets,
    ModelMask,
}

impl Record {
    fn file(self, party: u8) -> String {
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

    fn claim_name(self, party: u8, id: &str) -> String {
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

/// A claim on one id, held from before the link comes up.
pub struct Claim(PathBuf);

impl Claim {
    pub fn take(state_dir: &Path, party: u8, rec: Record, id: &str, file: &Path) -> Result<Claim> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
        let p = state_dir.join(rec.claim_name(party, id));
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(_) => Ok(Claim(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{}: this {} {id}) is in use or was used by another run ({} exists); reusing it would leak data: {}",
                file.display(),
                rec.what(),
                p.display(),
                rec.remedy()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot claim {}", p.display())),
        }
    }

    /// The randomness was never used (no peer, or a mismatched one): a later run may have it.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Refuses an id already recorded as consumed.
pub fn check_unused(state_dir: &Path, party: u8, rec: Record, id: &str, file: &Path) -> Result<()> {
    let p = state_dir.join(rec.file(party));
    if let Ok(s) = std::fs::read_to_string(&p) {
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
pub fn mark_used(state_dir: &Path, party: u8, rec: Record, id: &str) -> Result<()> {
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
    writeln!(f, "{id} {now}")?;
    f.sync_all()?;
    Ok(())
}

/// Refuses an output path that would overwrite one of the run's `inputs` or whose folder does
/// not exist: checked before any randomness is claimed, so a bad --out burns nothing.
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
