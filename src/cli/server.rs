//! The servers' steps: `keygen` (link identity) and `serve` (the two-party protocol).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::state::{check_unused, mark_used, Claim, Record};
use super::weights::load_opened;
use super::Summary;
use crate::dealer::randomness::PartyRandomness;
use crate::formats::bodies::{is_cnn, load, ImageShare, ModelShare, OutputShare, NETWORK};
use crate::formats::container::{self, id_hex, Header, Kind};
use crate::formats::triplet_stream;
use crate::net::identity::{keygen as make_identity, load_peer_cert, Identity};
use crate::net::link::Link;
use crate::plain::geometry::Geometry;
use crate::ring::share::Stream;
use crate::twopc::channel::with_queued_link;
use crate::twopc::engines::EngineKind;
use crate::twopc::protocol::{self, JobInputs, Weights};

/// Create a server's identity for the S0<->S1 link: <out-dir>/<name>.key (private, mode
/// 0600) and <out-dir>/<name>.crt (self-signed certificate to give to the other server).
#[derive(Args)]
pub struct KeygenArgs {
    /// Identity name, e.g. s0 or s1 (also the certificate's subject name).
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// Replace existing key and certificate files.
    #[arg(long)]
    pub force: bool,
}

pub fn keygen(a: KeygenArgs) -> Result<Summary> {
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
    let id = make_identity(&a.name)?;
    let prefix = a.out_dir.join(&a.name);
    id.save(&prefix, a.force)?;
    let fp = id.fingerprint().to_string();
    Ok(Summary {
        lines: vec![format!(
            "wrote {0}.key (private) and {0}.crt (give it to the peer server); fingerprint {fp}",
            prefix.display()
        )],
        json: serde_json::json!({"ok": true, "command": "keygen", "key": format!("{}.key", prefix.display()),
            "cert": format!("{}.crt", prefix.display()), "fingerprint": fp}),
    })
}

/// How a server reaches its peer, and where it records consumed randomness.
#[derive(Args)]
pub struct LinkArgs {
    /// This server's private key and certificate (from keygen).
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long)]
    pub cert: PathBuf,
    /// The only certificate the peer server may present.
    #[arg(long)]
    pub peer_cert: PathBuf,
    /// Address: S0 listens on it, S1 connects to it.
    #[arg(long, default_value = "127.0.0.1:7455")]
    pub addr: SocketAddr,
    /// Seconds to wait for the peer to appear, and for any single message.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Where consumed correlated randomness is recorded.
    #[arg(long, default_value = ".ppdenoise-state")]
    pub state_dir: PathBuf,
}

/// Brings up the TLS link to the peer and checks that it holds the same `tag` (ids of the
/// files in use), before anything derived from a share is sent. On any failure `claim` is
/// released (nothing was consumed) and `mismatch` explains a differing peer tag.
pub fn link_up(
    p: u8,
    a: &LinkArgs,
    claim: Claim,
    tag: &[u8],
    mismatch: impl FnOnce(&[u8]) -> String,
) -> Result<Link> {
    let up = || -> Result<(Link, Vec<u8>)> {
        let me = Identity::load(&a.key, &a.cert)?;
        let peer = load_peer_cert(&a.peer_cert)?;
        let timeout = Duration::from_secs(a.timeout.max(1));
        let mut link = if p == 0 {
            Link::listen(a.addr, &me, &peer, timeout)?
        } else {
            Link::connect(a.addr, &me, &peer, timeout)?
        };
        link.set_io_timeout(timeout);
        // A control message: a frame longer than MAX_CONTROL is refused unread.
        let peer_tag = crate::twopc::channel::exchange(&mut link, p, tag)?;
        Ok((link, peer_tag))
    };
    match up() {
        Ok((link, peer_tag)) if peer_tag == tag => Ok(link),
        Ok((_, peer_tag)) => {
            claim.release();
            bail!("{}; nothing was consumed", mismatch(&peer_tag))
        }
        Err(e) => {
            claim.release();
            Err(e)
        }
    }
}

