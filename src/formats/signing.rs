//! Files signed by the party that made them (ed25519, through `ring`).
//!
//! age seals a file to its reader but says nothing of who wrote it: anyone holding a
//! server's public recipient can make a file that server opens. So the dealer, the model
//! owner and the gateway each sign what they write, and a server accepts a file only when
//! it is signed by the key it pinned for that file's maker.
//!
//! What is signed: the container's trailing BLAKE3 checksum, which covers the magic, the
//! version, the header and the body. The header names the signer (`signer`, its public
//! key, and `signer_role`), so the key and the role are inside what the signature covers;
//! the 64-byte signature follows the checksum ([`SIGNATURE_BYTES`]). A header that names a
//! signer makes a file whose signature must verify under that key, wherever it is read
//! (the container's own check); whether that key is the one a reader trusts for the role is
//! [`Trust::check`], which servers run on every input before anything is claimed.
//!
//! The servers sign what they write too: each output share as S0 or S1
//! ([`Trust::check_output`], run by the receiver), and each study completion record
//! ([`Signer::sign_record`]). Sealing an output share to the receiver proves nothing of who
//! made it (the receiver's recipient is public); the signature does.

use crate::ring::Party;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroize;

use super::header::{Header, Kind};

/// Bytes of the signature that follows a signed container's checksum.
pub const SIGNATURE_BYTES: usize = 64;
/// The header's entries naming the signer.
pub const SIGNER: &str = "signer";
pub const SIGNER_ROLE: &str = "signer_role";
/// Prefix of a public key in text (header entries, `.sign-pub` files, trust files).
const PUB_PREFIX: &str = "ed25519:";
/// The private key line of a `.sign-key` file: this, then the PKCS#8 document in hex.
const KEY_PREFIX: &str = "PPDENOISE-SIGN-KEY-1:";
/// Domain of the signed message, so a signature made here is never valid for anything else.
const DOMAIN: &[u8] = b"ppdenoise signed container v1\0";
/// Domain of a signed record (a study's `done.pN`): never valid as a container's signature.
const RECORD_DOMAIN: &[u8] = b"ppdenoise signed record v1\0";

