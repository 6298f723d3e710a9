//! A server's job, outside the command line: [`prepare`] loads a party's files and checks
//! every field (kinds, ids, shapes, sizes, the dealer's circuit, the engine) into a
//! [`ReadyJob`] or one error naming the file, before any randomness is claimed or
//! image-sized memory allocated; [`session::connect`] claims the triplets and brings up the
//! link; [`ReadyJob::run`] runs the two-party protocol; [`Finished::write`] writes the output
//! share. `serve` only calls these, and the fuzzer reaches the same checks.

#[cfg(test)]
mod extend_tests;
mod graph;
mod loaded;
mod mlp;
pub mod session;
pub mod state;

use crate::ring::Party;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use zeroize::Zeroize;

use crate::corr::engine_kind::EngineKind;
use crate::corr::randomness::PartyRandomness;
use crate::formats::bodies::{OutputShare, NAME, NETWORK};
use crate::formats::container::{self, id_hex, Header, Kind, Opened};
use crate::formats::facts::TripletFacts;
use crate::formats::inputs::{open_as, open_signed, open_signed_checking, Maker};
use crate::formats::sealed::Recipient;
use crate::formats::signing::{Role, Signer, Trust};
use crate::formats::triplet_stream;
use crate::twopc::channel::Channel;
use crate::twopc::engines::engine_for;
use crate::twopc::job::{Report, SecureJob};
use crate::twopc::nonlinear::Nonlinear;
pub use loaded::LoadedModel;
use state::{check_unused, Record};

/// One party's input files for a job.
#[derive(Clone, Debug)]
pub struct JobFiles {
    pub party: Party,
    /// model.pN (an MLP's or a CNN graph's share).
    pub model: PathBuf,
    /// image.pN.
    pub image: PathBuf,
    /// triplets.pN (the dealer's correlated randomness for this job).
    pub triplets: PathBuf,
    /// weights.pN from `open-weights`, when the triplets were made against a model mask.
    pub weights: Option<PathBuf>,
    /// The engine the caller asked for; must be the triplet file's (default: the file's).
    pub engine: Option<EngineKind>,
    /// Where consumed randomness is recorded: triplets already used are refused here.
    pub state_dir: PathBuf,
    /// Whose signatures the model, image and triplet files must carry.
    pub trust: Trust,
}

/// A job whose files were all checked: ready to claim its randomness and run.
pub struct ReadyJob {
    pub party: Party,
    files: JobFiles,
    /// The model's name, from its header's facts.
    model_name: Option<String>,
    /// The model, image and triplet headers, which name the run.
    headers: [Header; 3],
    triplet_id: String,
    /// The first input that was sealed at rest, if any (the output share must be sealed too).
    sealed_input: Option<PathBuf>,
    /// Whether the triplet file was sealed (a spent one is then removed, not cut).
    triplets_sealed: bool,
    engine_kind: EngineKind,
    engine: Box<dyn Nonlinear + Send>,
    /// What both servers must hold: the three ids (`IDS_LEN` bytes), the digest of the
    /// dealer's public lead (`LEAD_LEN` bytes), then "<mask>/<engine>/wire<N>" ([`WIRE_REVISION`]).
    tag: Vec<u8>,
    mask_field: String,
    rand: PartyRandomness,
    work: Box<dyn SecureJob>,
}

/// A run's job id and triplet id.
pub type RunIds = (Option<[u8; 16]>, Option<[u8; 16]>);

/// A job's result: this party's output share and the protocol's report.
pub struct Finished {
    pub party: Party,
    headers: [Header; 3],
    pub out: OutputShare,
    network: Option<&'static str>,
    pub report: Report,
    pub engine_kind: EngineKind,
    /// What the report's count counts ("patches" or "pixels").
    pub unit: &'static str,
    /// A tile's header facts (which tile, which rows), for the receiver.
    tile_info: Vec<(String, String)>,
    /// The model's name, as its owner published it.
    model_name: Option<String>,
}

