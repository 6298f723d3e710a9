//! The trusted dealer's step: `gen-triplets`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::gateway::job_from_header;
use super::owner::with_ext;
use super::Summary;
use crate::formats::container::{self, expect, fresh_id, id_hex, Header, Kind};
use crate::plain::geometry::Geometry;
use crate::plain::model::PatchShape;

/// Make the correlated randomness for one job (trusted dealer, offline).
///
/// Reads only the public headers of a model share and an image share (shapes, ids, stride),
/// never their contents. Writes `<out>.p0` (a seed and base OTs) and `<out>.p1` (a seed, base
/// OTs and the explicit triple shares). Each file may be used once: servers record consumed
/// randomness and refuse it a second time.
#[derive(Args)]
pub struct GenTripletsArgs {
    /// A model share of the job's model (either party's; only its header is read).
    #[arg(long)]
    pub model: PathBuf,
    /// An image share of the job (either party's; only its header is read).
    #[arg(long)]
    pub image: PathBuf,
    /// Patches per batch: larger batches mean fewer rounds and more memory.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Output prefix: writes <out>.p0 and <out>.p1.
    #[arg(long, default_value = "triplets")]
    pub out: PathBuf,
}

pub fn patch_from_widths(widths: &[u64]) -> Result<PatchShape> {
    let sq = |n: u64| {
        let r = (n as f64).sqrt().round() as u64;
        (r * r == n).then_some(r as usize)
    };
    match (
        widths.first().and_then(|&w| sq(w)),
        widths.last().and_then(|&w| sq(w)),
    ) {
        // The dealer only counts patches; the aggregation window does not change that.
        (Some(input), Some(output)) if widths.len() >= 2 => Ok(PatchShape {
            input,
            output,
            window_milli: 0,
        }),
        _ => bail!("model layer widths {widths:?} do not describe square patches"),
    }
}

pub fn gen_triplets(a: GenTripletsArgs) -> Result<Summary> {
    let t = Instant::now();
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mh = container::read_header(&a.model)?;
    expect(&a.model, &mh, Kind::ModelShare, None)?;
    let ih = container::read_header(&a.image)?;
    expect(&a.image, &ih, Kind::ImageShare, None)?;
    let widths_u = mh
        .shape("layers")
        .with_context(|| format!("{}: header lacks the layer widths", a.model.display()))?
        .to_vec();
    let patch = patch_from_widths(&widths_u)?;
    let job = job_from_header(&a.image, &ih)?;
    if job.scale != mh.scale {
        bail!(
            "{}: image encoded at scale {} but the model share {} uses scale {}",
            a.image.display(),
            job.scale,
            a.model.display(),
            mh.scale
        );
    }
    let widths: Vec<usize> = widths_u.iter().map(|&w| w as usize).collect();
    let base = crate::twopc::gc_engine::deal_base_ots();
    let (t0, t1) = crate::dealer::generate(&job, &widths, patch, a.batch, base);
    let triplet_id = fresh_id();
    let mut outs = Vec::new();
    let mut bytes = 0;
    for (party, body) in [(0u8, t0), (1u8, t1)] {
        let mut h = Header::new(Kind::Triplets, party, job.scale);
        h.model_id = mh.model_id;
        h.job_id = ih.job_id;
        h.triplet_id = Some(triplet_id);
        h.shapes.push(("layers".into(), widths_u.clone()));
        h.shapes
            .push(("image".into(), vec![job.height as u64, job.width as u64]));
        h.info.push(("batch".into(), a.batch.to_string()));
        let out = with_ext(&a.out, party);
        container::write(&out, &h, &body).with_context(|| format!("writing {}", out.display()))?;
        bytes += std::fs::metadata(&out)?.len();
        outs.push(out.display().to_string());
    }
    let geo = Geometry::new(job.height, job.width, patch, job.stride);
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![format!(
            "correlated randomness for {} patches written to {} and {} ({bytes} bytes, {secs:.2} s); triplet id {}",
            geo.num_patches(),
            outs[0],
            outs[1],
            id_hex(&triplet_id)
        )],
        json: serde_json::json!({
            "ok": true, "command": "gen-triplets", "triplet_id": id_hex(&triplet_id),
            "patches": geo.num_patches(), "outputs": outs, "dealer_bytes": bytes, "seconds": secs,
        }),
    })
}