/// Who makes which files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `gen-triplets`, `gen-model-mask`.
    Dealer,
    /// `share-model`.
    Owner,
    /// `share-image`, `share-study` (and its study binding).
    Gateway,
    /// `serve --party 0`: S0's output shares and completion records.
    S0,
    /// `serve --party 1`.
    S1,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Dealer, Role::Owner, Role::Gateway, Role::S0, Role::S1];

    pub fn name(self) -> &'static str {
        match self {
            Role::Dealer => "dealer",
            Role::Owner => "owner",
            Role::Gateway => "gateway",
            Role::S0 => "s0",
            Role::S1 => "s1",
        }
    }

    /// The server role of party `p`, whose output shares it signs.
    pub fn server(p: Party) -> Role {
        match p {
            Party::S0 => Role::S0,
            Party::S1 => Role::S1,
        }
    }

    /// [`Role::server`] of a party number as a header or record stores it; `None` for
    /// anything but 0 or 1.
    pub fn server_u8(p: u8) -> Option<Role> {
        Party::try_from(p).ok().map(Role::server)
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The flag that pins this role's key on a reader's command line.
    pub fn flag(self) -> &'static str {
        match self {
            Role::Dealer => "--dealer-key",
            Role::Owner => "--owner-key",
            Role::Gateway => "--gateway-key",
            Role::S0 => "--s0-key",
            Role::S1 => "--s1-key",
        }
    }

    /// The maker of a file of `kind`, for the kinds a server reads from another party.
    pub fn of(kind: Kind) -> Option<Role> {
        match kind {
            Kind::Triplets | Kind::ModelMask | Kind::DealerMask => Some(Role::Dealer),
            Kind::ModelShare
            | Kind::RetiredCnnModelShare
            | Kind::GraphModelShare
            | Kind::PublicModel => Some(Role::Owner),
            Kind::ImageShare
            | Kind::PublicJob
            | Kind::StudyBinding
            | Kind::ReceiverFacts
            | Kind::ReceiverAlpha => Some(Role::Gateway),
            Kind::OutputShare | Kind::OpenedWeights => None,
        }
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// `ed25519:<64 hex digits>`, or a file holding one (comment lines `#` allowed), as
    /// `keygen --signing` writes it (<name>.sign-pub).
    pub fn parse(spec: &str) -> Result<PublicKey> {
        let text = if spec.starts_with(PUB_PREFIX) {
            spec.to_string()
        } else {
            let bytes = read_small(Path::new(spec))?;
            if bytes.contains(KEY_PREFIX) {
                bail!("{spec}: is a private signing key, not a public one: give the <name>.sign-pub file and keep this one private");
            }
            bytes
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .with_context(|| format!("{spec}: holds no public key"))?;
        PublicKey::from_text(line).with_context(|| {
            format!("{spec}: not a ppdenoise signing public key (ed25519:<64 hex digits>)")
        })
    }

    /// `ed25519:<64 hex digits>`, as headers, records and trust files hold it.
    pub fn from_text(s: &str) -> Result<PublicKey> {
        let hex = s.strip_prefix(PUB_PREFIX).context("no ed25519: prefix")?;
        let mut k = [0u8; 32];
        hex::decode_to_slice(hex, &mut k).context("not 64 hex digits")?;
        Ok(PublicKey(k))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUB_PREFIX}{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Reads a key or trust file of at most 16 KiB as UTF-8.
fn read_small(path: &Path) -> Result<String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut bytes = Vec::new();
    f.take(16 * 1024 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() > 16 * 1024 {
        bytes.zeroize();
        bail!("{}: over 16 KiB, not a key or trust file", path.display());
    }
    String::from_utf8(bytes).map_err(|e| {
        e.into_bytes().zeroize();
        anyhow::anyhow!("{}: not text, not a key or trust file", path.display())
    })
}

/// A party's private signing key and the role it signs as.
pub struct Signer {
    key: Ed25519KeyPair,
    public: PublicKey,
    role: Role,
}

impl Signer {
    /// Loads a `<name>.sign-key` file (from `keygen --signing`) to sign as `role`.
    pub fn load(path: &Path, role: Role) -> Result<Signer> {
        let mut text = read_small(path)?;
        super::sealed::warn_if_readable(path);
        let line = text
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(KEY_PREFIX))
            .map(hex::decode);
        text.zeroize();
        let mut der = match line {
            Some(Ok(der)) => der,
            Some(Err(_)) => bail!("{}: malformed signing key (not hex)", path.display()),
            None => bail!(
                "{}: not a ppdenoise signing key (no {KEY_PREFIX} line; `ppdenoise keygen --signing` writes <name>.sign-key)",
                path.display()
            ),
        };
        let key = Ed25519KeyPair::from_pkcs8(&der);
        der.zeroize();
        let key =
            key.map_err(|e| anyhow::anyhow!("{}: malformed signing key: {e}", path.display()))?;
        let public = PublicKey(key.public_key().as_ref().try_into().expect("32 bytes"));
        Ok(Signer { key, public, role })
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Names this signer in `h` (replacing any earlier entries), before the file is written.
    pub fn mark(&self, h: &mut Header) {
        h.info.retain(|(n, _)| n != SIGNER && n != SIGNER_ROLE);
        h.info.push((SIGNER.into(), self.public.to_string()));
        h.info.push((SIGNER_ROLE.into(), self.role.name().into()));
    }

    /// The signature of a container whose checksum is `sum`.
    pub fn sign(&self, sum: &[u8; 32]) -> [u8; SIGNATURE_BYTES] {
        self.key
            .sign(&message(sum))
            .as_ref()
            .try_into()
            .expect("64 bytes")
    }

    /// The signature of a record (not a container) whose digest is `digest`.
    pub fn sign_record(&self, digest: &[u8; 32]) -> [u8; SIGNATURE_BYTES] {
        self.key
            .sign(&[RECORD_DOMAIN, digest.as_slice()].concat())
            .as_ref()
            .try_into()
            .expect("64 bytes")
    }
}

fn message(sum: &[u8; 32]) -> Vec<u8> {
    [DOMAIN, sum.as_slice()].concat()
}

/// Whether `sig` is `key`'s signature of the record whose digest is `digest`.
pub fn record_verifies(key: &PublicKey, digest: &[u8; 32], sig: &[u8; SIGNATURE_BYTES]) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, key.0)
        .verify(&[RECORD_DOMAIN, digest.as_slice()].concat(), sig)
        .is_ok()
}

/// A fresh key pair for `keygen --signing`: the private key file's text and the public key.
pub fn new_key(name: &str) -> Result<(String, PublicKey)> {
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a signing key"))?;
    let key = Ed25519KeyPair::from_pkcs8(doc.as_ref())
        .map_err(|e| anyhow::anyhow!("generated signing key refused: {e}"))?;
    let public = PublicKey(key.public_key().as_ref().try_into().expect("32 bytes"));
    let text = format!(
        "# ppdenoise signing key of {name} (private)\n# public key: {public}\n{KEY_PREFIX}{}\n",
        hex::encode(doc.as_ref())
    );
    Ok((text, public))
}

/// Who signed a file, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed {
    pub key: PublicKey,
    pub role: Role,
}

