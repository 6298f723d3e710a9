//! File encryption at rest on the command line: who a party's files are sealed to
//! (`--to-s0`, `--to-s1`) and the identity a reader decrypts with (`--identity`).

use crate::ring::Party;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::formats::container::{Id, Kind};
use crate::formats::sealed::{self, Recipient};
use crate::formats::signing::{PublicKey, Role, Signer, Trust};

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
    /// Sign every file written with this party's signing key (<name>.sign-key from
    /// `keygen --signing`): servers that pin its public key (<name>.sign-pub) accept only
    /// files it signed. Required with --to-s0/--to-s1.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
}

pub use crate::job::Outputs;

impl SealArgs {
    /// Recipients and signing key, checked before anything is made: a sealed file is always
    /// signed (servers refuse sealed files that are not).
    pub fn outputs(&self, role: Role) -> Result<Outputs> {
        let to = self.recipients()?;
        let by = self
            .sign_key
            .as_deref()
            .map(|k| Signer::load(k, role))
            .transpose()?;
        if by.is_none() && to[0].is_some() {
            bail!("--to-s0/--to-s1: sealed files must be signed by their maker: give --sign-key (the {}'s <name>.sign-key from `keygen --signing`)", role.name());
        }
        Ok(Outputs { to, by })
    }

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

/// Whose files a server accepts: each maker's pinned signing key, or none at all.
#[derive(Args, Clone, Default)]
pub struct TrustArgs {
    /// The dealer's public signing key (its <name>.sign-pub, or `ed25519:<hex>`): triplet
    /// files and model masks must be signed with it.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub dealer_key: Option<String>,
    /// The model owner's public signing key: model shares must be signed with it.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub owner_key: Option<String>,
    /// The gateway's public signing key: image shares must be signed with it.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub gateway_key: Option<String>,
    /// A trust file instead of (or beside) the three flags: lines `<role> ed25519:<hex>` for
    /// the roles dealer, owner and gateway; `#` comments.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Accept files that no one signed, or signed by anyone. For plain test files only:
    /// refused when any input is sealed (sealed files are always signed by their maker).
    #[arg(long, conflicts_with_all = ["dealer_key", "owner_key", "gateway_key", "trust"])]
    pub insecure_unsigned: bool,
}

impl TrustArgs {
    /// The pinned keys, checked before anything else is read: each role once (a flag and the
    /// trust file may name the same key, not two different ones).
    pub fn load(&self) -> Result<Trust> {
        if self.insecure_unsigned {
            return Ok(Trust::InsecureUnsigned);
        }
        let keys = pinned(
            self.trust.as_deref(),
            &[
                (Role::Dealer, &self.dealer_key),
                (Role::Owner, &self.owner_key),
                (Role::Gateway, &self.gateway_key),
            ],
        )?;
        if keys.is_empty() {
            bail!("whose files to accept: give the makers' public signing keys (--dealer-key, --owner-key, --gateway-key, or --trust FILE), or --insecure-unsigned for unsigned plain files");
        }
        Ok(Trust::Pinned(keys))
    }
}

/// Whose public model header (model.pub) the gateway believes (`share-image`, `share-study
/// --model`): it reads the model's declared window, noise-level range and network from it,
/// so whoever could write an unchecked model.pub would choose how images are mapped.
#[derive(Args, Clone, Default)]
pub struct OwnerPinArgs {
    /// The model owner's public signing key (its <name>.sign-pub, or `ed25519:<hex>`):
    /// --model must be signed with it (`share-model --sign-key`), else nothing is shared.
    /// Without it (or --trust), model.pub's maker is not checked, and a note says so.
    #[arg(long, value_name = "PUBLIC_KEY", requires = "model")]
    pub owner_key: Option<String>,
    /// A trust file instead of (or beside) --owner-key: its `owner` line (other roles'
    /// lines are not used here).
    #[arg(long = "trust", value_name = "FILE", requires = "model")]
    pub owner_trust: Option<PathBuf>,
}

impl OwnerPinArgs {
    /// The owner's pinned key, checked before model.pub is read: None when none is given; a
    /// trust file without an `owner` line is refused (it was given to pin one).
    pub fn load(&self) -> Result<Option<Trust>> {
        let keys = pinned(
            self.owner_trust.as_deref(),
            &[(Role::Owner, &self.owner_key)],
        )?;
        let owner: Vec<_> = keys
            .into_iter()
            .filter(|(r, _)| *r == Role::Owner)
            .collect();
        match (owner.is_empty(), &self.owner_trust) {
            (false, _) => Ok(Some(Trust::Pinned(owner))),
            (true, Some(t)) => bail!(
                "--trust {}: has no `owner` line (the model owner's public signing key, which \
                 --model must be signed with)",
                t.display()
            ),
            (true, None) => Ok(None),
        }
    }
}

/// The keys a trust file and the flags pin, each role once (a flag and the trust file may
/// name the same key, not two different ones), no key for two roles.
fn pinned(
    trust: Option<&Path>,
    flags: &[(Role, &Option<String>)],
) -> Result<Vec<(Role, PublicKey)>> {
    let mut keys = match trust {
        Some(p) => Trust::parse_file(p)?,
        None => Vec::new(),
    };
    for (role, spec) in flags {
        let Some(spec) = spec else { continue };
        let key = PublicKey::parse(spec)?;
        match keys.iter().find(|(r, _)| r == role) {
            Some((_, k)) if *k != key => bail!(
                "{} {spec}: the trust file names another {} key ({k})",
                role.flag(),
                role.name()
            ),
            Some(_) => {}
            None => keys.push((*role, key)),
        }
    }
    // One key per role: a key pinned for two roles could sign as either, and the role a
    // file's header claims would then prove nothing (one key for S0 and S1 would let one
    // server make both output shares).
    for (i, (r, k)) in keys.iter().enumerate() {
        if let Some((o, _)) = keys[..i].iter().find(|(_, x)| x == k) {
            bail!(
                "the {} and the {} are pinned with the same key ({k}): each needs a signing key of its own (keygen --signing)",
                o.name(),
                r.name()
            );
        }
    }
    Ok(keys)
}

/// The key a server signs its output shares and completion records with.
#[derive(Args, Clone, Default)]
pub struct ServerSignArgs {
    /// This server's signing key (<name>.sign-key from `keygen --signing --name s0` or
    /// `s1`): its output shares (and a study's completion records) are signed with it, and the
    /// receiver accepts only shares signed by the keys it pins (`reconstruct --s0-key
    /// --s1-key`, or a trust file with `s0` and `s1` lines). Required with --out-to.
    #[arg(long = "sign-key", value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
}

impl ServerSignArgs {
    /// Party `p`'s signer, checked before anything is claimed: a sealed output (`sealed`)
    /// must be signed, and a key `trust` pins for another role (or another key pinned for
    /// this server) is refused.
    pub fn load(&self, p: Party, sealed: bool, trust: &Trust) -> Result<Option<Signer>> {
        let role = Role::server(p);
        let Some(path) = &self.sign_key else {
            if sealed {
                bail!("--out-to: an output share sealed to the receiver must be signed by its server (the receiver's recipient is public, so sealing proves nothing of who made it): give --sign-key (this server's <name>.sign-key from `keygen --signing --name s{p}`)");
            }
            return Ok(None);
        };
        let s = Signer::load(path, role)?;
        if let Trust::Pinned(keys) = trust {
            for (r, k) in keys {
                if *k == s.public() && *r != role {
                    bail!(
                        "--sign-key {}: is the key pinned for the {}: S{p} needs a signing key of its own",
                        path.display(),
                        r.name()
                    );
                }
                if *r == role && *k != s.public() {
                    bail!(
                        "--sign-key {}: its public key {} is not the {} key the trust file pins ({k})",
                        path.display(),
                        s.public(),
                        role.name()
                    );
                }
            }
        }
        Ok(Some(s))
    }
}

/// Whose output shares the receiver accepts, and which job it expects them to be of.
#[derive(Args, Clone, Default)]
pub struct OutputTrustArgs {
    /// S0's public signing key (its <name>.sign-pub, or `ed25519:<hex>`): S0's output share
    /// must be signed with it.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub s0_key: Option<String>,
    /// S1's public signing key.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub s1_key: Option<String>,
    /// The gateway's public signing key: --job's header and a study's binding must be signed
    /// with it. Required with --study (unless --trust has a `gateway` line).
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub gateway_key: Option<String>,
    /// A trust file instead of (or beside) --s0-key and --s1-key: lines `s0 ed25519:<hex>`
    /// and `s1 ed25519:<hex>` (other roles' lines are allowed; a `gateway` line is then
    /// checked against --job's signer and a study's binding).
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// The job's public header (image.pub from share-image), signed by the gateway when its
    /// key is pinned: the output shares must be of its job, which must be --job-id's. Not a
    /// substitute for --job-id: whoever can write beside the shares can replace it with
    /// another job's genuine header.
    #[arg(long, value_name = "IMAGE_PUB", conflicts_with = "study")]
    pub job: Option<PathBuf>,
    /// Accept output shares that no server signed. For plain test files only: refused when
    /// a share is sealed.
    #[arg(long = "insecure-unsigned", conflicts_with_all = ["s0_key", "s1_key", "gateway_key", "trust"])]
    pub insecure_unsigned: bool,
}

impl OutputTrustArgs {
    /// The pinned S0 and S1 keys (both, and not the same), checked before any share is read.
    pub fn load(&self) -> Result<Trust> {
        if self.insecure_unsigned {
            return Ok(Trust::InsecureUnsigned);
        }
        let keys = pinned(
            self.trust.as_deref(),
            &[
                (Role::S0, &self.s0_key),
                (Role::S1, &self.s1_key),
                (Role::Gateway, &self.gateway_key),
            ],
        )?;
        for r in [Role::S0, Role::S1] {
            if !keys.iter().any(|(k, _)| *k == r) {
                bail!("whose output shares to accept: give both servers' public signing keys (--s0-key and --s1-key, their <name>.sign-pub, or --trust FILE with `s0` and `s1` lines); {} is missing (--insecure-unsigned takes unsigned plain shares, for tests)", r.flag());
            }
        }
        Ok(Trust::Pinned(keys))
    }

