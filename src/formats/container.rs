//! The container shared by every file ppdenoise writes for another party:
//!
//! ```text
//! magic "PPDNOISE" | version u16 | header length u32 | header (bincode) |
//! body length u64 | body (bincode) | BLAKE3 of everything before (32 bytes) |
//! [ed25519 signature of that checksum (64 bytes), when the header names a signer]
//! ```
//!
//! The header is small, public and typed ([`Header`]); it is parsed and checked (kind, party,
//! ids, sizes against the file's real length) before the body is allocated or read.

use crate::ring::Party;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use bincode::Options;

// The header and the errors are part of the container's interface; they live below it so
// that the sealing and the signing use them without importing the container back.
pub use super::error::FormatError;
pub use super::header::{fresh_id, id_hex, Header, Id, Kind, MIN_VERSION, VERSION};
use super::sealed::{self, Recipient, Source};
use super::signing::{self, Signer, SIGNATURE_BYTES};

pub const MAGIC: &[u8; 8] = b"PPDNOISE";
/// The first version whose files may be signed.
const SIGNED_VERSION: u16 = 8;
/// The first version whose jobs name their colour planes ([`super::bodies::JobParams`]).
const COLOUR_VERSION: u16 = 9;
/// The first version whose seeded values are AES-256-CTR streams ([`crate::ring::share::Prg`]).
const STREAM_VERSION: u16 = 10;
/// The first version whose triplet files pack party 1's values at their widths.
pub const TRIPLET_WIDTH_VERSION: u16 = 10;
const PREFIX: usize = 8 + 2 + 4;
const MAX_HEADER: u64 = 1 << 20;
/// Largest body accepted (refused before allocation).
pub const MAX_BODY: u64 = 64 << 30;

/// How a file is written: sealed (encrypted) to its reader, signed by its maker; either or
/// both may be absent.
#[derive(Clone, Copy, Default)]
pub struct Seal<'a> {
    pub to: Option<&'a Recipient>,
    pub by: Option<&'a Signer>,
}

impl<'a> Seal<'a> {
    /// Neither sealed nor signed.
    pub const PLAIN: Seal<'static> = Seal { to: None, by: None };

    pub fn new(to: Option<&'a Recipient>, by: Option<&'a Signer>) -> Seal<'a> {
        Seal { to, by }
    }
}

fn opts() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

/// Serialises header and body into the container bytes.
pub fn encode<B: Serialize>(header: &Header, body: &B) -> anyhow::Result<Vec<u8>> {
    let blen = opts().serialized_size(body)?;
    let mut out = Vec::new();
    emit(&mut out, header, None, blen, |w| {
        Ok(opts().serialize_into(w, body)?)
    })?;
    Ok(out)
}

/// Passes bytes through to `inner` while hashing them (the container's trailing checksum).
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts the bytes passed through.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the whole container to `sink`: prefix, header, body length, the body that `body`
/// writes (it must be exactly `body_len` bytes), checksum, and with `by` the header names the
/// signer and its signature of the checksum follows. The one place that knows the layout.
fn emit<F>(
    sink: &mut dyn Write,
    header: &Header,
    by: Option<&Signer>,
    body_len: u64,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn Write) -> anyhow::Result<()>,
{
    let h = match by {
        Some(s) => {
            let mut signed = header.clone();
            s.mark(&mut signed);
            opts().serialize(&signed)?
        }
        None => {
            anyhow::ensure!(
                signing::signer_of(header) == Ok(None),
                "an unsigned file's header may not name a signer"
            );
            opts().serialize(header)?
        }
    };
    // What every reader refuses is not written (a graph's description can be long).
    anyhow::ensure!(
        h.len() as u64 <= MAX_HEADER,
        "its header would take {} bytes; a file's header may take at most {MAX_HEADER}",
        h.len()
    );
    let hashing = Hashing {
        inner: &mut *sink,
        hasher: blake3::Hasher::new(),
    };
    // Buffer before hashing: bincode writes one 8-byte value at a time.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, hashing);
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&(h.len() as u32).to_le_bytes())?;
    out.write_all(&h)?;
    out.write_all(&body_len.to_le_bytes())?;
    let mut counted = Counting {
        inner: &mut out,
        bytes: 0,
    };
    body(&mut counted)?;
    let written = counted.bytes;
    anyhow::ensure!(
        written == body_len,
        "the body came to {written} bytes, not the announced {body_len}"
    );
    let hashing = out.into_inner().map_err(|e| e.into_error())?;
    let sum = hashing.hasher.finalize();
    sink.write_all(sum.as_bytes())?;
    if let Some(s) = by {
        sink.write_all(&s.sign(sum.as_bytes()))?;
    }
    Ok(())
}

