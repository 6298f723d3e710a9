//! One job, outside the command line: each party's step on plain options (the command line
//! parses its arguments into them and calls these; a study calls them once per slice).
//! `gateway.rs` shares an image as a new job, `dealer.rs` deals a job's correlated
//! randomness, `server.rs` runs one server's job (the engine itself is src/server/), and
//! `receiver.rs` checks and adds a pair of output shares, `plain.rs` is the plaintext
//! denoiser (float, or the fixed point the secure results are held to). Beside them what every step uses:
//! progress on stderr (`progress.rs`), free space before a long write (`space.rs`), memory
//! handed back between jobs (`freed_memory.rs`), the files' names and how they are written.

pub mod dealer;
pub mod freed_memory;
pub mod gateway;
pub mod offline;
pub mod owner;
pub mod plain;
pub mod progress;
pub mod receiver;
pub mod server;
pub mod space;

use crate::ring::Party;
use std::path::PathBuf;

use crate::formats::container::Seal;
use crate::formats::sealed::Recipient;
use crate::formats::signing::Signer;

/// What a step reports: human lines and the JSON summary (what a command prints).
pub struct Summary {
    pub lines: Vec<String>,
    pub json: serde_json::Value,
}

/// How a producer's files are written: each server's sealed to it or not, all signed by the
/// producer or not.
pub struct Outputs {
    pub to: [Option<Recipient>; 2],
    pub by: Option<Signer>,
}

impl Outputs {
    /// The `.pN` file's.
    pub fn party(&self, p: Party) -> Seal<'_> {
        Seal::new(self.to[p as usize].as_ref(), self.by.as_ref())
    }

    /// A file for no server (the dealer's public headers, its own records): signed, never
    /// sealed.
    pub fn public(&self) -> Seal<'_> {
        Seal::new(None, self.by.as_ref())
    }
}

/// `<prefix><suffix>`: the output prefixes name sets of files (`.p0`, `.p1`, `.pub`, ...).
pub fn with_suffix(prefix: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<prefix>.pub`: the public header file the dealer is given instead of a share.
pub fn public_file(prefix: &std::path::Path) -> PathBuf {
    with_suffix(prefix, ".pub")
}

/// `<prefix>.p<party>`: a server's file.
pub fn with_ext(prefix: &std::path::Path, party: Party) -> PathBuf {
    with_suffix(prefix, &format!(".p{party}"))
}
