//! A study's files: many slices, each its own job, in one folder (`share-study`).
//!
//! ```text
//! DIR/study.json            public: the study id and each slice's job id (dealer, servers)
//! DIR.sources.json          beside the folder, not in it: the gateway's and receiver's map
//!                           of where each slice came from (file names can name a patient),
//!                           so that a copy of the folder never carries it to a server
//! DIR.sources.json.sig      beside it: the study binding, a container signed by the gateway
//!                           holding the study id and, in order, every slice's job id and
//!                           receiver's facts (what the sources file says, but its folder),
//!                           so that no one who can write the sources file or the folder can
//!                           swap slices or the files they are written back as
//! DIR/slice<I>/image.p<P>   slice I's image share (image.pub: its public job header)
//! DIR/slice<I>/triplets.p<P>
//! DIR/slice<I>/out.p<P>     server P's output share of slice I
//! DIR/slice<I>/done.p<P>    server P's record that slice I is finished, signed by it: the ids
//!                           of the run, the output's size and the hash of the file as
//!                           written, sealed or signed (which no guess at the output
//!                           reproduces; an unsigned plain share's record holds no hash)
//! ```
//! A study resumes by these records: a server skips a slice whose record names the run of
//! its current triplets and an intact output; a slice with no record on either side is dealt
//! again (fresh triplets, so both servers redo it).

use crate::ring::Party;
use std::io::{Read, Seek, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::container::{self, Header, Kind, Seal};
use super::signing::{record_verifies, PublicKey, Role, Signer, Trust, SIGNATURE_BYTES};
use crate::fileio::atomic;
use crate::fileio::bounded::{open_at_most, read_at_most};
use crate::image::series::StudyKind;
use crate::image::window::Window;
use crate::image::Format;

pub const MANIFEST: &str = "study.json";

/// Where the receiver's sources file of the study folder `dir` goes by default:
/// `<dir>.sources.json`, beside the folder.
pub fn default_sources(dir: &Path) -> PathBuf {
    let mut s = dir.components().as_path().as_os_str().to_os_string();
    s.push(".sources.json");
    PathBuf::from(s)
}
/// Where the study binding of the sources file `sources` goes by default: `<sources>.sig`.
pub fn default_binding(sources: &Path) -> PathBuf {
    let mut s = sources.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

const FORMAT_TAG: &str = "ppdenoise-study";
const VERSION: u32 = 1;
/// Most slices in a study (a CT series has hundreds; this bounds what a manifest sizes).
pub const MAX_SLICES: usize = 100_000;
/// Largest manifest read (refused before it is parsed).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// `study.json`: what every party may read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub study_id: String,
    /// Slice I's job id (hex), in the study's order.
    pub slices: Vec<String>,
}

/// `study.sources.json`: the receiver's map from slices back to the input's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub format: String,
    pub version: u32,
    pub study_id: String,
    /// The folder the slices were read from (the DICOM templates of a derived series).
    pub input_dir: PathBuf,
    pub kind: StudyKind,
    pub slices: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The file's name in `input_dir` (the output's name too).
    pub file: String,
    pub format: Format,
    pub bit_depth: u8,
    pub height: usize,
    pub width: usize,
    pub job_id: String,
    /// BLAKE3 of the input file when it was shared: a DICOM output is made like that file,
    /// so it must still be the same.
    pub blake3: String,
    /// The frame of a multi-frame input this slice is (kind `multi-frame`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<usize>,
    /// A colour slice's planes (3: RGB; `height` is a plane's); none for gray.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colours: Option<usize>,
    /// A DICOM slice's value window (in its units), which the model's 0..255 scale spanned:
    /// derived from the pixels for `auto`, so it stays with the receiver, never the servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// The sigma*/sigma scaling the slice was encoded with, when it was derived from its
    /// pixels and its job holds a stand-in ([`super::bodies::JobParams::private_pre`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_scale: Option<f64>,
    /// The slice's noise level on the model's scale, with `noise_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
}

