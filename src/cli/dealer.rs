//! The trusted dealer's commands: `gen-triplets` (parsed here, dealt by
//! [`crate::job::dealer`], a study's by [`crate::study::deal`]) and `gen-model-mask`.

use crate::ring::Party;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser;
use clap::Args;

use super::keys::SealArgs;
use super::owner::with_ext;
use super::server::LinkArgs;
use super::Summary;
use crate::corr::engine_kind::EngineKind;
use crate::fileio::atomic::Staged;
use crate::formats::bodies::{is_whole_image, DealerMask, ModelMask};
use crate::formats::container::{self, fresh_id, id_hex, Header, Kind};
use crate::formats::signing::Role;
use crate::job::dealer::{deal_job, dealer_header, patch_from_widths, DealJob};
use crate::job::offline::{deal_together, DealTogether};
use crate::ring::share::fresh_seed;
use crate::server::session::LinkConfig;

/// Make the correlated randomness for one job (trusted dealer, offline; with --party, the
/// two servers together, no dealer).
///
/// Reads only public headers (`model.pub`, `image.pub`: shapes, ids, stride), never a share.
/// Writes `<out>.p0` (a seed and base OTs) and `<out>.p1` (a seed, base OTs and the explicit
/// triple shares). Each file may be used once: servers record consumed
/// randomness and refuse it a second time.
#[derive(Args, Clone)]
pub struct GenTripletsArgs {
    /// The model's public header (model.pub from `share-model`).
    #[arg(long)]
    pub model: PathBuf,
    /// The job's public header (image.pub from `share-image`).
    #[arg(long, required_unless_present = "study")]
    pub image: Option<PathBuf>,
    /// Patches per batch: larger batches mean fewer rounds and more memory (default: 128 for
    /// gc, 2048 for gmw). For a CNN: ReLU elements per circuit run (default: 2^20 for gc,
    /// 2^23 for gmw).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Nonlinearity engine the servers will run: gmw (boolean shares, dealer AND triples) or
    /// gc (garbled circuits).
    #[arg(long, value_enum, default_value_t = EngineKind::default())]
    pub engine: EngineKind,
    /// The dealer's record of the model's weight mask (<prefix>.dealer from
    /// `gen-model-mask`), when the servers opened the weights once (`open-weights`): the job's
    /// matrix triples are then made against that mask and the job opens no weights.
    #[arg(long)]
    pub model_mask: Option<PathBuf>,
    /// Output prefix: writes <out>.p0 and <out>.p1 (with --tiles, <out>.t<I>.p0 and
    /// <out>.t<I>.p1 for every tile I).
    #[arg(long, default_value = "triplets")]
    pub out: PathBuf,
    /// Split the job into this many tiles (CNN jobs: bands of output rows), each with its
    /// own fresh randomness, for as many server pairs: `serve` runs the tile its triplet
    /// file names, and `reconstruct` puts the tiles' outputs together.
    #[arg(long)]
    pub tiles: Option<usize>,
    /// With --tiles: make tile I only (0-based), e.g. again, with fresh randomness, for a
    /// tile whose servers died (its first randomness is spent and refused).
    #[arg(long, requires = "tiles")]
    pub tile: Option<usize>,
    /// Make the randomness of a study's slices (a folder from `share-study`, public parts:
    /// study.json and slice<I>/image.pub), each its own job with fresh randomness, into
    /// slice<I>/triplets.p0 and .p1. By default every slice that is not finished on both
    /// servers by the completion records in the folder (so a study that died is dealt again
    /// only where it must be); --slices names them instead.
    #[arg(long, conflicts_with_all = ["image", "out", "tiles"])]
    pub study: Option<PathBuf>,
    /// With --study: deal these slices only, e.g. `3` or `0-9,12` (`study-status` prints the
    /// unfinished ones).
    #[arg(long, requires = "study")]
    pub slices: Option<String>,
    /// With --study: where the servers' completion records are, when not in the study
    /// folder (a dealer with a folder of its own gives --slices instead).
    #[command(flatten)]
    pub dirs: super::study::PartyDirs,
    /// With --study: the servers' keys whose completion records say a slice is finished
    /// (else any record whose own signature verifies).
    #[command(flatten)]
    pub records: super::keys::RecordKeysArgs,
    #[command(flatten)]
    pub seal: SealArgs,
    /// With --study: no line per slice dealt (on stderr).
    #[arg(long)]
    pub quiet: bool,
    /// Deal without a dealer: this server's half (0 or 1) of the job's randomness, made with
    /// the peer server over their pinned link, both running `gen-triplets --party` with the
    /// same headers (S0 listens on --addr, S1 connects). Writes <out>.p<N> only, neither
    /// sealed nor signed: it never leaves this server. With --study, every slice's (both
    /// servers must name the same slices); with --tiles, every tile's (or --tile's), for
    /// one server pair. So far CNN graph jobs on the gc engine (--engine gc).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1).try_map(Party::try_from),
          conflicts_with_all = ["model_mask", "to_s0", "to_s1", "sign_key"])]
    pub party: Option<Party>,
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// With `gen-triplets --party`: how this server reaches its peer (as `serve` does).
#[derive(Args, Clone, Default)]
pub struct PeerArgs {
    /// With --party: this server's private key and certificate (from keygen).
    #[arg(long, requires = "party")]
    pub key: Option<PathBuf>,
    #[arg(long, requires = "party")]
    pub cert: Option<PathBuf>,
    /// With --party: the only certificate the peer server may present.
    #[arg(long, requires = "party")]
    pub peer_cert: Option<PathBuf>,
    /// With --party: S0 listens on it, S1 connects to it (default 127.0.0.1:7455).
    #[arg(long, requires = "party")]
    pub addr: Option<SocketAddr>,
    /// With --party: seconds to wait for the peer to appear, and for any single message
    /// (default 600: the peer's lattice products can take minutes between two messages).
    #[arg(long, requires = "party")]
    pub timeout: Option<u64>,
    /// With --party 0: handshake only with connections from these addresses.
    #[arg(long, value_delimiter = ',', requires = "party")]
    pub peer_addr: Vec<std::net::IpAddr>,
    /// With --party 0: write the port it listens on to this file once bound.
    #[arg(long, value_name = "FILE", requires = "party")]
    pub port_file: Option<PathBuf>,
}

