//! A CNN graph's job (every convolutional model, DnCNN and FFDNet included: docs/graph.md):
//! its files checked against the plan each party rebuilt from the graph's public description,
//! and the graph protocol ([`crate::twopc::graph`]) on the image padded to the graph's stride.

use crate::ring::Party;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::{assemble, check_engine, open_triplets, Inputs, JobFiles, ReadyJob};
use crate::corr::randomness::PartyRandomness;
use crate::formats::bodies::{is_graph, ImageShare, JobParams, OutputShare, GRAPH};
use crate::formats::checks::{
    check_colours, check_noise_map, check_relu_batch, check_whole_image_job, dealt_for_graph,
};
use crate::formats::container::Kind;
use crate::formats::facts::ROWS;
use crate::model::geometry::Geometry;
use crate::model::mlp::PatchShape;
use crate::ring::graph::{padded_dims, GraphPlan};
use crate::ring::share::Stream;
use crate::ring::tiles::{Band, Tile};
use crate::twopc::channel::Channel;
use crate::twopc::error::ProtocolError;
use crate::twopc::graph::{self, GraphJobInputs};
use crate::twopc::job::{Report, SecureJob, Weights};
use crate::twopc::nonlinear::Nonlinear;

pub(super) struct GraphJob {
    plan: Arc<GraphPlan>,
    job: JobParams,
    /// The image's size padded to the plan's stride (what the protocol runs on).
    padded: (usize, usize),
    /// This party's share of the encoded image, padded by replication (a public, linear
    /// map of the share, as the oracle pads the image); a tile's: its band's rows of it.
    image: Vec<u64>,
    relu_batch: usize,
    /// A tile: which one, and its band (rows of the padded image it runs on, image rows it
    /// keeps).
    tile: Option<(Tile, Band)>,
}

/// The image's sides rounded up to the plan's stride, checked against every tensor's size.
fn padded(plan: &GraphPlan, h: usize, w: usize) -> Result<(usize, usize), String> {
    let (ph, pw) = padded_dims(plan.stride, h, w);
    plan.dims(ph, pw)
        .map_err(|e| format!("a {h} x {w} image (padded to {ph} x {pw}): {e}"))?;
    Ok((ph, pw))
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
    let super::loaded::Family::Graph(plan) = &model.family else {
        bail!("{}: is not a CNN graph's share", f.model.display());
    };
    let mh = model.header.clone();
    let (ih, is): (_, ImageShare) = image.read(Kind::ImageShare, Some(p))?;
    is.job.validate().map_err(|e| at(&f.image, e))?;
    if !is_graph(&ih) {
        bail!(
            "{}: the image was not shared for a CNN graph; share it for this one with `share-image --model model.pub`",
            f.image.display()
        );
    }
    let t = open_triplets(&f, &mh, &ih, triplets)?;
    let (tr, facts) = (&t.stream, &t.facts);
    check_whole_image_job(&f.image, &is.job, &mh)?;
    check_colours(&f.image, &is.job, plan.colours())?;
    check_noise_map(&f.image, &ih, plan.inputs().map.is_some())?;
    if facts.model_mask.is_some() {
        bail!(
            "{}: names a model mask, which CNN graph jobs do not use yet",
            f.triplets.display()
        );
    }
    check_relu_batch(tr.lead.batch).map_err(|e| at(&f.triplets, e.to_string()))?;
    let plan = plan.clone();
    let (h, w) = (is.job.height, is.job.width);
    if ih.scale != plan.params.s || is.job.scale != plan.params.s {
        bail!(
            "{}: image encoded at scale {} (header {}) but the graph takes scale {}",
            f.image.display(),
            is.job.scale,
            ih.scale,
            plan.params.s
        );
    }
    let (ph, pw) = padded(&plan, h, w).map_err(|e| at(&f.image, e))?;
    // A tile runs on its band of the padded image: the dealer sized its randomness so.
    let tile = match &facts.tile {
        None => None,
        Some((t, label)) => {
            let band = plan
                .band(h, w, *t)
                .map_err(|e| at(&f.triplets, format!("tile {label}: {e}")))?;
            Some((*t, band))
        }
    };
    let rows = tile.as_ref().map_or(ph, |(_, b)| b.height());
    // The dealer's graph (from the public header it was given) must be this share's.
    if !dealt_for_graph(facts, &mh) {
        bail!(
            "{}: this randomness was made for another CNN graph (structure or fixed point) than {} holds",
            f.triplets.display(),
            f.model.display()
        );
    }
    if tr.lead.widths != plan.channels() || tr.lead.job != is.job {
        bail!(
            "{}: the randomness does not match this model and job",
            f.triplets.display()
        );
    }
    let engine_kind = tr.lead.engine;
    check_engine(&f, facts, engine_kind)?;
    let want_circuit = crate::dealer::graph::circuit_shapes(&plan, rows, pw, engine_kind)
        .map_err(|e| at(&f.image, e))?;
    if facts.circuit.as_deref() != Some(want_circuit.as_str()) {
        bail!(
            "{}: made for other circuits ({} here, {} in the file); the dealer and this server run different versions",
            f.triplets.display(),
            want_circuit,
            facts.circuit.as_deref().unwrap_or("none")
        );
    }
    let want = if p.is_s1() {
        crate::dealer::graph::correction_count(&plan, rows, pw, engine_kind, tr.lead.batch)
            .map_err(|e| at(&f.image, e))?
            .bits
    } else {
        0
    };
    if tr.corrections.len() != want {
        bail!(
            "{}: holds {} bits of explicit values (packed at their widths) but this job consumes {want}",
            f.triplets.display(),
            tr.corrections.len()
        );
    }
    let inputs = plan.inputs();
    let image = is
        .data
        .materialise(Stream::ImageShare, inputs.len(h, w))
        .map_err(|e| at(&f.image, e))?;
    let mut image = inputs.pad(&image, (h, w), (ph, pw));
    if let Some((_, band)) = &tile {
        image = inputs.rows(&image, (ph, pw), band.input.clone());
    }
    let relu_batch = tr.lead.batch;
    let work = Box::new(GraphJob {
        plan,
        job: is.job,
        padded: (rows, pw),
        image,
        relu_batch,
        tile,
    });
    let name = model.name.clone();
    assemble(f, (mh, ih, sealed, name), t, ("per-job".into(), None), work)
}