/// The study binding's body: what the gateway signs of a study, the sources file without its
/// folder (which the receiver may correct when the input moved). JSON text inside the
/// container, since [`Source`]'s optional fields are left out when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    pub format: String,
    pub version: u32,
    pub study_id: String,
    pub kind: StudyKind,
    /// Every slice in the study's order: its job id and the receiver's facts of it.
    pub slices: Vec<Source>,
}

/// `done.p<P>`: a server finished a slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Done {
    /// 0 or 1, a number in the record's JSON (as [`Header::party`](super::header::Header)).
    pub party: u8,
    pub job_id: String,
    pub triplet_id: String,
    /// The output share's size, as written.
    pub bytes: u64,
    /// BLAKE3 of the output share file as written, only when it is sealed (age draws a fresh
    /// file key) or signed (the server's signature, which no one without its key can make,
    /// is among the hashed bytes): a hash of a plain unsigned share would let whoever holds
    /// the other share confirm a guessed output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// The server's public signing key (`ed25519:<hex>`) and its signature of the record
    /// (hex), when it signs its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

pub fn slice_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("slice{i}"))
}

/// `DIR/slice<I>/<stem>.p<P>`.
pub fn slice_file(dir: &Path, i: usize, stem: &str, party: Party) -> PathBuf {
    slice_dir(dir, i).join(format!("{stem}.p{party}"))
}

pub(crate) fn is_hex_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A job or run id from its hex form (as records and manifests hold it).
pub fn parse_id(s: &str) -> Option<crate::formats::container::Id> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(s, &mut id).ok().map(|_| id)
}

impl Manifest {
    pub fn new(study_id: String, slices: Vec<String>) -> Manifest {
        Manifest {
            format: FORMAT_TAG.into(),
            version: VERSION,
            study_id,
            slices,
        }
    }

    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        if !dir.join(MANIFEST).exists() && dir.is_dir() {
            bail!(
                "{}: no such file: is {} a study folder made by share-study?",
                path.display(),
                dir.display()
            );
        }
        let m: Manifest = read_json(&path)?;
        check_tag(&path, &m.format, m.version)?;
        check_ids(&path, &m.study_id, m.slices.iter())?;
        Ok(m)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(MANIFEST), self)
    }

    pub fn len(&self) -> usize {
        self.slices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}

impl Sources {
    pub fn new(
        study_id: String,
        input_dir: PathBuf,
        kind: StudyKind,
        slices: Vec<Source>,
    ) -> Sources {
        Sources {
            format: FORMAT_TAG.into(),
            version: VERSION,
            study_id,
            input_dir,
            kind,
            slices,
        }
    }

    pub fn read(path: &Path) -> Result<Sources> {
        let s: Sources = read_json(path)?;
        check_tag(path, &s.format, s.version)?;
        check_ids(path, &s.study_id, s.slices.iter().map(|x| &x.job_id))?;
        let dicom = s.kind != StudyKind::Images;
        let multi = s.kind == StudyKind::MultiFrame;
        let mut names = std::collections::HashSet::new();
        for (i, x) in s.slices.iter().enumerate() {
            // A multi-frame study's slices are the frames of one file, in order.
            let frame_ok = if multi {
                x.frame == Some(i) && x.file == s.slices[0].file && x.blake3 == s.slices[0].blake3
            } else {
                x.frame.is_none()
            };
            if !frame_ok {
                bail!(
                    "{}: slice {i} ({}, frame {:?}) is not what a {} study holds",
                    path.display(),
                    x.file,
                    x.frame,
                    s.kind.name()
                );
            }
            let plain_name = Path::new(&x.file).file_name() == Some(x.file.as_ref());
            if !plain_name || x.file.starts_with('.') {
                bail!(
                    "{}: {:?} is not a file name (a source is named within the input folder)",
                    path.display(),
                    x.file
                );
            }
            if !names.insert(x.file.as_str()) && !multi {
                bail!("{}: {} is named twice", path.display(), x.file);
            }
            if (x.format == Format::Dicom) != dicom {
                bail!(
                    "{}: {}: a {} slice in a study of kind {}",
                    path.display(),
                    x.file,
                    x.format,
                    s.kind.name()
                );
            }
            if x.bit_depth != 8 && x.bit_depth != 16 {
                bail!("{}: {}: bit depth {}", path.display(), x.file, x.bit_depth);
            }
            // Colour is three planes on their full range, and a study is all one kind.
            if !matches!(x.colours, None | Some(3))
                || (x.colours.is_some() && x.window.is_some())
                || x.colours != s.slices[0].colours
            {
                bail!(
                    "{}: {}: colours {:?}{}: a study's slices are all gray (none) or all colour \
                     (3, with no window)",
                    path.display(),
                    x.file,
                    x.colours,
                    if x.window.is_some() {
                        " with a window"
                    } else {
                        ""
                    }
                );
            }
            let window_ok = x.window.is_none_or(|w| Window::new(w.lo, w.hi).is_ok());
            let scale_ok = [x.noise_scale, x.sigma]
                .iter()
                .all(|v| v.is_none_or(|v| v.is_finite() && v > 0.0));
            if !window_ok || !scale_ok {
                bail!(
                    "{}: {}: malformed window or noise scaling",
                    path.display(),
                    x.file
                );
            }
            if x.blake3.len() != 64 || !x.blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{}: {}: malformed hash", path.display(), x.file);
            }
        }
        Ok(s)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// What the gateway signs of these sources ([`Bound`]).
    pub fn bound(&self) -> Bound {
        Bound {
            format: self.format.clone(),
            version: self.version,
            study_id: self.study_id.clone(),
            kind: self.kind,
            slices: self.slices.clone(),
        }
    }