/// Writes a container file atomically. The body is serialised straight into the file, so a
/// large body is not held twice in memory.
/// With `seal.to`, the file is sealed (encrypted) to that recipient ([`sealed`]); with
/// `seal.by`, signed ([`signing`]).
pub fn write<B: Serialize>(
    path: &Path,
    header: &Header,
    body: &B,
    seal: Seal<'_>,
) -> anyhow::Result<()> {
    let blen = opts().serialized_size(body)?;
    write_streamed(path, header, blen, seal, |w| {
        Ok(opts().serialize_into(w, body)?)
    })
}

/// [`write`] as part of a set of files moved into place together ([`crate::fileio::atomic::Staged`]).
pub fn stage<B: Serialize>(
    set: &mut crate::fileio::atomic::Staged,
    path: &Path,
    header: &Header,
    body: &B,
    seal: Seal<'_>,
) -> anyhow::Result<()> {
    let blen = opts().serialized_size(body)?;
    set.add(path, |w| {
        emit_to(w, seal, header, blen, |w| {
            Ok(opts().serialize_into(w, body)?)
        })
    })
}

/// Writes a container whose body (`body_len` bytes) is produced piecewise by `body`, straight
/// into the file (atomically, like [`write`]); for bodies too large to build in memory first
/// (party 1's triplets). Writing more or fewer than `body_len` bytes is an error.
pub fn write_streamed<F>(
    path: &Path,
    header: &Header,
    body_len: u64,
    seal: Seal<'_>,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn Write) -> anyhow::Result<()>,
{
    crate::fileio::atomic::write_with(path, |w| emit_to(w, seal, header, body_len, body))
}

/// [`emit`], through age encryption to `seal.to` when given.
fn emit_to<F>(
    sink: &mut dyn Write,
    seal: Seal<'_>,
    header: &Header,
    body_len: u64,
    body: F,
) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn Write) -> anyhow::Result<()>,
{
    match seal.to {
        None => emit(sink, header, seal.by, body_len, body),
        Some(r) => {
            let mut w = r.seal(sink)?;
            emit(&mut w, header, seal.by, body_len, body)?;
            w.finish()?;
            Ok(())
        }
    }
}

/// Reads and checks the header only (cheap; for a file whose body this command does not
/// read: `inspect`, the dealer's public headers, and a spent triplet file, cut to its
/// header, whose sizes no longer hold: so no size check here).
pub fn read_header(path: &Path) -> Result<Header, FormatError> {
    let (mut f, len) = sealed::open(path)?;
    let (h, _) = read_prefix(path, &mut f, len)?;
    Ok(h)
}

