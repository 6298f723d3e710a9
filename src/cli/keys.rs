//! File encryption at rest on the command line: who a party's files are sealed to
//! (`--to-s0`, `--to-s1`) and the identity a reader decrypts with (`--identity`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::formats::sealed::{self, Recipient};

/// Encrypt each server's file to that server (age, X25519): `.p0` to S0, `.p1` to S1.
#[derive(Args, Clone, Default)]
pub struct SealArgs {
    /// S0's file-encryption recipient: an `age1...` key, or the file keygen wrote for it
    /// (<name>.age-recipient). Given with --to-s1, the `.p0` file is sealed to S0.
    #[arg(long, value_name = "RECIPIENT")]
    pub to_s0: Option<String>,
    /// S1's file-encryption recipient (see --to-s0); the `.p1` file is sealed to S1.
    #[arg(long, value_name = "RECIPIENT")]
    pub to_s1: Option<String>,
}

impl SealArgs {
    /// The recipients of the `.p0` and `.p1` files, checked before anything is made: both
    /// or neither, so a pair is never half sealed.
    pub fn recipients(&self) -> Result<[Option<Recipient>; 2]> {
        match (&self.to_s0, &self.to_s1) {
            (None, None) => Ok([None, None]),
            (Some(a), Some(b)) => {
                let (r0, r1) = (Recipient::parse(a)?, Recipient::parse(b)?);
                // One key able to open both shares of anything would undo the sharing.
                if r0.to_string() == r1.to_string() {
                    bail!("--to-s0 {a} and --to-s1 {b} are the same recipient: each server needs its own");
                }
                Ok([Some(r0), Some(r1)])
            }
            _ => {
                bail!("--to-s0 and --to-s1 go together: give both servers' recipients, or neither")
            }
        }
    }
}

/// The identity a party decrypts its sealed files with.
#[derive(Args, Clone, Default)]
pub struct IdentityArgs {
    /// This party's file-encryption identity (<name>.age-identity from keygen): sealed input files
    /// are decrypted with it (plain files are read as they are).
    #[arg(long)]
    pub identity: Option<PathBuf>,
}

impl IdentityArgs {
    /// Registers the identity for this process's reads; returns its recipient.
    pub fn load(&self) -> Result<Option<Recipient>> {
        self.identity
            .as_deref()
            .map(sealed::use_identity)
            .transpose()
    }
}