impl PeerArgs {
    /// The link of `party`, every file named and nothing given that only the other party
    /// uses.
    fn config(&self, party: Party) -> Result<LinkConfig> {
        let need = |v: &Option<PathBuf>, flag: &str| {
            v.clone().with_context(|| {
                format!("--party: give {flag} (the link's keys from keygen, as for serve)")
            })
        };
        // The link as `serve` takes it, and its checks of what only S0 may be given.
        let link = LinkArgs {
            key: need(&self.key, "--key")?,
            cert: need(&self.cert, "--cert")?,
            peer_cert: need(&self.peer_cert, "--peer-cert")?,
            addr: self
                .addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7455))),
            timeout: self.timeout.unwrap_or(600),
            // No randomness is consumed in a dealing: nothing is recorded.
            state_dir: PathBuf::new(),
            peer_addr: self.peer_addr.clone(),
            port_file: self.port_file.clone(),
        };
        link.check(party)?;
        Ok(link.config())
    }
}

/// Make a model's weight mask (trusted dealer, once per model).
///
/// Reads only the model's public header (`model.pub`). Writes <out>.p0 and <out>.p1 (each
/// server's share of the mask, for `open-weights`) and <out>.dealer, the dealer's private
/// record from which `gen-triplets --model-mask` makes every job's triples against the mask.
#[derive(Args)]
pub struct GenModelMaskArgs {
    /// The model's public header (model.pub from `share-model`).
    #[arg(long)]
    pub model: PathBuf,
    /// Output prefix: writes <out>.p0, <out>.p1 and <out>.dealer.
    #[arg(long, default_value = "mask")]
    pub out: PathBuf,
    #[command(flatten)]
    pub seal: SealArgs,
    /// Replace an existing <out>.dealer (the weights opened under it can then serve no more
    /// jobs).
    #[arg(long)]
    pub force: bool,
}

/// The dealer's private record of a model mask: `<prefix>.dealer`.
pub fn dealer_record(prefix: &Path) -> PathBuf {
    crate::job::with_suffix(prefix, ".dealer")
}