/// Bytes of the session tag's ids, then of its lead digest.
pub const IDS_LEN: usize = 48;
pub const LEAD_LEN: usize = 32;

/// The revision of the job messages' format (their sizes and layout), the session tag's
/// last field: bumped whenever a message changes, so that servers of two builds that would
/// send different messages refuse each other before the job instead of failing in it.
/// 2: CNN and graph jobs open their masked maps at their readers' width, packed (issue 51);
/// builds before it carried none. 3: the boolean engine's ReLU opens its first carry's AND
/// one bit a direction and its carry in the chain's rounds, and a CNN's last layer opens its
/// input at the output's width, not at 64 bits (issue 51). 4: a CNN layer after a boolean
/// engine's ReLU opens its input's shares' masked top bits, then the map in one message,
/// where it opened its low k bits and then the rest (issue 51). 5: a CNN's output is held
/// at ±32 (`ring::cnn::OUT_RANGE_BITS`), not ±512, so its last layer opens fewer bits. 6: a
/// graph's output is held at the same range (`GraphPlan::out_bits`), not at 64 bits. 7: with
/// the boolean engine a graph's ReLU read only by convs is made at k bits and its readers'
/// opening sends the shares' masked top bits first (`GraphPlan::fused`).
pub const WIRE_REVISION: u32 = 7;

/// The session tag after its ids and lead digest: "<mask>/<engine>/wire<N>".
fn tag_tail(mask_field: &str, engine_kind: crate::corr::engine_kind::EngineKind) -> String {
    let engine = engine_kind.wire_name();
    format!("{mask_field}/{engine}/wire{WIRE_REVISION}")
}

/// Loads and checks everything a job needs from party `files.party`'s files.
pub fn prepare(files: JobFiles) -> Result<ReadyJob> {
    let mut model = None;
    prepare_held(
        files,
        Held {
            check_image: &|_| Ok(()),
            model: &mut model,
            triplets: None,
        },
    )
}

/// What a caller that runs several jobs (a study's slices) gives [`prepare_held`].
pub struct Held<'a> {
    /// Given the image share's header (from its one open) before its maker is checked
    /// ([`open_signed_checking`]): a study's slice checks that its image share is the
    /// slice's job.
    pub check_image: &'a dyn Fn(&Header) -> Result<()>,
    /// The model share (and opened weights): read into it when it is empty, taken from it
    /// when not, so that a study's slices read their model once.
    pub model: &'a mut Option<Arc<LoadedModel>>,
    /// The job's triplet file, when the caller opened it already (with the job's trust, to
    /// tell a finished slice from one dealt again): the job reads it from that open.
    pub triplets: Option<Opened>,
}

/// [`prepare`] with what the caller holds ([`Held`]).
pub fn prepare_held(files: JobFiles, held: Held) -> Result<ReadyJob> {
    let Held {
        check_image,
        model: kept,
        triplets,
    } = held;
    if let Some(k) = kept
        .as_ref()
        .filter(|k| k.path != files.model || k.weights_path != files.weights)
    {
        bail!(
            "{}: this server holds model share {} (and opened weights {:?}) for these jobs",
            files.model.display(),
            k.path.display(),
            k.weights_path
        );
    }
    if let Some(t) = triplets.as_ref().filter(|t| t.path() != files.triplets) {
        bail!(
            "{}: the job was given {} as its triplets",
            files.triplets.display(),
            t.path().display()
        );
    }
    // Each input is opened once (`formats::inputs`): who made it, from its header, is checked
    // against the pinned keys before any body is read, and the body, its checksum and its
    // signature are then read from the same handle. All are opened before any body is read,
    // so that a sealed one under --insecure-unsigned is refused first (review finding L3).
    let open = |path: &Path| open_signed(path, &files.trust, Maker::Party);
    enum Model {
        Kept(Arc<LoadedModel>),
        Opened(Box<Opened>),
    }
    let model = match kept {
        Some(k) => Model::Kept(k.clone()),
        None => Model::Opened(Box::new(open(&files.model)?)),
    };
    let image = open_signed_checking(&files.image, &files.trust, Maker::Party, check_image)?;
    let triplets = match triplets {
        Some(t) => t,
        None => open(&files.triplets)?,
    };
    let model = match model {
        Model::Kept(k) => k,
        Model::Opened(m) => {
            let weights = files
                .weights
                .as_deref()
                // Nobody signs them (the server wrote them): under --insecure-unsigned a
                // sealed one is refused as any input is.
                .map(|w| open_as(w, &files.trust, Maker::Party))
                .transpose()?;
            let l = Arc::new(LoadedModel::read(&files, *m, weights)?);
            *kept = Some(l.clone());
            l
        }
    };
    let inputs = Inputs {
        model,
        image,
        triplets,
    };
    match inputs.model.family {
        loaded::Family::Graph(_) => graph::prepare(files, inputs),
        loaded::Family::Mlp { .. } => mlp::prepare(files, inputs),
    }
}