    /// The job `--job` names (its header verified, and signed by the pinned gateway key when
    /// `trust` pins one), which must be `want` (--job-id) when given; None without --job.
    pub fn job(&self, trust: &Trust, want: Option<Id>) -> Result<Option<Id>> {
        let Some(p) = &self.job else {
            return Ok(None);
        };
        let h = crate::formats::container::verify(p)?;
        crate::formats::container::expect(p, &h, Kind::PublicJob, None)?;
        if trust.key_of(Role::Gateway).is_some() {
            trust.check(p, &h)?;
        }
        let named = h
            .job_id
            .with_context(|| format!("{}: the job header names no job id", p.display()))?;
        if let Some(w) = want.filter(|w| *w != named) {
            bail!(
                "--job {}: is the header of job {}, not of the job expected (--job-id {})",
                p.display(),
                crate::formats::container::id_hex(&named),
                crate::formats::container::id_hex(&w)
            );
        }
        Ok(Some(named))
    }
}

/// The id of the `what` (job or study) the receiver expects (`flag`: 32 hex digits, as
/// `printer` printed it). Required when signatures are checked: they prove who made the files, not
/// that they are of the job awaited (another genuine job of the same gateway, with its
/// shares and facts, could be put in its place). Optional with --insecure-unsigned.
pub fn expected_id(
    given: Option<&str>,
    trust: &Trust,
    flag: &str,
    what: &str,
    printer: &str,
) -> Result<Option<Id>> {
    match given {
        Some(id) => crate::formats::study::parse_id(id)
            .map(Some)
            .with_context(|| {
                format!("{flag} {id}: not a {what} id (32 hex digits, as {printer} prints it)")
            }),
        None if matches!(trust, Trust::Pinned(_)) => bail!(
            "{flag}: which {what} the receiver expects: give the id {printer} printed (its \
             --json summary's `{what}_id`); the signatures prove who made the files, not that \
             they are of the {what} awaited"
        ),
        None => Ok(None),
    }
}

/// Whose completion records (`done.pN`) a study's dealer or `study-status` believes: the
/// servers' pinned keys. Without them a record is checked only against the key it names
/// itself, which anyone can make.
#[derive(Args, Clone, Default)]
pub struct RecordKeysArgs {
    /// S0's public signing key (its <name>.sign-pub, or `ed25519:<hex>`): a slice counts
    /// as finished by S0 only by a record signed with it.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub s0_key: Option<String>,
    /// S1's public signing key.
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub s1_key: Option<String>,
    /// A trust file instead of (or beside) --s0-key and --s1-key (its `s0` and `s1` lines;
    /// other roles' lines are not used here).
    #[arg(long = "trust", value_name = "FILE")]
    pub record_trust: Option<PathBuf>,
}

impl RecordKeysArgs {
    /// The servers' keys pinned for the records of `parties`, checked before any record is
    /// read: none given takes any record whose own signature verifies; some given must name
    /// every party read.
    pub fn load(&self, parties: &[Party]) -> Result<Trust> {
        let keys = pinned(
            self.record_trust.as_deref(),
            &[(Role::S0, &self.s0_key), (Role::S1, &self.s1_key)],
        )?;
        let keys: Vec<_> = keys
            .into_iter()
            .filter(|(r, _)| matches!(r, Role::S0 | Role::S1))
            .collect();
        if keys.is_empty() {
            return Ok(Trust::InsecureUnsigned);
        }
        for &p in parties {
            let r = Role::server(p);
            if !keys.iter().any(|(k, _)| *k == r) {
                bail!("whose completion records to believe: {} is missing (give both servers' keys, or neither)", r.flag());
            }
        }
        Ok(Trust::Pinned(keys))
    }
}