pub fn gen_model_mask(a: GenModelMaskArgs) -> Result<Summary> {
    let outs_to = a.seal.outputs(Role::Dealer)?;
    let mh = dealer_header(&a.model, Kind::PublicModel, Kind::ModelShare)?;
    if is_whole_image(&mh) {
        bail!("{}: weights opened once per model are not supported for CNNs (and CNN graphs) yet; their jobs open their weights in the job", a.model.display());
    }
    let layers = mh
        .shape("layers")
        .with_context(|| format!("{}: header lacks the layer widths", a.model.display()))?
        .to_vec();
    patch_from_widths(&layers).with_context(|| format!("{}", a.model.display()))?;
    if mh.model_id.is_none() {
        bail!("{}: header lacks the model id", a.model.display());
    }
    let seeds = [fresh_seed(), fresh_seed()];
    let mask_id = id_hex(&fresh_id());
    let header = |kind: Kind, party: Party| {
        let mut h = Header::new(kind, party, mh.scale);
        h.model_id = mh.model_id;
        h.shapes.push(("layers".into(), layers.clone()));
        h.info
            .push((crate::formats::facts::MODEL_MASK.into(), mask_id.clone()));
        h
    };
    let outs = [
        with_ext(&a.out, Party::S0),
        with_ext(&a.out, Party::S1),
        dealer_record(&a.out),
    ];
    if outs[2].exists() && !a.force {
        bail!(
            "{}: a dealer's model mask record exists: replacing it would leave the weights opened under it without triplets; choose another --out, or give --force",
            outs[2].display()
        );
    }
    // The three files appear together or not at all; the dealer's record is moved into
    // place first (a server mask without it could never be used).
    let mut set = Staged::default();
    container::stage(
        &mut set,
        &outs[2],
        &header(Kind::DealerMask, Party::S0),
        &DealerMask { seeds },
        outs_to.public(),
    )?;
    for p in Party::BOTH {
        container::stage(
            &mut set,
            &outs[p as usize],
            &header(Kind::ModelMask, p),
            &ModelMask {
                seed: seeds[p as usize],
            },
            outs_to.party(p),
        )?;
    }
    set.commit()?;
    let outs: Vec<String> = outs.iter().map(|p| p.display().to_string()).collect();
    Ok(Summary {
        lines: vec![format!(
            "model mask {mask_id} for model {}: {} and {} (one per server, for `open-weights`), {} (the dealer keeps it, private: for `gen-triplets --model-mask`)",
            id_hex(&mh.model_id.expect("checked")),
            outs[0],
            outs[1],
            outs[2]
        )],
        json: serde_json::json!({"ok": true, "command": "gen-model-mask", "model_mask": mask_id, "outputs": outs}),
    })
}

pub fn gen_triplets(a: GenTripletsArgs) -> Result<Summary> {
    if let Some(dir) = &a.study {
        return gen_study_triplets(&a, dir);
    }
    if a.slices.is_some() {
        bail!("--slices: applies to a study (--study) only");
    }
    let image = a
        .image
        .as_deref()
        .context("--image (the job's image.pub) is required without --study")?;
    if let Some(party) = a.party {
        let together = DealTogether {
            job: a.job(image),
            party,
            link: a.peer.config(party)?,
        };
        return deal_together(&together);
    }
    let to = a.seal.outputs(Role::Dealer)?;
    deal_job(&a.job(image), &to)
}

impl GenTripletsArgs {
    /// The job these arguments ask for, of the image header `image`.
    fn job(&self, image: &Path) -> DealJob {
        DealJob {
            model: self.model.clone(),
            image: image.to_path_buf(),
            batch: self.batch,
            engine: self.engine,
            model_mask: self.model_mask.clone(),
            out: self.out.clone(),
            tiles: self.tiles,
            tile: self.tile,
        }
    }
}

/// `gen-triplets --study`: every slice's randomness, as `gen-triplets` makes a job's.
fn gen_study_triplets(a: &GenTripletsArgs, dir: &Path) -> Result<Summary> {
    let study = crate::study::deal::StudyDeal {
        dir,
        // Every slice's image and prefix are its own.
        job: a.job(Path::new("")),
        slices: a.slices.as_deref(),
        dirs: a.dirs.plain(),
        quiet: a.quiet,
        together: match a.party {
            Some(p) => Some((p, a.peer.config(p)?)),
            None => None,
        },
    };
    crate::study::deal::deal_study(&study, &|| a.records.load(&Party::BOTH), &|| {
        a.seal.outputs(Role::Dealer)
    })
}