/// A job's inputs: its model share read (once for every job that runs it), its image share
/// and triplets opened once, their makers' signatures pinned, their bodies not read yet.
struct Inputs {
    model: Arc<LoadedModel>,
    image: Opened,
    triplets: Opened,
}

impl Inputs {
    /// The first input that was sealed at rest (model, image, triplets, then the weights).
    fn first_sealed(&self) -> Option<PathBuf> {
        let m = &self.model;
        m.sealed
            .then(|| m.path.clone())
            .or_else(|| {
                [&self.image, &self.triplets]
                    .into_iter()
                    .find(|o| o.is_sealed())
                    .map(|o| o.path().to_path_buf())
            })
            .or_else(|| m.sealed_weights().map(Path::to_path_buf))
    }
}

impl ReadyJob {
    /// The first of the job's inputs that was sealed at rest (known from their one open).
    pub fn sealed_input(&self) -> Option<&Path> {
        self.sealed_input.as_deref()
    }

    /// Whether the triplet file was sealed, for [`state::spend_opened`] after the run.
    pub fn triplets_sealed(&self) -> bool {
        self.triplets_sealed
    }

    /// The engine that runs the nonlinear steps (from the triplet file).
    pub fn engine_kind(&self) -> EngineKind {
        self.engine_kind
    }

    /// Steps the progress callback counts up to, and what they are.
    pub fn steps(&self) -> (usize, &'static str) {
        self.work.steps()
    }

    /// Runs the protocol over `ch` (the link once [`session::connect`] brought it up).
    pub fn run(
        mut self,
        ch: &mut dyn Channel,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Finished> {
        let (out, report) = self.work.run(
            ch,
            self.party,
            self.rand,
            self.tag,
            self.engine.as_mut(),
            progress,
        )?;
        Ok(Finished {
            party: self.party,
            headers: self.headers,
            out,
            network: self.work.network(),
            report,
            engine_kind: self.engine_kind,
            unit: self.work.unit(),
            tile_info: self.work.tile_facts(),
            model_name: self.model_name,
        })
    }
}

impl Finished {
    /// The run's job and triplet ids (what its output share's header names).
    pub fn ids(&self) -> RunIds {
        (self.headers[1].job_id, self.headers[2].triplet_id)
    }

    /// Writes the output share (atomically, sealed to `to` when given, signed by `by`, this
    /// server's signing key, when given), named by the job, model and run so the receiver
    /// can refuse shares of different runs; returns its size in bytes.
    pub fn write(&self, path: &Path, to: Option<&Recipient>, by: Option<&Signer>) -> Result<u64> {
        if let Some(s) = by.filter(|s| s.role() != Role::server(self.party)) {
            bail!(
                "S{}'s output share would be signed as the {}",
                self.party,
                s.role().name()
            );
        }
        let [mh, ih, th] = &self.headers;
        let mut h = Header::new(Kind::OutputShare, self.party, self.out.scale);
        h.job_id = ih.job_id;
        h.model_id = mh.model_id;
        // The run's id: the receiver refuses to add shares of two different runs.
        h.triplet_id = th.triplet_id;
        let g = &self.out.geometry;
        h.shapes
            .push(("canvas".into(), vec![g.canvas_h as u64, g.canvas_w as u64]));
        if let Some(n) = self.network {
            h.info.push((NETWORK.into(), n.into()));
        }
        // For the receiver's description of the result: the model's name, as its owner
        // published it (public, and checked again by the receiver).
        if let Some(name) = &self.model_name {
            h.info.push((NAME.into(), name.clone()));
        }
        h.info.extend(self.tile_info.iter().cloned());
        container::write(path, &h, &self.out, container::Seal::new(to, by))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len())
    }
}