    /// Writes the study binding of these sources to `path`, signed by the gateway `by` when
    /// given (unsigned only for plain test studies, which a receiver pinning keys refuses).
    pub fn write_binding(&self, path: &Path, by: Option<&Signer>) -> Result<()> {
        let text = serde_json::to_string(&self.bound())?;
        let mut h = Header::new(Kind::StudyBinding, Party::S0, 0);
        h.info.push(("study".into(), self.study_id.clone()));
        container::write(path, &h, &text, Seal::new(None, by))
    }

    /// Checks these sources (read from `sources`) against the study binding at `binding`:
    /// the container whole (checksum and signature), signed by the gateway key `trust`
    /// pins, and saying the same as these sources but their folder, slice by slice. The
    /// binding's slices are returned: the signed facts the receiver goes by. With no key
    /// pinned (`--insecure-unsigned`, plain test studies), a missing binding is taken.
    pub fn check_binding(
        &self,
        sources: &Path,
        binding: &Path,
        trust: &Trust,
    ) -> Result<Option<Bound>> {
        let pinned = matches!(trust, Trust::Pinned(_));
        let f = match open_at_most(binding, MAX_MANIFEST_BYTES, "a study binding")? {
            None if !pinned => return Ok(None),
            None => bail!(
                "{}: no study binding: the gateway's signed list of the study's slices \
                 (share-study writes it beside the sources file; give --binding where it is \
                 kept); without it, slices swapped in the study folder and the sources file \
                 would go unnoticed",
                binding.display()
            ),
            Some(f) => f,
        };
        // One open, its size bounded above: the header's signer is checked against the
        // pinned gateway key before the body is read; the signature itself is verified with
        // the whole file, from the same handle.
        let o = container::Opened::from_file(binding, f)?;
        o.expect(Kind::StudyBinding, None)?;
        trust.check(binding, o.header())?;
        let (_, text): (Header, String) = o.read(Kind::StudyBinding, None)?;
        let bound: Bound = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed study binding", binding.display()))?;
        check_tag(binding, &bound.format, bound.version)?;
        let mine = self.bound();
        let differ = |what: String| -> Result<Option<Bound>> {
            bail!(
                "{}: {what}, but the gateway's signed study binding {} says otherwise: the \
                 study's slices or their sources were changed after share-study (swapped, or \
                 of another study); nothing written",
                sources.display(),
                binding.display()
            )
        };
        if bound.study_id != mine.study_id {
            return differ(format!("names study {}", mine.study_id));
        }
        if bound.kind != mine.kind || bound.slices.len() != mine.slices.len() {
            return differ(format!(
                "a {} study of {} slices",
                mine.kind.name(),
                mine.slices.len()
            ));
        }
        for (i, (b, m)) in bound.slices.iter().zip(&mine.slices).enumerate() {
            if b.job_id != m.job_id {
                return differ(format!("slice {i} is job {}", m.job_id));
            }
            if b != m {
                return differ(format!("slice {i} ({}) has other facts", m.file));
            }
        }
        if bound != mine {
            return differ("the study's facts differ".into());
        }
        Ok(Some(bound))
    }

