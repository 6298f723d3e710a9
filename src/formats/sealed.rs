//! Files at rest encrypted to the party that reads them, in the age format (X25519
//! recipients, the `age` crate): a sealed file is an age file whose plaintext is the
//! container. Readers decrypt it transparently with the identities this process was given
//! (`--identity`), so every check after this layer runs unchanged on the plaintext.
//!
//! age authenticates the file (a changed byte fails its header MAC or a chunk's tag,
//! truncation fails the last-chunk flag) but not who made it: anyone holding a party's
//! public recipient can encrypt to it. That is why the container's own checks still run.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{bail, Context, Result};
use zeroize::Zeroize;

use super::error::FormatError;

/// The first bytes of every age file (and never of a container, which starts with MAGIC).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// The identities this process decrypts with. Process-wide like a keyring: a server reads
/// all its files with its one identity, set once from the command line.
static KEYRING: RwLock<Vec<(PathBuf, age::x25519::Identity)>> = RwLock::new(Vec::new());

/// Adds the identity in `path` (an age identity file, `AGE-SECRET-KEY-1...`) to the ones
/// this process decrypts with; returns its public recipient.
pub fn use_identity(path: &Path) -> Result<Recipient> {
    let id = load_identity(path)?;
    let r = Recipient(id.to_public());
    KEYRING
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.to_path_buf(), id));
    Ok(r)
}

/// Reads an age identity file: comment lines (`#`) and one `AGE-SECRET-KEY-1...` line.
pub fn load_identity(path: &Path) -> Result<age::x25519::Identity> {
    let mut text = read_small(path, "an age identity file")?;
    warn_if_readable(path);
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .map(str::parse::<age::x25519::Identity>);
    text.zeroize();
    match key {
        Some(Ok(id)) => Ok(id),
        Some(Err(e)) => bail!("{}: malformed age identity: {e}", path.display()),
        None => bail!(
            "{}: not an age identity file (no AGE-SECRET-KEY-1 line; `ppdenoise keygen` writes <name>.age-identity)",
            path.display()
        ),
    }
}

/// Warns when a private key file is readable by others than its owner.
pub fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "warning: {}: this private key is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    m.permissions().mode() & 0o777
                );
            }
        }
    }
}

/// Reads a key file of at most 4 KiB (a file swapped for a large one, or a device, is read
/// no further), as UTF-8.
fn read_small(path: &Path, what: &str) -> Result<String> {
    let f = File::open(path).with_context(|| format!("{}: cannot read {what}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(4097)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() > 4096 {
        bytes.zeroize();
        bail!("{}: over 4 KiB, not {what}", path.display());
    }
    String::from_utf8(bytes).map_err(|e| {
        let mut b = e.into_bytes();
        b.zeroize();
        anyhow::anyhow!("{}: not text, not {what}", path.display())
    })
}

/// A party's public file-encryption key (`age1...`).
#[derive(Clone)]
pub struct Recipient(age::x25519::Recipient);

impl Recipient {
    /// `spec` is an `age1...` string, or a file holding one (comment lines `#` allowed), as
    /// `keygen` writes it (<name>.age-recipient).
    pub fn parse(spec: &str) -> Result<Recipient> {
        let mut text = if spec.starts_with("age1") {
            spec.to_string()
        } else {
            read_small(Path::new(spec), "an age recipient (age1...) file")?
        };
        if text.contains("AGE-SECRET-KEY-") {
            text.zeroize();
            bail!("{spec}: is a private identity, not a recipient: give the <name>.age-recipient file and keep this one private");
        }
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .with_context(|| format!("{spec}: holds no age recipient"))?;
        line.parse::<age::x25519::Recipient>()
            .map(Recipient)
            .map_err(|e| anyhow::anyhow!("{spec}: not an X25519 age recipient (age1...): {e}"))
    }

    /// Wraps `out` so that what is written to it is encrypted to this recipient; the
    /// returned writer's `finish` must be called.
    pub fn seal<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        let enc = age::Encryptor::with_recipients(std::iter::once(&self.0 as &dyn age::Recipient))
            .context("age encryption setup")?;
        Ok(enc.wrap_output(out)?)
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A file opened for reading: plain, or sealed and decrypted on the fly (seekable, as the
/// streaming readers need).
pub enum Source {
    Plain(File),
    Sealed(Box<age::stream::StreamReader<std::io::BufReader<File>>>),
}

/// Where an age header must end, and how many recipient stanzas it may have.
const HEADER_LIMIT: usize = 4096;
const MAX_STANZAS: usize = 8;

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Plain(f) => f.read(buf),
            Source::Sealed(r) => r.read(buf),
        }
    }
}

impl Seek for Source {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            Source::Plain(f) => f.seek(pos),
            Source::Sealed(r) => r.seek(pos),
        }
    }
}