/// Run one server of the two-party protocol on its shares and write its output share.
///
/// S0 listens, S1 connects; the link is TLS 1.3 with both certificates pinned. Correlated
/// randomness is recorded as consumed in --state-dir before use and refused a second time.
#[derive(Args)]
pub struct ServeArgs {
    /// 0 (listens; evaluates garbled circuits) or 1 (connects; garbles).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub party: u8,
    /// This party's model share (model.pN).
    #[arg(long)]
    pub model: PathBuf,
    /// This party's image share (image.pN).
    #[arg(long)]
    pub image: PathBuf,
    /// This party's correlated randomness (triplets.pN).
    #[arg(long)]
    pub triplets: PathBuf,
    /// This party's opened weights (from `open-weights`), when the triplets were made against
    /// a model mask (`gen-triplets --model-mask`).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Output share (out.pN).
    #[arg(long)]
    pub out: PathBuf,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Nonlinearity engine (gc or gmw); must match the triplet file (default: the file's).
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
}

fn same_id(a: &Option<[u8; 16]>, b: &Option<[u8; 16]>) -> bool {
    a.is_some() && a == b
}

/// The triplet file's checks that do not depend on the network: kind and party, the model
/// and job it was made for, not consumed yet; then opened (checksum verified) for streaming.
/// Returns the header read first, the run's triplet id, and the opened file.
pub(super) fn open_triplets(
    a: &ServeArgs,
    mh: &Header,
    ih: &Header,
) -> Result<(Header, String, Header, triplet_stream::TripletsStream)> {
    let p = a.party;
    let th_only = container::read_header(&a.triplets)?;
    container::expect(&a.triplets, &th_only, Kind::Triplets, Some(p))?;
    if !same_id(&th_only.model_id, &mh.model_id) {
        bail!(
            "{}: this randomness was made for model {} but {} is model {}",
            a.triplets.display(),
            th_only.model_id.as_ref().map(id_hex).unwrap_or_default(),
            a.model.display(),
            mh.model_id.as_ref().map(id_hex).unwrap_or_default()
        );
    }
    if !same_id(&th_only.job_id, &ih.job_id) {
        bail!(
            "{}: this randomness was made for job {} but {} belongs to job {}",
            a.triplets.display(),
            th_only.job_id.as_ref().map(id_hex).unwrap_or_default(),
            a.image.display(),
            ih.job_id.as_ref().map(id_hex).unwrap_or_default()
        );
    }
    let triplet_id = th_only
        .triplet_id
        .as_ref()
        .map(id_hex)
        .with_context(|| format!("{}: header lacks a triplet id", a.triplets.display()))?;
    check_unused(
        &a.link.state_dir,
        p,
        Record::Triplets,
        &triplet_id,
        &a.triplets,
    )?;
    // Checked whole (checksum) now; party 1's triple shares are then read as consumed.
    let (th, tr) = triplet_stream::open(&a.triplets, p)?;
    if th.triplet_id != th_only.triplet_id
        || th.job_id != th_only.job_id
        || th.model_id != th_only.model_id
    {
        bail!(
            "{}: the file changed while it was being opened; run again",
            a.triplets.display()
        );
    }
    Ok((th_only, triplet_id, th, tr))
}

/// The engine the triplet file is for: its header and body must agree, and `--engine`,
/// when given, must name it.
pub(super) fn check_engine(a: &ServeArgs, th: &Header, engine_kind: EngineKind) -> Result<()> {
    if th.info("engine") != Some(engine_kind.name()) {
        bail!(
            "{}: the header names engine {:?} but the body holds {} correlations",
            a.triplets.display(),
            th.info("engine").unwrap_or("none"),
            engine_kind
        );
    }
    if let Some(want) = a.engine {
        if want != engine_kind {
            bail!(
                "{}: this randomness is for the {} engine but --engine {} was given; ask the dealer for `gen-triplets --engine {}` or run with --engine {}",
                a.triplets.display(),
                engine_kind,
                want,
                want,
                engine_kind
            );
        }
    }
    Ok(())
}

/// Claims the triplets, brings up the link and compares session tags (`ids_len` bytes of
/// ids, then "<mask>/<engine>"); on success the randomness is marked used. A mismatch is
/// explained and consumes nothing.
pub(super) fn connect(
    a: &ServeArgs,
    triplet_id: &str,
    tag: &[u8],
    ids_len: usize,
    engine_kind: EngineKind,
    mask_field: &str,
) -> Result<Link> {
    let p = a.party;
    let claim = Claim::take(
        &a.link.state_dir,
        p,
        Record::Triplets,
        triplet_id,
        &a.triplets,
    )?;
    let link = link_up(p, &a.link, claim, tag, |peer_tag| {
        let rest = String::from_utf8_lossy(peer_tag.get(ids_len..).unwrap_or_default());
        let (peer_mask, peer_engine) = rest.rsplit_once('/').unwrap_or(("?", "?"));
        let weights = |m: &str| match m {
            "per-job" => "opens the weights in the job".to_string(),
            id => format!("uses the weights opened under model mask {id}"),
        };
        let peer_base = peer_engine.split('+').next().unwrap_or(peer_engine);
        if peer_engine != engine_kind.wire_name() && peer_base == engine_kind.name() {
            format!(
                "the peer server runs another version of the {peer_base} engine ({peer_engine}, this one {}): run the same ppdenoise version on both servers",
                engine_kind.wire_name()
            )
        } else if peer_engine != engine_kind.wire_name() {
            format!(
                "the peer server runs the {peer_base} engine, this one {engine_kind}: start both with the same --engine and triplets from one `gen-triplets` run"
            )
        } else if peer_mask != mask_field {
            format!(
                "the peer server {}, this one {}: give both servers triplets from one `gen-triplets` run and the opened weights of one `open-weights` run",
                weights(peer_mask),
                weights(mask_field)
            )
        } else {
            "the peer server holds files of a different job, model or dealer run".into()
        }
    })?;

    // From here on the randomness counts as used, whatever happens next.
    mark_used(&a.link.state_dir, p, Record::Triplets, triplet_id)?;
    Ok(link)
}

pub fn serve(a: ServeArgs, json: bool) -> Result<Summary> {
    let p = a.party;
    // Checked before anything is claimed: a bad --out burns no randomness.
    super::state::check_output(&a.out, &[&a.model, &a.image, &a.triplets])?;
    let model_kind = container::read_header(&a.model)?.kind;
    if model_kind == Kind::CnnModelShare {
        return super::server_cnn::serve_cnn(a, json);
    }
    let (mh, ms): (Header, ModelShare) = load(&a.model, Kind::ModelShare, Some(p))?;
    let (ih, is): (Header, ImageShare) = load(&a.image, Kind::ImageShare, Some(p))?;
    is.job
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
    let (th_only, triplet_id, th, tr) = open_triplets(&a, &mh, &ih)?;
    if is_cnn(&ih) || is_cnn(&th) {
        bail!(
            "{}: the image or the randomness was made for a CNN but {} is an MLP's share",
            a.image.display(),
            a.model.display()
        );
    }
    if ih.scale != mh.scale {
        bail!(
            "{}: image encoded at scale {} but the model share uses scale {}",
            a.image.display(),
            ih.scale,
            mh.scale
        );
    }
    let plan = ms
        .share_plan()
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    if tr.lead.widths != plan.widths() || tr.lead.job != is.job {
        bail!(
            "{}: the randomness does not match this model and job (widths {:?} vs {:?})",
            a.triplets.display(),
            tr.lead.widths,
            plan.widths()
        );
    }
    let engine_kind = tr.lead.engine;
    check_engine(&a, &th, engine_kind)?;
    // What the dealer had to make for this engine and these activations (the boolean
    // engine's circuits recorded once): checked against the file's header and length below.
    let deal = crate::dealer::NonlinearDeal::new(engine_kind, &plan.acts);
    if let Some(bd) = &deal.boolean {
        let acts = super::dealer::acts_from_header(&a.triplets, &th, plan.widths().len())?;
        if acts != plan.acts {
            bail!(
                "{}: the dealer sized this randomness for other activation constants than the model share {} holds",
                a.triplets.display(),
                a.model.display()
            );
        }
        let want = serde_json::to_string(&bd.shapes()).expect("shapes serialise");
        if th.info("circuit") != Some(want.as_str()) {
            bail!(
                "{}: made for another boolean circuit (AND gates, outputs per layer: {} here, \
                 {} in the file); the dealer and this server run different versions",
                a.triplets.display(),
                want,
                th.info("circuit").unwrap_or("none")
            );
        }
    }
    crate::formats::bodies::check_geometry(&is.job, plan.patch)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;
    let geo = Geometry::new(is.job.height, is.job.width, plan.patch, is.job.stride);
    crate::dealer::check_stream_bounds(&plan.widths(), geo.num_patches(), tr.lead.batch)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.triplets.display()))?;
    // S1's explicit values: exactly as many as this job consumes (S0 has none).
    let want = if p == 1 {
        crate::dealer::correction_count(&is.job, &plan.widths(), plan.patch, tr.lead.batch, &deal)
    } else {
        0
    };
    if tr.corrections.len() != want as u64 {
        bail!(
            "{}: holds {} explicit triple shares but this job consumes {want}",
            a.triplets.display(),
            tr.corrections.len()
        );
    }
    // The weights: opened once for the model (the triplets then name its mask), or per job.
    let mask_id = th.info("model_mask").map(String::from);
    let opened = match (&mask_id, &a.weights) {
        (None, None) => None,
        (Some(id), None) => bail!(
            "{}: this randomness was made against model mask {id}: give this server its opened weights (--weights, from `open-weights`)",
            a.triplets.display()
        ),
        (None, Some(w)) => bail!(
            "{}: opened weights were given but {} was made without a model mask: ask the dealer for `gen-triplets --model-mask`, or run without --weights",
            w.display(),
            a.triplets.display()
        ),
        (Some(id), Some(w)) => Some(load_opened(w, p, (&a.model, &mh), id, &plan)?),
    };
    let job = is.job.clone();
    let npix = job.height * job.width;
    let image = is
        .data
        .materialise(Stream::ImageShare, npix)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.display()))?;

    // Both servers must hold the same job, model, dealer run, weights and engine; checked
    // before anything derived from a share is sent, so a mismatch burns no randomness.
    // Tag: the three ids (48 bytes), then "<mask>/<engine>" (mask: the model mask's id, or
    // "per-job" when the job opens the weights itself).
    let mut tag = Vec::new();
    for id in [&ih.job_id, &mh.model_id, &th_only.triplet_id] {
        tag.extend_from_slice(id.as_ref().expect("ids checked above"));
    }
    let ids_len = tag.len();
    let mask_field = mask_id.as_deref().unwrap_or("per-job");
    tag.extend_from_slice(format!("{mask_field}/{}", engine_kind.wire_name()).as_bytes());
    // The engine's dealer data (base OTs) parsed before anything is claimed.
    let mut engine = engine_kind.make(p, &tr.base_ot)?;
    let mut link = connect(&a, &triplet_id, &tag, ids_len, engine_kind, mask_field)?;
    let batch = tr.lead.batch;
    let rand = PartyRandomness::streaming(p, tr.lead.seed, tr.corrections);
    let bar = progress_bar(&a, json, geo.num_patches(), "patches");
    let inputs = JobInputs {
        party: p,
        plan: &plan,
        job: &job,
        image: &image,
        rand,
        batch,
        session_tag: tag,
        weights: match &opened {
            Some(o) => Weights::Opened(o),
            None => Weights::PerJob,
        },
    };
    let (canvas, mut report) = with_queued_link(&mut link, |ch| {
        protocol::run(ch, inputs, engine.as_mut(), &mut |d, _| {
            bar.set_position(d as u64)
        })
    })??;
    finish_report(&mut report, &link);
    bar.finish_and_clear();
    let out = OutputShare {
        geometry: geo,
        job,
        scale: plan.out_scale,
        canvas,
    };
    write_output(
        &a,
        [&mh, &ih, &th_only],
        out,
        None,
        &report,
        engine_kind,
        "patches",
    )
}