    /// The public manifest these sources go with.
    pub fn manifest(&self) -> Manifest {
        Manifest::new(
            self.study_id.clone(),
            self.slices.iter().map(|s| s.job_id.clone()).collect(),
        )
    }
}

impl Done {
    /// The record at `path`: `None` when there is none, an error naming it when it is
    /// unreadable or malformed.
    pub fn read_if_any(path: &Path) -> Result<Option<Done>> {
        read_json_if_any(path)?
            .map(|d| Done::checked(d, path))
            .transpose()
    }

    /// The record at `path`, its signature (when it names a signer) verified under the key
    /// it names: whether that key is the one pinned for its server is [`Done::check`].
    pub fn read(path: &Path) -> Result<Done> {
        Done::checked(read_json(path)?, path)
    }

    /// [`Done::read`]'s checks of the record `d`, read from `path`.
    fn checked(d: Done, path: &Path) -> Result<Done> {
        let hash_ok = d
            .blake3
            .as_ref()
            .is_none_or(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if d.party > 1 || !is_hex_id(&d.job_id) || !is_hex_id(&d.triplet_id) || !hash_ok {
            bail!("{}: malformed completion record", path.display());
        }
        match (&d.signer, &d.signature) {
            (None, None) => {}
            (Some(k), Some(sig)) => {
                let key = PublicKey::from_text(k)
                    .with_context(|| format!("{}: malformed signer", path.display()))?;
                let mut bytes = [0u8; SIGNATURE_BYTES];
                let well_formed = hex::decode_to_slice(sig, &mut bytes).is_ok();
                if !well_formed || !record_verifies(&key, &d.digest(), &bytes) {
                    bail!(
                        "{}: the record's signature does not verify under the key it names (forged, or changed after signing)",
                        path.display()
                    );
                }
            }
            _ => bail!(
                "{}: a signer without a signature, or one without the other",
                path.display()
            ),
        }
        Ok(d)
    }

    /// Refuses a record not signed by the key `trust` pins for its server (S0's or S1's);
    /// with no key pinned, any record is taken.
    pub fn check(&self, path: &Path, trust: &Trust) -> Result<()> {
        let role = Role::server_u8(self.party).context("a record of party 0 or 1")?;
        let Some(want) = trust.key_of(role) else {
            if matches!(trust, Trust::Pinned(_)) {
                bail!(
                    "{}: no {} key pinned to check it by",
                    path.display(),
                    role.name()
                );
            }
            return Ok(());
        };
        match &self.signer {
            None => bail!(
                "{}: not signed; a completion record is accepted only signed by S{} ({want})",
                path.display(),
                self.party
            ),
            Some(k) if *k != want.to_string() => bail!(
                "{}: signed by {k}, not by the pinned {} key {want}",
                path.display(),
                role.name()
            ),
            Some(_) => Ok(()),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// What a record's signature covers: every field but the signature, unambiguously.
    fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("ppdenoise completion record v1");
        let text = format!(
            "party {}\njob {}\nrun {}\nbytes {}\nblake3 {}\nsigner {}\n",
            self.party,
            self.job_id,
            self.triplet_id,
            self.bytes,
            self.blake3.as_deref().unwrap_or("-"),
            self.signer.as_deref().unwrap_or("-")
        );
        h.update(text.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The record of the output share at `out`, as it is now, signed by `by` (its server)
    /// when given. The file's hash is kept only when the file is sealed or signed.
    pub fn of_output(
        party: Party,
        job_id: String,
        triplet_id: String,
        out: &Path,
        by: Option<&Signer>,
    ) -> Result<Done> {
        // One open: whether the share is sealed and its hash come from the same file.
        let mut f =
            std::fs::File::open(out).with_context(|| format!("{}: cannot open", out.display()))?;
        let sealed = super::sealed::starts_sealed(&mut f)
            .and_then(|s| f.rewind().map(|_| s))
            .with_context(|| format!("{}: cannot read", out.display()))?;
        let (bytes, blake3) = hash_open(out, f)?;
        let mut d = Done {
            party: party.into(),
            job_id,
            triplet_id,
            bytes,
            blake3: (sealed || by.is_some()).then_some(blake3),
            signer: by.map(|s| s.public().to_string()),
            signature: None,
        };
        if let Some(s) = by {
            d.signature = Some(hex::encode(s.sign_record(&d.digest())));
        }
        Ok(d)
    }

    /// Whether `out` is still the output this record was written for: its size, then its
    /// hash; for an unsigned plain share (no hash kept), its own checksum and the run's ids.
    pub fn output_intact(&self, out: &Path) -> bool {
        let Ok(mut f) = std::fs::File::open(out) else {
            return false;
        };
        if !matches!(self.intact_open(&mut f), Ok(true)) {
            return false;
        }
        self.blake3.is_some()
            || container::Opened::from_file(out, f)
                .and_then(|o| o.verify())
                .is_ok_and(|h| {
                    self.names_run(&h)
                        && h.job_id.as_ref().map(container::id_hex).as_deref()
                            == Some(self.job_id.as_str())
                })
    }

    /// [`Done::output_intact`] on the share's one open `f`, read from its start (to its
    /// recorded size and one byte more at most): its size, then its hash. For an unsigned
    /// plain share, whose record keeps no hash, the size only. Either way the reader then
    /// reads the share's header from the same open and compares it by [`Done::names_run`]
    /// (a hash pass and a read are two passes over a file that may be written meanwhile;
    /// the run named in the header the reader decodes is what ties it to this record).
    pub fn intact_open(&self, f: &mut std::fs::File) -> std::io::Result<bool> {
        f.rewind()?;
        if f.metadata()?.len() != self.bytes {
            return Ok(false);
        }
        let Some(want) = &self.blake3 else {
            return Ok(true);
        };
        let mut h = blake3::Hasher::new();
        let n = std::io::copy(&mut f.take(self.bytes + 1), &mut h)?;
        Ok(n == self.bytes && h.finalize().to_hex().as_str() == want.as_str())
    }

    /// Whether an output share's header `h` names this record's party and run (its job is
    /// the reader's to check, against the job it expects).
    pub fn names_run(&self, h: &Header) -> bool {
        let hex = |i: &Option<[u8; 16]>| i.as_ref().map(container::id_hex);
        h.party == self.party && hex(&h.triplet_id).as_deref() == Some(self.triplet_id.as_str())
    }
}

/// The size and BLAKE3 hash (hex) of `f`, opened at `path` and positioned at its start.
fn hash_open(path: &Path, mut f: std::fs::File) -> Result<(u64, String)> {
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok((n, h.finalize().to_hex().to_string()))
}

fn check_tag(path: &Path, format: &str, version: u32) -> Result<()> {
    if format != FORMAT_TAG {
        bail!("{}: not a ppdenoise study file", path.display());
    }
    if version != VERSION {
        bail!(
            "{}: study file version {version}; this build reads version {VERSION}",
            path.display()
        );
    }
    Ok(())
}

fn check_ids<'a>(
    path: &Path,
    study: &str,
    slices: impl ExactSizeIterator<Item = &'a String>,
) -> Result<()> {
    if !is_hex_id(study) {
        bail!("{}: malformed study id", path.display());
    }
    let n = slices.len();
    if n == 0 || n > MAX_SLICES {
        bail!(
            "{}: {n} slices (a study has 1 to {MAX_SLICES})",
            path.display()
        );
    }
    for (i, id) in slices.enumerate() {
        if !is_hex_id(id) {
            bail!("{}: slice {i}: malformed job id", path.display());
        }
    }
    Ok(())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    read_json_if_any(path)?.with_context(|| format!("{}: no such file", path.display()))
}

/// [`read_json`], `None` when there is no file at `path` (told by the one open).
fn read_json_if_any<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let Some(f) = open_at_most(path, MAX_MANIFEST_BYTES, "a study file")? else {
        return Ok(None);
    };
    let text = read_at_most(path, f, MAX_MANIFEST_BYTES)?;
    serde_json::from_slice(&text)
        .map(Some)
        .with_context(|| format!("{}: malformed", path.display()))
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    atomic::write_with(path, |w| {
        serde_json::to_writer_pretty(&mut *w, v)?;
        w.write_all(b"\n")?;
        Ok(())
    })
}

/// Parses a slice list such as `0-3,7,9` (the form `sbatch --array` takes) for a study of
/// `n` slices: sorted, each once.
pub fn parse_slices(spec: &str, n: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let range: RangeInclusive<usize> = match part.split_once('-') {
            Some((a, b)) => parse_index(a, spec)?..=parse_index(b, spec)?,
            None => {
                let i = parse_index(part, spec)?;
                i..=i
            }
        };
        if range.is_empty() {
            bail!("--slices {spec}: {part} is an empty range");
        }
        if *range.end() >= n {
            bail!(
                "--slices {spec}: slice {} is not in the study (slices 0 to {})",
                range.end(),
                n - 1
            );
        }
        out.extend(range);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_index(s: &str, spec: &str) -> Result<usize> {
    s.trim()
        .parse()
        .with_context(|| format!("--slices {spec}: {s:?} is not a slice number"))
}

/// The compact form of a sorted slice list (`0-3,7,9`), as `--slices` and `sbatch --array`
/// take it.
pub fn slices_spec(slices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < slices.len() {
        let mut j = i;
        while j + 1 < slices.len() && slices[j + 1] == slices[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            slices[i].to_string()
        } else {
            format!("{}-{}", slices[i], slices[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sources file's colour facts are checked when read (they are signed too): colour is
    /// 3 planes with no window, and a study is all gray or all colour.
    #[test]
    fn sources_with_impossible_colours_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let slice = |file: &str, colours: Option<usize>, window: Option<Window>| Source {
            file: file.into(),
            format: Format::Png,
            bit_depth: 8,
            height: 4,
            width: 4,
            job_id: "0123456789abcdef0123456789abcdef".into(),
            blake3: "00".repeat(32),
            frame: None,
            colours,
            window,
            noise_scale: None,
            sigma: None,
        };
        let id = || "fedcba9876543210fedcba9876543210".to_string();
        let read = |slices: Vec<Source>| {
            let p = d.path().join("s.json");
            Sources::new(id(), d.path().into(), StudyKind::Images, slices)
                .write(&p)
                .unwrap();
            Sources::read(&p).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        assert!(read(vec![
            slice("a.png", Some(3), None),
            slice("b.png", Some(3), None)
        ])
        .is_ok());
        assert!(read(vec![slice("a.png", None, None)]).is_ok());
        let w = Window::new(0.0, 100.0).ok();
        for bad in [
            vec![slice("a.png", Some(2), None)],
            vec![slice("a.png", Some(1), None)],
            vec![slice("a.png", Some(3), w)],
            vec![slice("a.png", Some(3), None), slice("b.png", None, None)],
        ] {
            let e = read(bad).expect_err("refused");
            assert!(e.contains("all gray (none) or all colour"), "{e}");
        }
    }

    #[test]
    fn slice_lists_parse_and_print_back() {
        assert_eq!(parse_slices("0-3,7,9", 10).unwrap(), vec![0, 1, 2, 3, 7, 9]);
        assert_eq!(parse_slices("5,1,1-2", 6).unwrap(), vec![1, 2, 5]);
        assert_eq!(slices_spec(&[0, 1, 2, 3, 7, 9]), "0-3,7,9");
        assert_eq!(slices_spec(&[4]), "4");
        assert_eq!(slices_spec(&[]), "");
        for (bad, needle) in [
            ("10", "not in the study"),
            ("3-1", "empty range"),
            ("x", "not a slice number"),
            ("1,,2", "not a slice number"),
            ("-1", "not a slice number"),
        ] {
            let e = format!("{:#}", parse_slices(bad, 10).unwrap_err());
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    /// A signing key of role `role` in `dir`.
    fn signer(dir: &Path, name: &str, role: Role) -> Signer {
        let path = dir.join(format!("{name}.sign-key"));
        std::fs::write(&path, super::super::signing::new_key(name).unwrap().0).unwrap();
        Signer::load(&path, role).unwrap()
    }

    #[test]
    fn records_are_checked_and_outputs_compared() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.p0");
        std::fs::write(&out, b"share bytes").unwrap();
        let id = "0123456789abcdef0123456789abcdef".to_string();
        let s0 = signer(d.path(), "s0", Role::S0);
        let rec = Done::of_output(Party::S0, id.clone(), id.clone(), &out, Some(&s0)).unwrap();
        let p = d.path().join("done.p0");
        rec.write(&p).unwrap();
        let back = Done::read(&p).unwrap();
        assert_eq!(back, rec);
        assert!(back.output_intact(&out));
        std::fs::write(&out, b"share bytez").unwrap();
        assert!(!back.output_intact(&out), "same size, other bytes");
        std::fs::remove_file(&out).unwrap();
        assert!(!back.output_intact(&out));
        std::fs::write(
            &p,
            br#"{"party":0,"job_id":"zz","triplet_id":"zz","bytes":1}"#,
        )
        .unwrap();
        assert!(format!("{:#}", Done::read(&p).unwrap_err()).contains("malformed"));
        let m = Manifest::new(id.clone(), vec![id.clone(), "nothex".into()]);
        m.write(d.path()).unwrap();
        let e = format!("{:#}", Manifest::read(d.path()).unwrap_err());
        assert!(e.contains("slice 1: malformed job id"), "{e}");
        Manifest::new(id.clone(), vec![id.clone()])
            .write(d.path())
            .unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap().len(), 1);
    }

    #[test]
    fn records_are_signed_by_their_server_and_hash_no_plain_unsigned_share() {
        let d = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef".to_string();
        let other = "fedcba9876543210fedcba9876543210".to_string();
        let out = d.path().join("out.p1");
        std::fs::write(&out, b"signed share bytes").unwrap();
        let s1 = signer(d.path(), "s1", Role::S1);
        let pinned = Trust::Pinned(vec![(Role::S1, s1.public())]);
        let p = d.path().join("done.p1");
        let rec = Done::of_output(Party::S1, id.clone(), id.clone(), &out, Some(&s1)).unwrap();
        rec.write(&p).unwrap();
        Done::read(&p).unwrap().check(&p, &pinned).unwrap();
        // Every field is covered: each one changed, the signature kept, is refused.
        let edits: [&dyn Fn(&mut Done); 5] = [
            &|r| r.party = 0,
            &|r| r.job_id = other.clone(),
            &|r| r.triplet_id = other.clone(),
            &|r| r.bytes += 1,
            &|r| r.blake3 = Some("00".repeat(32)),
        ];
        for edit in edits {
            let mut forged = rec.clone();
            edit(&mut forged);
            forged.write(&p).unwrap();
            let e = format!("{:#}", Done::read(&p).unwrap_err());
            assert!(e.contains("signature does not verify"), "{e}");
        }
        // Signed by another key, or not at all: refused where S1's key is pinned.
        let mallory = signer(d.path(), "m", Role::S1);
        let forged =
            Done::of_output(Party::S1, id.clone(), id.clone(), &out, Some(&mallory)).unwrap();
        let e = format!("{:#}", forged.check(&p, &pinned).unwrap_err());
        assert!(e.contains("not by the pinned s1 key"), "{e}");
        let mut bare = rec.clone();
        (bare.signer, bare.signature) = (None, None);
        let e = format!("{:#}", bare.check(&p, &pinned).unwrap_err());
        assert!(e.contains("not signed"), "{e}");
        // An unsigned plain share's record keeps no hash of it (its holder's partner could
        // test a guessed output against one).
        let plain = Done::of_output(Party::S1, id.clone(), id, &out, None).unwrap();
        assert_eq!((plain.blake3, plain.signer), (None, None));
    }
}