/// The signer a header names: None for an unsigned file; an error for entries that are
/// repeated, half present or malformed (so that every reader sees one signer or none).
pub fn signer_of(h: &Header) -> Result<Option<Signed>, String> {
    let all = |name: &str| -> Vec<&str> {
        h.info
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    match (all(SIGNER).as_slice(), all(SIGNER_ROLE).as_slice()) {
        ([], []) => Ok(None),
        ([k], [r]) => {
            let key = PublicKey::from_text(k).map_err(|e| format!("signer {k:?}: {e}"))?;
            let role = Role::parse(r).ok_or_else(|| format!("unknown signer role {r:?}"))?;
            Ok(Some(Signed { key, role }))
        }
        (k, r) => Err(format!(
            "{} signer and {} signer role entries (one of each, or none)",
            k.len(),
            r.len()
        )),
    }
}

/// Whether `sig` is `key`'s signature of the container whose checksum is `sum`.
pub fn verifies(key: &PublicKey, sum: &[u8; 32], sig: &[u8; SIGNATURE_BYTES]) -> bool {
    UnparsedPublicKey::new(&signature::ED25519, key.0)
        .verify(&message(sum), sig)
        .is_ok()
}

/// Which signers a reader accepts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Each role's pinned key: a file must be signed by its maker's.
    Pinned(Vec<(Role, PublicKey)>),
    /// `--insecure-unsigned`: files are taken whoever made them (plain files only).
    InsecureUnsigned,
}

impl Trust {
    /// Checks that the file at `path`, whose verified header is `h`, was signed by the key
    /// pinned for its maker. Its signature itself was verified by the container's reader.
    pub fn check(&self, path: &Path, h: &Header) -> Result<()> {
        let signed = signer_of(h).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let Trust::Pinned(keys) = self else {
            return Ok(());
        };
        // Only the makers' files are checked here: a kind no maker signs (an output share,
        // opened weights) is refused rather than waved through, so that a file relabelled as
        // one cannot pass for a share.
        let Some(role) = Role::of(h.kind) else {
            bail!(
                "{}: a {} is not made by the dealer, the model owner or the gateway, and is not what this server reads here",
                path.display(),
                h.kind.name()
            );
        };
        want_signed(path, h, role, keys, signed)
    }

    /// The receiver's check of an output share whose verified header is `h`: signed by the
    /// key pinned for the server whose share it says it is (S0's or S1's), so that no one
    /// else, holding only public files and the receiver's public recipient, can make one.
    pub fn check_output(&self, path: &Path, h: &Header) -> Result<()> {
        let signed = signer_of(h).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let Trust::Pinned(keys) = self else {
            return Ok(());
        };
        let role = match (h.kind, Role::server_u8(h.party)) {
            (Kind::OutputShare, Some(r)) => r,
            _ => bail!(
                "{}: a {} of party {}, not an output share of S0 or S1",
                path.display(),
                h.kind.name(),
                h.party
            ),
        };
        want_signed(path, h, role, keys, signed)
    }

    /// The key pinned for `role`, if any.
    pub fn key_of(&self, role: Role) -> Option<PublicKey> {
        match self {
            Trust::Pinned(keys) => keys.iter().find(|(r, _)| *r == role).map(|(_, k)| *k),
            Trust::InsecureUnsigned => None,
        }
    }

    /// Reads a trust file: lines `<role> <public key>` (`dealer`, `owner`, `gateway`, `s0`,
    /// `s1`), `#` comments and blank lines; each role at most once.
    pub fn parse_file(path: &Path) -> Result<Vec<(Role, PublicKey)>> {
        let text = read_small(path)?;
        let mut out: Vec<(Role, PublicKey)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("{}: line {}", path.display(), i + 1);
            let (r, k) = line
                .split_once(char::is_whitespace)
                .with_context(|| format!("{}: expected `<role> ed25519:<hex>`", at()))?;
            let role = Role::parse(r.trim()).with_context(|| {
                format!(
                    "{}: unknown role {r:?} (dealer, owner, gateway, s0 or s1)",
                    at()
                )
            })?;
            let key = PublicKey::from_text(k.trim())
                .with_context(|| format!("{}: not a public key (ed25519:<64 hex digits>)", at()))?;
            if out.iter().any(|(o, _)| *o == role) {
                bail!("{}: a second {} key", at(), role.name());
            }
            out.push((role, key));
        }
        Ok(out)
    }
}