fn read_prefix(path: &Path, f: &mut Source, len: u64) -> Result<(Header, Vec<u8>), FormatError> {
    let io = |e| FormatError::Io(path.into(), e);
    if len < PREFIX as u64 {
        // Too short to hold even the prefix: tell apart foreign files and truncated ones.
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(io)?;
        if !MAGIC.starts_with(&buf[..buf.len().min(8)]) || buf.is_empty() {
            return Err(FormatError::BadMagic(path.into()));
        }
        return Err(FormatError::Truncated(
            path.into(),
            format!("only {len} bytes"),
        ));
    }
    let mut pre = [0u8; PREFIX];
    f.read_exact(&mut pre).map_err(io)?;
    if &pre[..8] != MAGIC {
        return Err(FormatError::BadMagic(path.into()));
    }
    let ver = u16::from_le_bytes([pre[8], pre[9]]);
    if !(MIN_VERSION..=VERSION).contains(&ver) {
        return Err(FormatError::Version(path.into(), ver));
    }
    let hlen = u32::from_le_bytes(pre[10..14].try_into().unwrap()) as u64;
    if hlen > MAX_HEADER {
        return Err(FormatError::Absurd(
            path.into(),
            format!("header of {hlen} bytes"),
        ));
    }
    if PREFIX as u64 + hlen + 8 + 32 > len {
        return Err(FormatError::Truncated(
            path.into(),
            format!("header needs {hlen} bytes, file has {len}"),
        ));
    }
    let mut hbytes = vec![0u8; hlen as usize];
    f.read_exact(&mut hbytes).map_err(io)?;
    let header: Header = opts()
        .with_limit(hlen)
        .deserialize(&hbytes)
        .map_err(|e| FormatError::Malformed(path.into(), "header", e.to_string()))?;
    match signing::signer_of(&header) {
        Err(e) => return Err(FormatError::Malformed(path.into(), "header", e)),
        Ok(Some(_)) if ver < SIGNED_VERSION => {
            return Err(FormatError::Malformed(
                path.into(),
                "header",
                format!("names a signer, which files of version {ver} cannot"),
            ))
        }
        Ok(_) => {}
    }
    if let Some(why) = chain_cnn_refusal(&header) {
        return Err(FormatError::Outdated(
            path.into(),
            header.kind.name(),
            ver,
            why,
        ));
    }
    if header.kind == Kind::GraphModelShare && ver < 9 {
        return Err(FormatError::Malformed(
            path.into(),
            "header",
            format!("names a graph model share, which files of version {ver} cannot"),
        ));
    }
    if matches!(
        header.kind,
        Kind::ImageShare | Kind::Triplets | Kind::OutputShare
    ) && ver < COLOUR_VERSION
    {
        return Err(FormatError::Outdated(
            path.into(),
            header.kind.name(),
            ver,
            "its body's job lacks the image's colour planes: share the image again with \
             `share-image` (then deal and serve it again)",
        ));
    }
    // Before any body is read or randomness claimed: an older body's values would be
    // misread as packed ones.
    if header.kind == Kind::Triplets && ver < TRIPLET_WIDTH_VERSION {
        return Err(FormatError::OlderDealer(path.into(), ver));
    }
    if header.kind == Kind::ModelShare && ver < 7 {
        return Err(FormatError::Outdated(
            path.into(),
            Kind::ModelShare.name(),
            ver,
            "its body lacks the hidden layers' activation: share the model again with \
             `share-model` (then make its model mask and opened weights again too)",
        ));
    }
    if ver < STREAM_VERSION {
        if let Some(again) = made_again(header.kind) {
            return Err(FormatError::Outdated(
                path.into(),
                header.kind.name(),
                ver,
                again,
            ));
        }
    }
    let mut all = Vec::with_capacity(PREFIX + hbytes.len());
    all.extend_from_slice(&pre);
    all.extend_from_slice(&hbytes);
    Ok((header, all))
}

/// Why a file made for a chain CNN's job by a build before version 11 is refused (none for
/// other files): this build runs a chain CNN as a graph, from a graph share. An output
/// share is still read: the receiver decodes it as a graph job's.
fn chain_cnn_refusal(h: &Header) -> Option<&'static str> {
    let chain = h.kind == Kind::RetiredCnnModelShare
        || (h.info(super::header::NETWORK) == Some(super::header::CNN)
            && h.kind != Kind::OutputShare);
    chain.then_some(
        "it was made for a chain CNN's job (DnCNN, FFDNet), which this build runs as a \
         graph: share the model again with `share-model` (then share the image, and deal \
         and serve the job, again)",
    )
}

/// For a kind whose values come from seeds, why a file older than [`STREAM_VERSION`] is
/// refused and how to make it again: its seeds no longer give the values it was made with.
fn made_again(kind: Kind) -> Option<&'static str> {
    macro_rules! again {
        ($how:literal) => {
            concat!(
                "its values were drawn from seeds' ChaCha20 streams, which this build no \
                 longer draws: ",
                $how
            )
        };
    }
    Some(match kind {
        Kind::ModelShare | Kind::RetiredCnnModelShare | Kind::GraphModelShare => again!(
            "share the model again with `share-model` (then its model mask, opened weights \
             and triplets)"
        ),
        Kind::ImageShare => {
            again!("share the image again with `share-image` (then deal and serve it again)")
        }
        Kind::ModelMask | Kind::DealerMask => again!(
            "make the model's mask again with `gen-model-mask` (then open the weights \
             again with `open-weights` and deal the jobs with `gen-triplets`)"
        ),
        Kind::OpenedWeights => again!("open the weights again with `open-weights`"),
        // Refused before this, as made by an older dealer (`FormatError::OlderDealer`).
        Kind::Triplets => return None,
        Kind::OutputShare
        | Kind::PublicModel
        | Kind::PublicJob
        | Kind::StudyBinding
        | Kind::ReceiverFacts
        | Kind::ReceiverAlpha => return None,
    })
}

