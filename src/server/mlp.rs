//! An MLP job (the paper's protocol): its files' checks and its run.

use crate::ring::Party;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::loaded::LoadedWeights;
use super::{assemble, check_engine, open_triplets, Inputs, JobFiles, ReadyJob};
use crate::corr::randomness::PartyRandomness;
use crate::formats::bodies::{is_whole_image, ImageShare, JobParams, OutputShare};
use crate::formats::checks::circuits_from_header;
use crate::formats::container::{Header, Kind};
use crate::formats::facts::PATCHES;
use crate::model::geometry::Geometry;
use crate::ring::plan::Plan;
use crate::ring::share::Stream;
use crate::ring::tiles::{patch_range, Tile};
use crate::twopc::channel::Channel;
use crate::twopc::error::ProtocolError;
use crate::twopc::job::{Report, SecureJob, Weights};
use crate::twopc::mlp::{self, JobInputs};
use crate::twopc::nonlinear::Nonlinear;

pub(super) struct MlpJob {
    plan: Arc<Plan>,
    job: JobParams,
    pub(super) geo: Geometry,
    /// This party's share of the encoded image.
    image: Vec<u64>,
    batch: usize,
    /// The weights opened once for the model, or None when the job opens them itself.
    opened: Option<Arc<LoadedWeights>>,
    /// The tile the triplet file names, and its run of the patch grid.
    tile: Option<(Tile, Range<usize>)>,
}

pub(super) fn prepare(f: JobFiles, inputs: Inputs) -> Result<ReadyJob> {
    let p = f.party;
    let at = |path: &std::path::Path, e: String| anyhow::anyhow!("{}: {e}", path.display());
    let sealed = inputs.first_sealed();
    let Inputs {
        model,
        image,
        triplets,
    } = inputs;
    let super::loaded::Family::Mlp {
        plan,
        sigma,
        weights,
    } = &model.family
    else {
        bail!("{}: is not an MLP's share", f.model.display());
    };
    let mh = model.header.clone();
    let (ih, is): (Header, ImageShare) = image.read(Kind::ImageShare, Some(p))?;
    is.job.validate().map_err(|e| at(&f.image, e))?;
    if is.job.colours != 1 {
        bail!(
            "{}: a colour image ({} planes); {} is an MLP's share, which takes gray images",
            f.image.display(),
            is.job.colours,
            f.model.display()
        );
    }
    // The gateway scaled the image for the sigma* it was told (`--model`, `--model-sigma`):
    // for another, the network would see the noise at the wrong level (CNN jobs are checked
    // the same way, formats::checks).
    if !is_whole_image(&ih) && is.job.model_sigma != *sigma {
        bail!(
            "{}: the image was shared for a model of sigma {}, not for this one (sigma {}): \
             share it with `share-image --model model.pub`",
            f.image.display(),
            is.job.model_sigma,
            sigma
        );
    }
    let t = open_triplets(&f, &mh, &ih, triplets)?;
    let (th, tr, facts) = (&t.header, &t.stream, &t.facts);
    if is_whole_image(&ih) || is_whole_image(th) {
        bail!(
            "{}: the image or the randomness was made for a CNN or a CNN graph but {} is an MLP's share",
            f.image.display(),
            f.model.display()
        );
    }
    if ih.scale != mh.scale {
        bail!(
            "{}: image encoded at scale {} but the model share uses scale {}",
            f.image.display(),
            ih.scale,
            mh.scale
        );
    }
    let plan = plan.clone();
    if tr.lead.widths != plan.widths() || tr.lead.job != is.job {
        bail!(
            "{}: the randomness does not match this model and job (widths {:?} vs {:?})",
            f.triplets.display(),
            tr.lead.widths,
            plan.widths()
        );
    }
    let engine_kind = tr.lead.engine;
    check_engine(&f, facts, engine_kind)?;
    // What the dealer had to make for this engine and these activations (the boolean
    // engine's circuits recorded once): checked against the file's header and length below.
    let circuits = plan.circuits();
    let deal = crate::dealer::NonlinearDeal::new(engine_kind, &circuits);
    // Both engines: the dealer's elementwise triples follow from the circuits' kind.
    if circuits_from_header(&f.triplets, th, plan.widths().len())? != circuits {
        bail!(
            "{}: the dealer sized this randomness for other activation circuits than the model share {} holds",
            f.triplets.display(),
            f.model.display()
        );
    }
    if let Some(bd) = &deal.boolean {
        let want = serde_json::to_string(&bd.shapes()).expect("shapes serialise");
        if facts.circuit.as_deref() != Some(want.as_str()) {
            bail!(
                "{}: made for another boolean circuit (AND gates, outputs per layer: {} here, \
                 {} in the file); the dealer and this server run different versions",
                f.triplets.display(),
                want,
                facts.circuit.as_deref().unwrap_or("none")
            );
        }
    }
    crate::formats::bodies::check_geometry(&is.job, plan.patch).map_err(|e| at(&f.image, e))?;
    let geo = Geometry::new(is.job.height, is.job.width, plan.patch, is.job.stride);
    // A tile runs its run of the patch grid: its randomness is sized for those patches.
    let tile = match facts.tile {
        None => None,
        Some((tile, _)) => {
            let run = patch_range(geo.num_patches(), tile).map_err(|e| at(&f.triplets, e))?;
            Some((tile, run))
        }
    };
    let patches = tile.as_ref().map_or(geo.num_patches(), |(_, r)| r.len());
    crate::dealer::check_stream_bounds(&plan.widths(), patches, tr.lead.batch)
        .map_err(|e| at(&f.triplets, e.to_string()))?;
    // S1's explicit values: exactly as many as this job consumes (S0 has none).
    let want = if p.is_s1() {
        crate::dealer::correction_count(&plan.widths(), patches, tr.lead.batch, &deal).bits
    } else {
        0
    };
    if tr.corrections.len() != want {
        bail!(
            "{}: holds {} bits of explicit triple shares (packed at their widths) but this job consumes {want}",
            f.triplets.display(),
            tr.corrections.len()
        );
    }
    // The weights: opened once for the model (the triplets then name its mask), or per job.
    let mask_id = facts.model_mask.clone();
    let opened = match (&mask_id, weights) {
        (None, None) => None,
        (Some(id), None) => bail!(
            "{}: this randomness was made against model mask {id}: give this server its opened weights (--weights, from `open-weights`)",
            f.triplets.display()
        ),
        (None, Some(w)) => bail!(
            "{}: opened weights were given but {} was made without a model mask: ask the dealer for `gen-triplets --model-mask`, or run without --weights",
            w.path.display(),
            f.triplets.display()
        ),
        (Some(id), Some(w)) => {
            w.check_for(p, (&f.triplets, facts), id)?;
            Some(w.clone())
        }
    };
    let opened_digest = opened.as_ref().map(|w| w.digest);
    let npix = is.job.height * is.job.width;
    let image = is
        .data
        .materialise(Stream::ImageShare, npix)
        .map_err(|e| at(&f.image, e))?;
    let batch = tr.lead.batch;
    let mask_field = mask_id.unwrap_or_else(|| "per-job".into());
    let work = Box::new(MlpJob {
        plan,
        job: is.job,
        geo,
        image,
        batch,
        opened,
        tile,
    });
    let name = model.name.clone();
    assemble(
        f,
        (mh, ih, sealed, name),
        t,
        (mask_field, opened_digest),
        work,
    )
}