fn same_id(a: &Option<[u8; 16]>, b: &Option<[u8; 16]>) -> bool {
    a.is_some() && a == b
}

/// A job the gateway shared for a model (`share-image --model`, its header naming the
/// model's id) runs only with that model: another genuine model of the same owner (an
/// older version, one for another noise level) put in its place is refused. A job shared
/// without a model names none and binds none.
pub fn check_bound_model(image: &Path, ih: &Header, model: &Path, mh: &Header) -> Result<()> {
    match ih.model_id {
        Some(want) if mh.model_id != Some(want) => bail!(
            "{}: the gateway shared this image for model {}, but {} is model {}",
            image.display(),
            id_hex(&want),
            model.display(),
            mh.model_id
                .as_ref()
                .map(id_hex)
                .unwrap_or_else(|| "none".into())
        ),
        _ => Ok(()),
    }
}

/// The triplet file, opened (checksum verified) for streaming, with what was read of it.
struct OpenedTriplets {
    /// Its run id, as recorded in the state directory.
    id: String,
    header: Header,
    /// Its header's facts, read once.
    facts: TripletFacts,
    sealed: bool,
    stream: triplet_stream::TripletsStream,
}

/// The triplet file's checks that do not depend on the network: kind and party, the model
/// and job it was made for, not consumed yet; then its body read (checksum and signature
/// verified) through the same handle, left open for streaming.
fn open_triplets(f: &JobFiles, mh: &Header, ih: &Header, o: Opened) -> Result<OpenedTriplets> {
    let p = f.party;
    check_bound_model(&f.image, ih, &f.model, mh)?;
    o.expect(Kind::Triplets, Some(p))?;
    let first = o.header();
    let hex = |id: &Option<[u8; 16]>| id.as_ref().map(id_hex).unwrap_or_default();
    if !same_id(&first.model_id, &mh.model_id) {
        bail!(
            "{}: this randomness was made for model {} but {} is model {}",
            f.triplets.display(),
            hex(&first.model_id),
            f.model.display(),
            hex(&mh.model_id)
        );
    }
    if !same_id(&first.job_id, &ih.job_id) {
        bail!(
            "{}: this randomness was made for job {} but {} belongs to job {}",
            f.triplets.display(),
            hex(&first.job_id),
            f.image.display(),
            hex(&ih.job_id)
        );
    }
    let id = first
        .triplet_id
        .as_ref()
        .map(id_hex)
        .with_context(|| format!("{}: header lacks a triplet id", f.triplets.display()))?;
    check_unused(&f.state_dir, p, Record::Triplets, &id, &f.triplets)?;
    // Checked whole (checksum) now; party 1's triple shares are then read as consumed.
    let sealed = o.is_sealed();
    let (header, stream) = triplet_stream::from_opened(o, p)?;
    // Its facts from the header the read verified (checksum, signature), not before: a
    // header altered on disk is told as such, not as a malformed entry.
    let facts = TripletFacts::read(&f.triplets, &header)?;
    Ok(OpenedTriplets {
        id,
        header,
        facts,
        sealed,
        stream,
    })
}