/// A file of `role`'s making, signed as `signed` (its header's signer): refused unless that
/// is the key pinned for `role`.
fn want_signed(
    path: &Path,
    h: &Header,
    role: Role,
    keys: &[(Role, PublicKey)],
    signed: Option<Signed>,
) -> Result<()> {
    let Some((_, want)) = keys.iter().find(|(r, _)| *r == role) else {
        bail!(
            "{}: a {} is made by the {}, whose key was not given: give {} (its <name>.sign-pub), or a --trust file naming it",
            path.display(),
            h.kind.name(),
            role.name(),
            role.flag()
        );
    };
    match signed {
        None => bail!(
            "{}: not signed; a {} is accepted only signed by the {} ({want}): have it made with --sign-key, or run with --insecure-unsigned (plain files only)",
            path.display(),
            h.kind.name(),
            role.name()
        ),
        Some(s) if s.role != role => bail!(
            "{}: signed by a {} ({}), but a {} is made by the {}",
            path.display(),
            s.role.name(),
            s.key,
            h.kind.name(),
            role.name()
        ),
        Some(s) if s.key != *want => bail!(
            "{}: signed by {} ({}), not by the pinned {} key {want}",
            path.display(),
            s.key,
            s.role.name(),
            role.name()
        ),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sign-key");
        let (text, public) = new_key("d").unwrap();
        std::fs::write(&path, text).unwrap();
        let s = Signer::load(&path, Role::Dealer).unwrap();
        assert_eq!(s.public(), public);
        let sum = [7u8; 32];
        let sig = s.sign(&sum);
        assert!(verifies(&public, &sum, &sig));
        let mut other = sum;
        other[31] ^= 1;
        assert!(!verifies(&public, &other, &sig));
        let (_, stranger) = new_key("e").unwrap();
        assert!(!verifies(&stranger, &sum, &sig));
    }

    #[test]
    fn headers_name_one_signer_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sign-key");
        std::fs::write(&path, new_key("o").unwrap().0).unwrap();
        let s = Signer::load(&path, Role::Owner).unwrap();
        let mut h = Header::new(Kind::ModelShare, Party::S0, 16);
        assert_eq!(signer_of(&h), Ok(None));
        s.mark(&mut h);
        s.mark(&mut h);
        assert_eq!(
            signer_of(&h),
            Ok(Some(Signed {
                key: s.public(),
                role: Role::Owner
            }))
        );
        h.info.push((SIGNER.into(), s.public().to_string()));
        assert!(signer_of(&h).is_err());
    }

    #[test]
    fn pinned_trust_refuses_a_kind_no_maker_signs() {
        // A share relabelled as an output share or opened weights would carry no signer to
        // check: under pinned keys such a header is refused, not waved through.
        let (_, k) = new_key("d").unwrap();
        let pinned = Trust::Pinned(vec![(Role::Owner, k)]);
        let p = Path::new("model.p0");
        for kind in [Kind::OutputShare, Kind::OpenedWeights] {
            let h = Header::new(kind, Party::S0, 16);
            let e = pinned.check(p, &h).unwrap_err().to_string();
            assert!(e.contains("is not made by the dealer"), "{e}");
            Trust::InsecureUnsigned.check(p, &h).unwrap();
        }
    }

    #[test]
    fn trust_files_parse_and_refuse_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let (_, k) = new_key("d").unwrap();
        let p = dir.path().join("trust");
        std::fs::write(&p, format!("# who\ndealer {k}\n\nowner  {k}\n")).unwrap();
        let t = Trust::parse_file(&p).unwrap();
        assert_eq!(t, vec![(Role::Dealer, k), (Role::Owner, k)]);
        std::fs::write(&p, format!("dealer {k}\ndealer {k}\n")).unwrap();
        assert!(Trust::parse_file(&p)
            .unwrap_err()
            .to_string()
            .contains("second dealer"));
        std::fs::write(&p, format!("server {k}\n")).unwrap();
        assert!(Trust::parse_file(&p)
            .unwrap_err()
            .to_string()
            .contains("unknown role"));
    }
}