impl SecureJob for MlpJob {
    /// Patches this job computes: its tile's, or the whole grid.
    fn steps(&self) -> (usize, &'static str) {
        let n = self
            .tile
            .as_ref()
            .map_or(self.geo.num_patches(), |(_, r)| r.len());
        (n, "patches")
    }

    fn unit(&self) -> &'static str {
        "patches"
    }

    fn network(&self) -> Option<&'static str> {
        None
    }

    /// Which tile, and its patches.
    fn tile_facts(&self) -> Vec<(String, String)> {
        match &self.tile {
            None => Vec::new(),
            Some((t, r)) => t.facts(PATCHES, r),
        }
    }

    fn run(
        &self,
        ch: &mut dyn Channel,
        party: Party,
        rand: PartyRandomness,
        session_tag: Vec<u8>,
        engine: &mut dyn Nonlinear,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(OutputShare, Report), ProtocolError> {
        let inputs = JobInputs {
            party,
            plan: &self.plan,
            job: &self.job,
            image: &self.image,
            rand,
            batch: self.batch,
            session_tag,
            weights: match &self.opened {
                Some(w) => Weights::Opened(&w.opened),
                None => Weights::PerJob,
            },
            patches: self.tile.as_ref().map(|(_, r)| r.clone()),
        };
        let (canvas, report) = mlp::run(ch, inputs, engine, &mut |d, _| progress(d))?;
        let out = OutputShare {
            geometry: self.geo,
            job: self.job.clone(),
            scale: self.plan.out_scale,
            canvas,
        };
        Ok((out, report))
    }
}