/// Opens `path` for reading, decrypting it when it is sealed; returns the source and the
/// length of its (plain) content. A sealed file that no identity of this process opens, or
/// whose encryption does not verify, is refused here, naming the file.
pub fn open(path: &Path) -> Result<(Source, u64), FormatError> {
    let (f, sealed_file) = open_raw(path)?;
    decrypt(path, f, sealed_file)
}

/// Opens `path` (the one open of the file) and tells whether it is sealed, before any
/// decryption: a reader that takes plain files only refuses a sealed one here.
pub fn open_raw(path: &Path) -> Result<(File, bool), FormatError> {
    let f = File::open(path).map_err(|e| FormatError::Io(path.into(), e))?;
    raw_from(path, f)
}

/// [`open_raw`] of `f`, the file already open at `path` (read from anywhere: it is read
/// again from its start).
pub fn raw_from(path: &Path, mut f: File) -> Result<(File, bool), FormatError> {
    let io = |e| FormatError::Io(path.into(), e);
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let sealed_file = starts_sealed(&mut f).map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok((f, sealed_file))
}

/// The plain content of `f`, opened by [`open_raw`] (`sealed_file` as it said), and its
/// length; a sealed file is decrypted with this process's identities.
pub fn decrypt(path: &Path, f: File, sealed_file: bool) -> Result<(Source, u64), FormatError> {
    let io = |e| FormatError::Io(path.into(), e);
    if !sealed_file {
        let len = f.metadata().map_err(io)?.len();
        return Ok((Source::Plain(f), len));
    }
    let mut f = f;
    let sealed = |what: String| FormatError::Sealed(path.into(), what);
    let keys = KEYRING.read().unwrap_or_else(|e| e.into_inner());
    if keys.is_empty() {
        return Err(sealed(
            "encrypted to a party's identity (age): give this party's identity with --identity"
                .into(),
        ));
    }
    // age's parser reads an unbounded header a byte at a time; a crafted one could keep a
    // server busy for hours. Ours are one stanza: the header must end within 4 KiB.
    let mut head = vec![0u8; HEADER_LIMIT];
    let got = read_up_to(&mut f, &mut head).map_err(io)?;
    let head = &head[..got];
    let stanzas = head.windows(4).filter(|w| w == b"\n-> ").count();
    if !head.windows(5).any(|w| w == b"\n--- ") || stanzas > MAX_STANZAS {
        return Err(sealed(
            "malformed age header (over 4 KiB, or too many recipients): modified or not made by ppdenoise".into(),
        ));
    }
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let dec = age::Decryptor::new_buffered(std::io::BufReader::new(f))
        .map_err(|e| sealed(decrypt_error(e)))?;
    let ids = keys.iter().map(|(_, id)| id as &dyn age::Identity);
    let mut r = match dec.decrypt(ids) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => {
            let names: Vec<_> = keys.iter().map(|(p, _)| p.display().to_string()).collect();
            return Err(sealed(format!(
                "not encrypted to this party (identity {}): another party's file, or its header was modified",
                names.join(", ")
            )));
        }
        Err(e) => return Err(sealed(decrypt_error(e))),
    };
    // The length comes from the last chunk, which is decrypted (and authenticated) for it.
    let len = r
        .seek(SeekFrom::End(0))
        .and_then(|len| r.seek(SeekFrom::Start(0)).map(|_| len))
        .map_err(|e| {
            sealed(format!(
                "the encrypted file does not verify ({e}): modified or truncated"
            ))
        })?;
    Ok((Source::Sealed(Box::new(r)), len))
}

fn decrypt_error(e: age::DecryptError) -> String {
    match e {
        age::DecryptError::InvalidMac | age::DecryptError::DecryptionFailed => {
            "the encrypted file does not verify: modified or truncated".into()
        }
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            "malformed age header: modified, truncated or not an age file".into()
        }
        age::DecryptError::Io(e) => format!("cannot read: {e}"),
        e => format!("cannot decrypt: {e}"),
    }
}

/// Whether `path` is a sealed (age) file.
pub fn is_sealed(path: &Path) -> std::io::Result<bool> {
    starts_sealed(&mut File::open(path)?)
}

/// Whether the file, read from where it stands, begins with the age magic line.
pub fn starts_sealed(f: &mut File) -> std::io::Result<bool> {
    let mut start = [0u8; AGE_MAGIC.len()];
    let n = read_up_to(f, &mut start)?;
    Ok(n == AGE_MAGIC.len() && start == AGE_MAGIC)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A fresh identity for `keygen`: the identity file's text (secret) and its recipient.
pub fn new_identity() -> (String, Recipient) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    (
        id.to_string().expose_secret().to_string(),
        Recipient(id.to_public()),
    )
}