/// A container opened once: unsealed, its header read and checked (magic, version, signer
/// entries), its sizes checked against the file's length, positioned at the start of its
/// body with the hash of everything before the body taken. Every later step (kind and
/// party, the reader's pinned keys, the body, the checksum, the signature) reads this one
/// handle, so a file swapped in at the path meanwhile is never read.
pub struct Opened {
    path: PathBuf,
    file: Source,
    header: Header,
    body_len: u64,
    hasher: blake3::Hasher,
    sealed: bool,
    /// The file's (plain) length, and the length its header and body length announce.
    len: u64,
    expected: u64,
}

impl Opened {
    /// Opens `path`, sealed or plain.
    pub fn open(path: &Path) -> Result<Opened, FormatError> {
        let (f, sealed) = sealed::open_raw(path)?;
        Opened::from_raw(path, f, sealed)
    }

    /// Opens the file `f`, already open at `path` (for a reader that told what kind of file
    /// it is from its first bytes: `inspect`), so that the file is opened once.
    pub fn from_file(path: &Path, f: std::fs::File) -> Result<Opened, FormatError> {
        let (f, sealed) = sealed::raw_from(path, f)?;
        Opened::from_raw(path, f, sealed)
    }

    /// Opens the file `f`, already open at `path` ([`Opened::from_file`]), refusing a sealed
    /// file (before decrypting it) with `why`: for readers that take plain files only
    /// (`--insecure-unsigned`).
    pub fn from_file_plain_only(
        path: &Path,
        f: std::fs::File,
        why: &str,
    ) -> Result<Opened, FormatError> {
        let (f, sealed) = sealed::raw_from(path, f)?;
        if sealed {
            return Err(FormatError::Sealed(path.into(), why.into()));
        }
        Opened::from_raw(path, f, sealed)
    }

    fn from_raw(path: &Path, f: std::fs::File, sealed_file: bool) -> Result<Opened, FormatError> {
        let io = |e| FormatError::Io(path.into(), e);
        let (mut f, len) = sealed::decrypt(path, f, sealed_file)?;
        let (header, seen) = read_prefix(path, &mut f, len)?;
        let mut lb = [0u8; 8];
        f.read_exact(&mut lb).map_err(io)?;
        let blen = u64::from_le_bytes(lb);
        let expected = (seen.len() as u64 + 8)
            .saturating_add(blen)
            .saturating_add(32 + trailer_signature(&header));
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seen);
        hasher.update(&lb);
        Ok(Opened {
            path: path.into(),
            file: f,
            header,
            body_len: blen,
            hasher,
            sealed: sealed_file,
            len,
            expected,
        })
    }

    /// The body's size checks, before any of it is read or allocated (not at open: a spent
    /// triplet file, cut to its header, is named as consumed by its header's checks first).
    fn sizes(&self) -> Result<(), FormatError> {
        let (blen, len, expected) = (self.body_len, self.len, self.expected);
        if blen > MAX_BODY {
            return Err(FormatError::Absurd(
                self.path.clone(),
                format!("body of {blen} bytes"),
            ));
        }
        if expected != len {
            return Err(FormatError::Truncated(
                self.path.clone(),
                format!("expected {expected} bytes, file has {len}"),
            ));
        }
        Ok(())
    }

    /// The header, checked for what a header alone can tell (its signature is verified with
    /// the body, by [`Opened::read`], [`Opened::verify`] or the streaming reader).
    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was sealed (encrypted) at rest.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Checks kind and party ([`expect`]).
    pub fn expect(&self, kind: Kind, party: Option<Party>) -> Result<(), FormatError> {
        expect(&self.path, &self.header, kind, party)
    }

    /// Reads the body: kind and party checked first, then the body read, the checksum and
    /// (for a signed file) the signature verified, and only then the body decoded.
    pub fn read<B: DeserializeOwned>(
        self,
        kind: Kind,
        party: Option<Party>,
    ) -> Result<(Header, B), FormatError> {
        self.expect(kind, party)?;
        self.read_any()
    }

    /// [`Opened::read`] of a file whose kind and party the caller checked.
    pub fn read_any<B: DeserializeOwned>(self) -> Result<(Header, B), FormatError> {
        self.sizes()?;
        let Opened {
            path,
            file: mut f,
            header,
            body_len: blen,
            mut hasher,
            ..
        } = self;
        let mut body = vec![0u8; blen as usize];
        f.read_exact(&mut body)
            .map_err(|e| FormatError::Io(path.clone(), e))?;
        hasher.update(&body);
        check_trailer(&path, &mut f, &hasher, &header)?;
        let b: B = opts()
            .with_limit(blen)
            .deserialize(&body)
            .map_err(|e| FormatError::Malformed(path, "body", e.to_string()))?;
        Ok((header, b))
    }

    /// Checks the file completely (sizes, checksum, signature) without decoding its body;
    /// streams it, so it needs no memory for large triplet files.
    pub fn verify(self) -> Result<Header, FormatError> {
        self.sizes()?;
        let Opened {
            path,
            mut file,
            header,
            body_len,
            mut hasher,
            ..
        } = self;
        let copied = std::io::copy(&mut (&mut file).take(body_len), &mut hasher)
            .map_err(|e| FormatError::Io(path.clone(), e))?;
        if copied != body_len {
            return Err(FormatError::Truncated(
                path,
                format!("body ended after {copied} of {body_len} bytes"),
            ));
        }
        check_trailer(&path, &mut file, &hasher, &header)?;
        Ok(header)
    }

    /// For a reader that decodes the body piecewise (party 1's triplets): the header, the
    /// handle positioned at the start of the body, the body's length and the hash of
    /// everything before it; the caller hashes the body through the same handle and ends
    /// with [`check_trailer`].
    pub fn into_body(self) -> Result<(Header, Source, u64, blake3::Hasher), FormatError> {
        self.sizes()?;
        Ok((self.header, self.file, self.body_len, self.hasher))
    }
}