/// The engine the triplet file is for: its header and body must agree, and the engine
/// asked for, when given, must be it.
fn check_engine(f: &JobFiles, facts: &TripletFacts, engine_kind: EngineKind) -> Result<()> {
    if facts.engine.as_deref() != Some(engine_kind.name()) {
        bail!(
            "{}: the header names engine {:?} but the body holds {} correlations",
            f.triplets.display(),
            facts.engine.as_deref().unwrap_or("none"),
            engine_kind
        );
    }
    if let Some(want) = f.engine {
        if want != engine_kind {
            bail!(
                "{}: this randomness is for the {} engine but --engine {} was given; ask the dealer for `gen-triplets --engine {}` or run with --engine {}",
                f.triplets.display(),
                engine_kind,
                want,
                want,
                engine_kind
            );
        }
    }
    Ok(())
}

/// The digest of the dealer's public lead for this job, the same in both servers' files of
/// one dealing: the triplet header (all but its party: ids, widths, batch, engine, circuit,
/// plan, model mask, tile, signer, and both parties' base-OT digests) and the body's public
/// lead (job, widths, batch, engine; not the seed); and, for a job on weights opened once
/// per model, the digest of those opened weights U (the same on both servers). This
/// party's base OTs are checked against the digest its header gives them first, so two
/// servers whose session tags agree hold the two halves the dealer made together, and the
/// same U.
fn lead_digest(
    path: &Path,
    p: Party,
    t: &OpenedTriplets,
    opened: Option<[u8; 32]>,
) -> Result<[u8; LEAD_LEN]> {
    use crate::corr::base_ots::base_ot_digest;
    use bincode::Options;
    let h = &t.header;
    let named = t.facts.base_ot(p).with_context(|| {
        format!(
            "{}: names no base-OT digests (made by an older gen-triplets): deal the job again",
            path.display()
        )
    })?;
    if base_ot_digest(&t.stream.base_ot) != named {
        bail!(
            "{}: its base OTs are not the ones its header names (the file was altered, or pieced together from two dealings)",
            path.display()
        );
    }
    let mut public = h.clone();
    public.party = 0;
    let l = &t.stream.lead;
    let opts = container::body_options;
    let mut d = blake3::Hasher::new_derive_key("ppdenoise deal lead v1");
    for part in [
        opts().serialize(&public)?,
        opts().serialize(&(&l.job, &l.widths, l.batch, l.engine))?,
    ] {
        d.update(&(part.len() as u64).to_le_bytes());
        d.update(&part);
    }
    if let Some(u) = opened {
        d.update(b"opened weights");
        d.update(&u);
    }
    Ok(*d.finalize().as_bytes())
}

/// Assembles the checked parts common to both model families: the session tag, the
/// engine's dealer data (base OTs, parsed now) and the streamed randomness.
fn assemble(
    files: JobFiles,
    (mh, ih, sealed_input, model_name): (Header, Header, Option<PathBuf>, Option<String>),
    mut t: OpenedTriplets,
    (mask_field, opened): (String, Option<[u8; 32]>),
    work: Box<dyn SecureJob>,
) -> Result<ReadyJob> {
    let p = files.party;
    let engine_kind = t.stream.lead.engine;
    let mut tag = Vec::new();
    for (what, id) in [
        ("image", &ih.job_id),
        ("model", &mh.model_id),
        ("triplets", &t.header.triplet_id),
    ] {
        tag.extend_from_slice(
            id.as_ref()
                .with_context(|| format!("the {what} file lacks its id"))?,
        );
    }
    debug_assert_eq!(tag.len(), IDS_LEN);
    let lead = lead_digest(&files.triplets, p, &t, opened)?;
    tag.extend_from_slice(&lead);
    tag.extend_from_slice(tag_tail(&mask_field, engine_kind).as_bytes());
    let engine = engine_for(engine_kind, p, &t.stream.base_ot)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.triplets.display()))?;
    // The engine holds its parsed copy (wiped on drop); the serialised one goes now.
    t.stream.base_ot.zeroize();
    let rand = PartyRandomness::streaming(p, t.stream.lead.seed, t.stream.corrections);
    Ok(ReadyJob {
        party: p,
        files,
        model_name,
        headers: [mh, ih, t.header],
        triplet_id: t.id,
        sealed_input,
        triplets_sealed: t.sealed,
        engine_kind,
        engine,
        tag,
        mask_field,
        rand,
        work,
    })
}
