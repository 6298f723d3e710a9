//! Another party's file opened once for a reader that pins its maker's key: the file becomes
//! a checked value at the edge, and nothing reopens its path.
//!
//! [`open_signed`] opens the file (under `--insecure-unsigned` a sealed one is refused before
//! it is decrypted), unseals it, reads and checks its header, and checks that the signer the
//! header names is the key pinned for the file's maker ([`Trust::check`], or
//! [`Trust::check_output`] for the servers' output shares), all before the body is read. The
//! body is then read from the same handle ([`Opened::read`], or piecewise through
//! [`super::triplet_stream::from_opened`]), where the signature is verified under that same
//! header's key: no moment in which a file swapped in at the path is read unchecked.

use crate::ring::Party;
use std::path::Path;

use anyhow::Result;
use serde::de::DeserializeOwned;

use super::container::{Header, Kind, Opened};
use super::error::FormatError;
use super::signing::Trust;

/// Who made the file a reader opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maker {
    /// The dealer, the model owner or the gateway (a server's inputs).
    Party,
    /// S0 or S1 (the receiver's output shares).
    Server,
}

impl Maker {
    /// Why a sealed file is refused under `--insecure-unsigned`: a sealed file comes from a
    /// real deployment, whose files are signed.
    pub fn sealed_unsigned(self) -> &'static str {
        match self {
            Maker::Party => "--insecure-unsigned is for plain test files, but this one is sealed: give the makers' public signing keys (--dealer-key, --owner-key, --gateway-key or --trust) instead",
            Maker::Server => "--insecure-unsigned is for plain test files, but this output share is sealed: give the servers' public signing keys (--s0-key, --s1-key or --trust) instead",
        }
    }
}

/// Opens `path`, made by `maker`, for a reader that accepts what `trust` says: one open, the
/// header checked and its signer checked against the pinned key before anything else is
/// read. The signature itself is verified when the body is read through the returned value.
pub fn open_signed(path: &Path, trust: &Trust, maker: Maker) -> Result<Opened> {
    open_signed_checking(path, trust, maker, &|_| Ok(()))
}

/// [`open_signed`], the header first given to `first`, before its signer is checked: for a
/// refusal that holds whoever made the file (a study's slice given another job's share),
/// said as such rather than as a signing fault.
pub fn open_signed_checking(
    path: &Path,
    trust: &Trust,
    maker: Maker,
    first: &dyn Fn(&Header) -> Result<()>,
) -> Result<Opened> {
    check_maker(open_as(path, trust, maker)?, trust, maker, first)
}

/// [`open_signed`] of `f`, already open at `path` (by a reader that checked something of
/// the raw file first: a study's output share against its completion record).
pub fn open_signed_file(
    path: &Path,
    f: std::fs::File,
    trust: &Trust,
    maker: Maker,
) -> Result<Opened> {
    check_maker(opened_as(path, f, trust, maker)?, trust, maker, &|_| Ok(()))
}

/// Opens `path` (once) for a reader that accepts what `trust` says, its maker not checked:
/// under `--insecure-unsigned` a sealed file is refused before it is decrypted. For a file
/// nobody signs (a server's opened weights); [`open_signed`] checks the maker too.
pub fn open_as(path: &Path, trust: &Trust, maker: Maker) -> Result<Opened> {
    let f = std::fs::File::open(path).map_err(|e| FormatError::Io(path.into(), e))?;
    opened_as(path, f, trust, maker)
}

/// [`open_as`] of `f`, already open at `path`.
fn opened_as(path: &Path, f: std::fs::File, trust: &Trust, maker: Maker) -> Result<Opened> {
    Ok(match trust {
        Trust::InsecureUnsigned => Opened::from_file_plain_only(path, f, maker.sealed_unsigned())?,
        Trust::Pinned(_) => Opened::from_file(path, f)?,
    })
}

/// The checks of an opened file's maker: `first` on its header, then its signer against
/// the pinned keys.
fn check_maker(
    o: Opened,
    trust: &Trust,
    maker: Maker,
    first: &dyn Fn(&Header) -> Result<()>,
) -> Result<Opened> {
    let path = o.path().to_path_buf();
    let path = path.as_path();
    first(o.header())?;
    match maker {
        Maker::Party => trust.check(path, o.header())?,
        Maker::Server => {
            // A server makes output shares only; of another kind, the file is named as such.
            o.expect(Kind::OutputShare, None)?;
            trust.check_output(path, o.header())?
        }
    }
    Ok(o)
}

/// [`open_signed`] and the whole body of kind `kind` (of `party`, when given): a verified
/// header with its body.
pub fn load_signed<B: DeserializeOwned>(
    path: &Path,
    trust: &Trust,
    maker: Maker,
    kind: Kind,
    party: Option<Party>,
) -> Result<(Header, B)> {
    Ok(open_signed(path, trust, maker)?.read(kind, party)?)
}