/// Bytes of signature after the checksum of a file with this (checked) header.
fn trailer_signature(h: &Header) -> u64 {
    match signing::signer_of(h) {
        Ok(Some(_)) => SIGNATURE_BYTES as u64,
        _ => 0,
    }
}

/// Reads the trailing checksum and compares it with the hash of everything before it; for a
/// signed file (its header, read from this file, names the signer), reads the signature
/// that follows and verifies it under the named key. Every reader of a whole file ends here.
pub fn check_trailer(
    path: &Path,
    f: &mut dyn Read,
    hasher: &blake3::Hasher,
    header: &Header,
) -> Result<(), FormatError> {
    let io = |e| FormatError::Io(path.into(), e);
    let mut sum = [0u8; 32];
    f.read_exact(&mut sum).map_err(io)?;
    if hasher.finalize().as_bytes() != &sum {
        return Err(FormatError::Checksum(path.into()));
    }
    let signer =
        signing::signer_of(header).map_err(|e| FormatError::Malformed(path.into(), "header", e))?;
    if let Some(s) = signer {
        let mut sig = [0u8; SIGNATURE_BYTES];
        f.read_exact(&mut sig).map_err(io)?;
        if !signing::verifies(&s.key, &sum, &sig) {
            return Err(FormatError::Signature(path.into()));
        }
    }
    Ok(())
}

/// Checks a container completely (sizes, checksum, signature) without decoding its body, in
/// one open: [`Opened::verify`] of [`Opened::open`]. For tests and tools that read a file
/// once; a command reads its inputs through [`Opened`] (`formats::inputs`).
pub fn verify(path: &Path) -> Result<Header, FormatError> {
    Opened::open(path)?.verify()
}

/// Bincode options of container bodies (for readers that decode a body piecewise).
pub fn body_options() -> impl Options {
    opts()
}

/// Reads a whole container in one open ([`Opened::read_any`]), checking sizes before
/// allocation and the checksum before decoding the body. For tests and tools, as [`verify`].
pub fn read<B: DeserializeOwned>(path: &Path) -> Result<(Header, B), FormatError> {
    Opened::open(path)?.read_any()
}

/// Checks kind and party of a header read from `path`.
pub fn expect(
    path: &Path,
    h: &Header,
    kind: Kind,
    party: Option<Party>,
) -> Result<(), FormatError> {
    if h.kind != kind {
        return Err(FormatError::WrongKind {
            path: path.into(),
            expected: kind.name(),
            found: h.kind.name(),
        });
    }
    if let Some(p) = party {
        if h.party != u8::from(p) {
            return Err(FormatError::WrongParty {
                path: path.into(),
                expected: p.into(),
                found: h.party,
            });
        }
    }
    if h.ring_bits != 64 {
        return Err(FormatError::Mismatch {
            path: path.into(),
            what: format!("ring of {} bits; only Z_2^64 is supported", h.ring_bits),
        });
    }
    Ok(())
}
