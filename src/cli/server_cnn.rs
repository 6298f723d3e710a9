//! `serve` for a CNN job: the same files, checks, claim and link as an MLP job
//! ([`super::server`]), the CNN's plan and protocol ([`crate::twopc::cnn`]).

use anyhow::{bail, Result};

use super::owner::cnn_plan_from_header;
use super::server::{
    check_engine, connect, finish_report, open_triplets, progress_bar, write_output, ServeArgs,
};
use super::Summary;
use crate::dealer::randomness::PartyRandomness;
use crate::formats::bodies::public_cnn_plan;
use crate::formats::bodies::{is_cnn, load, CnnModelShare, ImageShare, OutputShare, CNN};
use crate::formats::container::Kind;
use crate::plain::geometry::Geometry;
use crate::plain::model::PatchShape;
use crate::ring::share::Stream;
use crate::twopc::channel::with_queued_link;
use crate::twopc::cnn::{self, CnnJobInputs};
use crate::twopc::protocol::Weights;

pub fn serve_cnn(a: ServeArgs, json: bool) -> Result<Summary> {
    let p = a.party;
    let at = |path: &std::path::Path, e: String| anyhow::anyhow!("{}: {e}", path.display());
    let (mh, ms): (_, CnnModelShare) = load(&a.model, Kind::CnnModelShare, Some(p))?;
    let (ih, is): (_, ImageShare) = load(&a.image, Kind::ImageShare, Some(p))?;
    is.job.validate().map_err(|e| at(&a.image, e))?;
    if !is_cnn(&ih) {
        bail!(
            "{}: the image was shared for an MLP; share it for this CNN with `share-image --model model.pub`",
            a.image.display()
        );
    }
    if a.weights.is_some() {
        bail!("--weights: weights opened once per model are not supported for CNNs yet; run without it");
    }
    let (th_only, triplet_id, th, tr) = open_triplets(&a, &mh, &ih)?;
    super::dealer::check_cnn_job(&a.image, &is.job, &mh)?;
    if th.info("model_mask").is_some() {
        bail!(
            "{}: names a model mask, which CNN jobs do not use",
            a.triplets.display()
        );
    }
    super::dealer::check_relu_batch(tr.lead.batch).map_err(|e| at(&a.triplets, e.to_string()))?;
    let plan = ms.share_plan().map_err(|e| at(&a.model, e))?;
    let (h, w) = (is.job.height, is.job.width);
    // (The stride was checked with the model's sigma* by check_cnn_job.)
    if ih.scale != plan.params.s || is.job.scale != plan.params.s {
        bail!(
            "{}: image encoded at scale {} but the CNN takes scale {}",
            a.image.display(),
            is.job.scale,
            plan.params.s
        );
    }
    plan.check_image(h, w).map_err(|e| at(&a.image, e))?;
    // The dealer's plan (from the public header it was given) must be this share's.
    if !is_cnn(&th) || cnn_plan_from_header(&a.triplets, &th)? != public_cnn_plan(&plan) {
        bail!(
            "{}: this randomness was made for another CNN plan (shapes or fixed point) than {} holds",
            a.triplets.display(),
            a.model.display()
        );
    }
    if tr.lead.widths != plan.channels() || tr.lead.job != is.job {
        bail!(
            "{}: the randomness does not match this model and job",
            a.triplets.display()
        );
    }
    let engine_kind = tr.lead.engine;
    check_engine(&a, &th, engine_kind)?;
    let want_circuit = crate::dealer::cnn::circuit_shape(&plan, engine_kind);
    if th.info("circuit") != Some(want_circuit.as_str()) {
        bail!(
            "{}: made for another ReLU circuit ({} here, {} in the file); the dealer and this server run different versions",
            a.triplets.display(),
            want_circuit,
            th.info("circuit").unwrap_or("none")
        );
    }
    let want = if p == 1 {
        crate::dealer::cnn::correction_count(&plan, h, w, engine_kind, tr.lead.batch)
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
    let image = is
        .data
        .materialise(Stream::ImageShare, h * w)
        .map_err(|e| at(&a.image, e))?;
    let mut tag = Vec::new();
    for id in [&ih.job_id, &mh.model_id, &th_only.triplet_id] {
        tag.extend_from_slice(
            id.as_ref()
                .expect("ids checked when the triplets were opened"),
        );
    }
    let ids_len = tag.len();
    let mask_field = "per-job";
    tag.extend_from_slice(format!("{mask_field}/{}", engine_kind.wire_name()).as_bytes());
    let mut engine = engine_kind.make(p, &tr.base_ot)?;
    let mut link = connect(&a, &triplet_id, &tag, ids_len, engine_kind, mask_field)?;
    let bar = progress_bar(&a, json, plan.layers.len(), "layers");
    let inputs = CnnJobInputs {
        party: p,
        plan: &plan,
        height: h,
        width: w,
        image: &image,
        rand: PartyRandomness::streaming(p, tr.lead.seed, tr.corrections),
        session_tag: tag,
        weights: Weights::PerJob,
        relu_batch: tr.lead.batch,
    };
    let (output, mut report) = with_queued_link(&mut link, |ch| {
        cnn::run(ch, inputs, engine.as_mut(), &mut |d, _| {
            bar.set_position(d as u64)
        })
    })??;
    finish_report(&mut report, &link);
    bar.finish_and_clear();
    // The output is image-sized: a geometry of 1x1 "patches" at stride 1 (canvas = image,
    // every weight 1), so the receiver's checks apply unchanged.
    let one = PatchShape {
        input: 1,
        output: 1,
        window_milli: 0,
    };
    let out = OutputShare {
        geometry: Geometry::new(h, w, one, 1),
        job: is.job,
        scale: plan.params.out_scale(),
        canvas: output,
    };
    write_output(
        &a,
        [&mh, &ih, &th_only],
        out,
        Some(CNN),
        &report,
        engine_kind,
        "pixels",
    )
}