/// The bytes as the link framed them (the queued channel saw the same messages).
pub(super) fn finish_report(report: &mut protocol::Report, link: &Link) {
    let ls = link.stats();
    report.link.bytes_sent = ls.bytes_sent;
    report.link.bytes_received = ls.bytes_received;
}

/// A progress bar over `len` `unit`s (hidden with --quiet or --json).
pub(super) fn progress_bar(
    a: &ServeArgs,
    json: bool,
    len: usize,
    unit: &str,
) -> indicatif::ProgressBar {
    if a.quiet || json {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "S{{prefix}} {{bar:40}} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"
        ))
        .expect("valid template"),
    );
    b.set_prefix(a.party.to_string());
    b
}

/// Writes the output share, named by the job, model and run (`ids`: the model, image and
/// triplet headers) so the receiver can refuse shares of different runs, and reports.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_output(
    a: &ServeArgs,
    ids: [&Header; 3],
    out: OutputShare,
    network: Option<&str>,
    report: &protocol::Report,
    engine_kind: EngineKind,
    unit: &str,
) -> Result<Summary> {
    let p = a.party;
    let [mh, ih, th] = ids;
    let mut h = Header::new(Kind::OutputShare, p, out.scale);
    h.job_id = ih.job_id;
    h.model_id = mh.model_id;
    // The run's id: the receiver refuses to add shares of two different runs.
    h.triplet_id = th.triplet_id;
    h.shapes.push((
        "canvas".into(),
        vec![out.geometry.canvas_h as u64, out.geometry.canvas_w as u64],
    ));
    if let Some(n) = network {
        h.info.push((NETWORK.into(), n.into()));
    }
    container::write(&a.out, &h, &out).with_context(|| format!("writing {}", a.out.display()))?;
    let out_bytes = std::fs::metadata(&a.out)?.len();
    Ok(Summary {
        lines: vec![format!(
            "S{p} ({engine_kind} engine): {} {unit} in {:.1} s; sent {} bytes, received {} bytes in {} messages; {} AND gates; wrote {}",
            report.patches,
            report.seconds_total,
            report.link.bytes_sent,
            report.link.bytes_received,
            report.link.messages_sent,
            report.engine.and_gates,
            a.out.display()
        )],
        json: serde_json::json!({"ok": true, "command": "serve", "party": p, "engine": engine_kind.name(), "report": report,
            "output": a.out, "download_bytes": out_bytes}),
    })
}