impl SecureJob for GraphJob {
    /// What the protocol's progress counts: the plan's steps.
    fn steps(&self) -> (usize, &'static str) {
        (self.plan.steps.len() - 1, "steps")
    }

    fn unit(&self) -> &'static str {
        "pixels"
    }

    fn network(&self) -> Option<&'static str> {
        Some(GRAPH)
    }

    /// Which tile, and the image rows its canvas holds.
    fn tile_facts(&self) -> Vec<(String, String)> {
        match &self.tile {
            None => Vec::new(),
            Some((t, b)) => t.facts(ROWS, &b.output),
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
        let (ph, pw) = self.padded;
        let inputs = GraphJobInputs {
            party,
            plan: &self.plan,
            height: ph,
            width: pw,
            image: &self.image,
            rand,
            session_tag,
            weights: Weights::PerJob,
            relu_batch: self.relu_batch,
        };
        let (out, report) = graph::run(ch, inputs, engine, &mut |d, _| progress(d))?;
        // The image's own pixels of the padded output (the oracle crops the same way); a
        // tile's own rows of its band's.
        let w = self.job.width;
        let whole = Band {
            input: 0..ph,
            output: 0..self.job.height,
        };
        let band = self.tile.as_ref().map_or(&whole, |(_, b)| b);
        // A colour image's planes one after another, (colours h) x w, as a CNN's.
        let canvas: Vec<u64> = out
            .v
            .chunks_exact(ph * pw)
            .flat_map(|plane| self.plan.band_output(plane, pw, w, band))
            .collect();
        let h = band.output.len() * self.plan.colours();
        // Image-sized, as a CNN's: 1x1 "patches" at stride 1.
        let one = PatchShape {
            input: 1,
            output: 1,
            window_milli: 0,
        };
        let out = OutputShare {
            geometry: Geometry::new(h, w, one, 1),
            job: self.job.clone(),
            scale: self.plan.out_scale(),
            canvas,
        };
        Ok((out, report))
    }
}
