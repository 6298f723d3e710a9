//! Why a file could not be read: every reader of the formats (the container, the sealing)
//! reports through [`FormatError`], naming the file.

use std::path::PathBuf;

use super::header::{MIN_VERSION, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{0}: cannot read: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: not a ppdenoise file (bad magic)")]
    BadMagic(PathBuf),
    #[error("{0}: unsupported format version {1} (this build reads versions {MIN_VERSION} to {VERSION})")]
    Version(PathBuf, u16),
    #[error("{0}: a {1} of format version {2}, from an older ppdenoise; {3}")]
    Outdated(PathBuf, &'static str, u16, &'static str),
    #[error("{0}: a triplet file of format version {1}, made by an older dealer; this build reads triplet files of version {VERSION} (explicit values packed at their readers' widths, seeded values from AES-256-CTR streams): deal the job again with `gen-triplets`")]
    OlderDealer(PathBuf, u16),
    #[error("{0}: truncated or corrupted: {1}")]
    Truncated(PathBuf, String),
    #[error("{0}: absurd size: {1}")]
    Absurd(PathBuf, String),
    #[error("{0}: integrity check failed (the file was modified or corrupted)")]
    Checksum(PathBuf),
    #[error("{0}: malformed {1}: {2}")]
    Malformed(PathBuf, &'static str, String),
    #[error("{path}: expected a {expected} but this file is a {found}")]
    WrongKind {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: this file is for party {found}, but this is party {expected}")]
    WrongParty {
        path: PathBuf,
        expected: u8,
        found: u8,
    },
    #[error("{path}: {what}")]
    Mismatch { path: PathBuf, what: String },
    #[error("{0}: {1}")]
    Sealed(PathBuf, String),
    #[error("{0}: the signature does not verify under the key its header names (forged, or modified after signing)")]
    Signature(PathBuf),
}
