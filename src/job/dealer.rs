//! The dealer's job-level step: one job's correlated randomness (or its tiles'), made from
//! the public headers alone and written as each server's pair of triplet files
//! (`gen-triplets`, and a study's slices). The randomness itself is src/dealer/.

use crate::ring::Party;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use zeroize::Zeroize;

use super::{with_ext, with_suffix, Outputs, Summary};
use crate::corr::base_ots::{base_ot_digests, BASE_OT};
use crate::corr::engine_kind::EngineKind;
use crate::corr::masks::{mask_seed_digests, MASK_SEEDS};
use crate::dealer::{DealSeeds, NonlinearDeal};
use crate::formats::bodies::{
    is_graph, is_whole_image, DealerMask, JobParams, Triplets, TripletsLead, FIXED_POINT, GRAPH,
    GRAPH_DESCRIPTION, NETWORK,
};
use crate::formats::checks::{
    check_relu_batch, check_same_model, check_whole_image_job, circuits_from_header,
    copy_circuit_entries, graph_plan_from_header, mask_id_of,
};
use crate::formats::container::{self, expect, fresh_id, id_hex, Header, Kind};
use crate::formats::facts::job_from_header;
use crate::formats::facts::{CIRCUIT, ENGINE, MODEL_MASK, TILE};
use crate::formats::triplet_stream;
use crate::model::geometry::Geometry;
use crate::model::mlp::PatchShape;
use crate::ring::share::Seed;
use crate::ring::tiles::{patch_range, Tile};

/// Checks public layer widths read from a header (the dealer sizes everything from them):
/// 2 to MAX_LAYERS + 1 entries, none zero, at most MAX_MODEL_VALUES weights and biases.
fn check_public_widths(widths: &[u64]) -> Result<(), String> {
    use crate::ring::plan::MAX_LAYERS;
    if widths.len() < 2 || widths.len() > MAX_LAYERS + 1 {
        return Err(format!(
            "{} layer widths (2 to {} supported)",
            widths.len(),
            MAX_LAYERS + 1
        ));
    }
    if widths.contains(&0) {
        return Err(format!("layer widths {widths:?} include 0"));
    }
    crate::ring::plan::count_model_values(widths).map(|_| ())
}

pub fn patch_from_widths(widths: &[u64]) -> Result<PatchShape> {
    check_public_widths(widths).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sq = |n: u64| {
        let r = (n as f64).sqrt().round() as u64;
        (r * r == n).then_some(r as usize)
    };
    match (
        widths.first().and_then(|&w| sq(w)),
        widths.last().and_then(|&w| sq(w)),
    ) {
        // The dealer only counts patches; the aggregation window does not change that.
        (Some(input), Some(output)) if output <= input && (input - output) % 2 == 0 => {
            Ok(PatchShape {
                input,
                output,
                window_milli: 0,
            })
        }
        _ => bail!("model layer widths {widths:?} do not describe square patches with the output centred in the input"),
    }
}

/// Reads the public header the dealer works from: a `.pub` file of kind `public`, or (accepted,
/// with a warning: the dealer should not hold a server's share) a share of kind `share`.
pub fn dealer_header(path: &Path, public: Kind, share: Kind) -> Result<Header> {
    // The whole file is checked (a streaming pass): a corrupted header is refused here.
    let h = container::verify(path)?;
    if h.kind == share {
        eprintln!(
            "warning: {} is S{}'s share; the dealer reads only its header and should be given the public header file (<prefix>.pub) instead",
            path.display(),
            h.party
        );
        expect(path, &h, share, None)?;
    } else if h.kind != public {
        bail!(
            "{}: expected a {} (the <prefix>.pub file; a {} is accepted too) but this file is a {}",
            path.display(),
            public.name(),
            share.name(),
            h.kind.name()
        );
    } else {
        expect(path, &h, public, None)?;
    }
    Ok(h)
}

/// What every triplet file's header says, for either family: the party, the scale, the
/// model's, job's and run's ids and the image's size.
fn triplet_header(
    party: Party,
    (mh, ih): (&Header, &Header),
    triplet_id: [u8; 16],
    job: &JobParams,
) -> Header {
    let mut h = Header::new(Kind::Triplets, party, job.scale);
    h.model_id = mh.model_id;
    h.job_id = ih.job_id;
    h.triplet_id = Some(triplet_id);
    h.shapes
        .push(("image".into(), vec![job.height as u64, job.width as u64]));
    h
}

/// An I/O error of the triplet file, as `dealer::graph::generate_into` returns its errors.
struct FillError(std::io::Error);

impl From<String> for FillError {
    fn from(s: String) -> Self {
        FillError(std::io::Error::other(s))
    }
}

/// A CNN graph job's dealing as its public headers describe it, every check passed before
/// anything is drawn: the plan rebuilt from the model's public description, the job, the
/// image padded to the graph's stride, the ReLU batch and each tile's rows, explicit bits
/// and circuits. The dealer and the servers dealing together (`job::offline`) both start
/// here.
pub struct GraphDeal {
    pub plan: crate::ring::graph::GraphPlan,
    pub job: JobParams,
    facts: crate::formats::facts::ModelFacts,
    /// The padded size the job runs at.
    pub ph: usize,
    pub pw: usize,
    pub batch: usize,
    pub tiles: Vec<GraphTile>,
}

/// One tile's (or the whole job's) share of a graph dealing.
pub struct GraphTile {
    pub tile: Option<Tile>,
    /// Its band's rows (the padded height for the whole job).
    pub rows: usize,
    /// Bits of party 1's explicit values.
    pub bits: u64,
    circuits: String,
}

impl GraphTile {
    /// Its tile's label (`I/K`), or `whole`.
    pub fn label(&self) -> String {
        self.tile.map_or("whole".into(), |t| t.label())
    }
}

impl GraphDeal {
    /// Checks a graph job's model and image headers (`mh`, `ih`, read from `a.model` and
    /// `a.image`) against each other and sizes its tiles.
    pub fn check(a: &DealJob, (mh, ih): (&Header, &Header)) -> Result<GraphDeal> {
        let image = a.image.as_path();
        if !is_graph(mh) {
            bail!(
                "{}: the image was shared for a CNN graph but {} is not a CNN graph's header: give \
                 the dealer the header of the model the image was shared for",
                image.display(),
                a.model.display()
            );
        }
        if !is_graph(ih) {
            bail!(
                "{}: the image was not shared for a CNN graph; share it for this one with \
                 `share-image --model {}`",
                image.display(),
                a.model.display()
            );
        }
        if a.model_mask.is_some() {
            bail!("--model-mask: weights opened once per model are not supported for CNN graphs yet; run the job without it (the weights are opened in the job)");
        }
        let (g, plan) = graph_plan_from_header(&a.model, mh)?;
        let facts = crate::formats::facts::ModelFacts::read(&a.model, mh)?;
        let job = job_from_header(image, ih)?;
        if job.scale != plan.params.s {
            bail!(
                "{}: image encoded at scale {} but the graph takes scale {}",
                image.display(),
                job.scale,
                plan.params.s
            );
        }
        check_whole_image_job(image, &job, mh)?;
        crate::formats::checks::check_colours(image, &job, g.colours)?;
        crate::formats::checks::check_noise_map(image, ih, g.noise_map().is_some())?;
        let (ph, pw) = g
            .padded_size(job.height, job.width)
            .map_err(|e| anyhow::anyhow!("{}: {e}", image.display()))?;
        crate::server::check_bound_model(image, ih, &a.model, mh)?;
        let batch = a.batch.unwrap_or(a.engine.default_relu_batch());
        check_relu_batch(batch)?;
        // Every tile is checked, and its randomness sized, before any is drawn or file
        // written; a tile's job is its band of the padded image, sized from the band's rows.
        let (h, w) = (job.height, job.width);
        let at_image = |e: String| anyhow::anyhow!("{}: {e}", image.display());
        let tiles = tile_list(a)?
            .into_iter()
            .map(|tile| {
                let rows = match tile {
                    None => ph,
                    Some(t) => plan
                        .band(h, w, t)
                        .map_err(|e| anyhow::anyhow!("--tiles: {e}"))?
                        .height(),
                };
                let bits = crate::dealer::graph::correction_count(&plan, rows, pw, a.engine, batch)
                    .map(|t| t.bits)
                    .map_err(at_image)?;
                let circuits = crate::dealer::graph::circuit_shapes(&plan, rows, pw, a.engine)
                    .map_err(at_image)?;
                Ok(GraphTile {
                    tile,
                    rows,
                    bits,
                    circuits,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GraphDeal {
            plan,
            job,
            facts,
            ph,
            pw,
            batch,
            tiles,
        })
    }

    /// Party `party`'s triplet header for tile `t` of the dealing with id `triplet_id`
    /// (without the base OTs' digests, which [`write_pair`] and the servers add).
    pub(super) fn header(
        &self,
        (mh, ih): (&Header, &Header),
        engine: EngineKind,
        t: &GraphTile,
        triplet_id: [u8; 16],
        party: Party,
    ) -> Header {
        let mut hd = triplet_header(party, (mh, ih), triplet_id, &self.job);
        hd.info.push((NETWORK.into(), GRAPH.into()));
        hd.info.push((ENGINE.into(), engine.name().into()));
        hd.info.push(("batch".into(), self.batch.to_string()));
        let (d, fp) = (&self.facts.graph_description, &self.facts.fixed_point);
        for (key, v) in [(GRAPH_DESCRIPTION, d), (FIXED_POINT, fp)] {
            hd.info.push((key.into(), v.clone().unwrap_or_default()));
        }
        hd.info.push((CIRCUIT.into(), t.circuits.clone()));
        if let Some(t) = t.tile {
            hd.info.push((TILE.into(), t.label()));
        }
        hd
    }
}

/// `gen-triplets` for a CNN graph job (docs/graph.md, milestone 5): [`GraphDeal::check`],
/// then each product's triple and each circuit run's values ([`crate::dealer::graph`]) for
/// the image padded to the graph's stride.
fn gen_graph_triplets(
    a: &DealJob,
    (mh, ih): (&Header, &Header),
    to: &Outputs,
    t: Instant,
) -> Result<Summary> {
    let d = GraphDeal::check(a, (mh, ih))?;
    let channels = d.plan.channels();
    let (mut outs, mut ids, mut bytes) = (Vec::new(), Vec::new(), 0);
    for tile in &d.tiles {
        let seeds = DealSeeds::fresh(None);
        let triplet_id = fresh_id();
        let header = |party: Party| d.header((mh, ih), a.engine, tile, triplet_id, party);
        let (o, b) = write_pair(
            &tile_prefix(&a.out, tile.tile),
            &header,
            Lead {
                job: &d.job,
                widths: &channels,
                batch: d.batch,
                engine: a.engine,
                seeds: &seeds.job,
            },
            tile.bits,
            a.engine.deal_setup(),
            to,
            |emit| {
                let mut emit = |v: &[u64], bits| emit(v, bits).map_err(FillError);
                crate::dealer::graph::generate_into(
                    &d.plan, tile.rows, d.pw, &seeds, a.engine, d.batch, &mut emit,
                )
                .map_err(|FillError(e)| e)
            },
        )?;
        outs.extend(o);
        ids.push(id_hex(&triplet_id));
        bytes += b;
    }
    let secs = t.elapsed().as_secs_f64();
    let (h, w, ph, pw) = (d.job.height, d.job.width, d.ph, d.pw);
    Ok(Summary {
        lines: vec![format!(
            "{} engine: correlated randomness for a {h}x{w} CNN graph job (run at {ph}x{pw}){} written to {} ({bytes} bytes, {secs:.2} s); triplet id {}",
            a.engine,
            tiles_said(a),
            outs.join(", "),
            ids.join(", ")
        )],
        json: serde_json::json!({
            "ok": true, "command": "gen-triplets", "triplet_id": ids[0], "triplet_ids": ids,
            "network": GRAPH, "pixels": h * w, "outputs": outs, "engine": a.engine.name(),
            "dealer_bytes": bytes, "seconds": secs, "tiles": a.tiles, "tile": a.tile,
        }),
    })
}

/// One job's dealing, its arguments parsed (`gen-triplets`; a study's slice).
#[derive(Clone)]
pub struct DealJob {
    /// The model's public header (model.pub).
    pub model: PathBuf,
    /// The job's public header (image.pub).
    pub image: PathBuf,
    /// Patches per batch (MLP) or ReLU elements per circuit run (CNN); default: the engine's.
    pub batch: Option<usize>,
    pub engine: EngineKind,
    /// The dealer's record of the model's weight mask, when the weights were opened once.
    pub model_mask: Option<PathBuf>,
    /// Output prefix: <out>.p0 and <out>.p1 (tiles: <out>.t<I>.p0, .p1).
    pub out: PathBuf,
    /// Split into this many tiles, each with its own randomness.
    pub tiles: Option<usize>,
    /// With `tiles`: this tile only.
    pub tile: Option<usize>,
}

/// The dealer's record of a model's weight mask (`--model-mask`), read once: its id and both
/// servers' seeds.
pub struct MaskRecord {
    pub id: String,
    pub seeds: [Seed; 2],
}

impl Drop for MaskRecord {
    fn drop(&mut self) {
        self.seeds.zeroize();
    }
}

/// The model's side of a dealing, each file opened and checked once however many jobs (a
/// study's slices) are dealt from it: the model's public header and, for an MLP, the
/// dealer's record of its weight mask (a CNN's is refused when its job is dealt).
pub struct DealModel {
    pub header: Header,
    pub mask: Option<MaskRecord>,
}

impl DealModel {
    /// Reads `a.model` and `a.model_mask`, one open each.
    pub fn read(a: &DealJob) -> Result<DealModel> {
        let header = dealer_header(&a.model, Kind::PublicModel, Kind::ModelShare)?;
        let mask = match &a.model_mask {
            Some(path) if !is_whole_image(&header) => {
                let o = container::Opened::open(path)?;
                o.expect(Kind::DealerMask, None)?;
                check_same_model(path, o.header(), &a.model, &header)?;
                let id = mask_id_of(path, o.header())?;
                let (_, dm): (Header, DealerMask) = o.read(Kind::DealerMask, None)?;
                Some(MaskRecord {
                    id,
                    seeds: dm.seeds,
                })
            }
            _ => None,
        };
        Ok(DealModel { header, mask })
    }
}

/// Deals one job (or its tiles) into files written as `to` says: `gen-triplets` of one job
/// ([`DealModel::read`], then [`dealer_header`] of its image, each file opened once).
pub fn deal_job(a: &DealJob, to: &Outputs) -> Result<Summary> {
    let model = DealModel::read(a)?;
    let ih = dealer_header(&a.image, Kind::PublicJob, Kind::ImageShare)?;
    deal(a, &model, &ih, to)
}

/// Deals one job (or its tiles) from headers already opened and checked: the model's side
/// `model`, the job's public header `ih` (read from `a.image`).
pub fn deal(a: &DealJob, model: &DealModel, ih: &Header, to: &Outputs) -> Result<Summary> {
    let image = a.image.as_path();
    let t = Instant::now();
    let batch = a.batch.unwrap_or(a.engine.default_batch());
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mh = &model.header;
    if is_graph(mh) || is_graph(ih) {
        return gen_graph_triplets(a, (mh, ih), to, t);
    }
    let widths_u = mh
        .shape("layers")
        .with_context(|| format!("{}: header lacks the layer widths", a.model.display()))?
        .to_vec();
    let patch = patch_from_widths(&widths_u).with_context(|| format!("{}", a.model.display()))?;
    let job = job_from_header(image, ih)?;
    if job.colours != 1 {
        bail!(
            "{}: a colour image ({} planes); {} is an MLP, which takes gray images",
            image.display(),
            job.colours,
            a.model.display()
        );
    }
    if job.scale != mh.scale {
        bail!(
            "{}: image encoded at scale {} but the model share {} uses scale {}",
            image.display(),
            job.scale,
            a.model.display(),
            mh.scale
        );
    }
    let widths: Vec<usize> = widths_u.iter().map(|&w| w as usize).collect();
    crate::formats::bodies::check_geometry(&job, patch)
        .map_err(|e| anyhow::anyhow!("{}: {e}", image.display()))?;
    let geo = Geometry::new(job.height, job.width, patch, job.stride);
    crate::dealer::check_stream_bounds(&widths, geo.num_patches(), batch)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    // The servers refuse an image scaled for another sigma*, or shared for another model:
    // no randomness is dealt for such a job.
    let sigma = crate::formats::facts::ModelFacts::read(&a.model, mh)?.sigma;
    if sigma != Some(job.model_sigma) {
        bail!(
            "{}: the image was shared for a model of sigma {}, not for {} (sigma {}): share it \
             with `share-image --model model.pub`",
            image.display(),
            job.model_sigma,
            a.model.display(),
            sigma.map_or("unknown".into(), |s| s.to_string())
        );
    }
    crate::server::check_bound_model(image, ih, &a.model, mh)?;
    let circuits = circuits_from_header(&a.model, mh, widths.len())?;
    let nonlinear = NonlinearDeal::new(a.engine, &circuits);
    let model_mask = model.mask.as_ref();
    // Every tile is checked before any randomness is drawn or file written.
    let tiles = tile_list(a)?
        .into_iter()
        .map(|t| match t {
            None => Ok((None, 0..geo.num_patches())),
            Some(t) => patch_range(geo.num_patches(), t)
                .map(|r| (Some(t), r))
                .map_err(|e| anyhow::anyhow!("--tiles: {e}")),
        })
        .collect::<Result<Vec<_>>>()?;
    let circuit_entries = copy_circuit_entries(mh);
    let circuit_json = nonlinear
        .boolean
        .as_ref()
        .map(|b| serde_json::to_string(&b.shapes()).expect("shapes serialise"));
    let (mut outs, mut ids, mut bytes) = (Vec::new(), Vec::new(), 0);
    for (tile, run) in tiles {
        let seeds = DealSeeds::fresh(model_mask.map(|m| m.seeds));
        let triplet_id = fresh_id();
        let header = |party: Party| {
            let mut h = triplet_header(party, (mh, ih), triplet_id, &job);
            h.shapes.insert(0, ("layers".into(), widths_u.clone()));
            h.info.push(("batch".into(), batch.to_string()));
            h.info.push((ENGINE.into(), a.engine.name().into()));
            h.info.extend(circuit_entries.iter().cloned());
            if let Some(c) = &circuit_json {
                h.info.push((CIRCUIT.into(), c.clone()));
            }
            if let Some(m) = model_mask {
                h.info.push((MODEL_MASK.into(), m.id.clone()));
                h.info
                    .push((MASK_SEEDS.into(), mask_seed_digests(&m.seeds)));
            }
            if let Some(t) = tile {
                h.info.push((TILE.into(), t.label()));
            }
            h
        };
        let count = crate::dealer::correction_count(&widths, run.len(), batch, &nonlinear).bits;
        let (o, b) = write_pair(
            &tile_prefix(&a.out, tile),
            &header,
            Lead {
                job: &job,
                widths: &widths,
                batch,
                engine: a.engine,
                seeds: &seeds.job,
            },
            count,
            a.engine.deal_setup(),
            to,
            |emit| {
                crate::dealer::generate_into(
                    &job, &widths, patch, run, batch, &seeds, &nonlinear, emit,
                )
            },
        )?;
        outs.extend(o);
        ids.push(id_hex(&triplet_id));
        bytes += b;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(Summary {
        lines: vec![format!(
            "{} engine: correlated randomness for {} patches{} written to {} ({bytes} bytes, {secs:.2} s); triplet id {}",
            a.engine,
            geo.num_patches(),
            tiles_said(a),
            outs.join(", "),
            ids.join(", ")
        )],
        json: serde_json::json!({
            "ok": true, "command": "gen-triplets", "triplet_id": ids[0], "triplet_ids": ids,
            "patches": geo.num_patches(), "outputs": outs, "engine": a.engine.name(), "batch": batch,
            "dealer_bytes": bytes, "seconds": secs, "tiles": a.tiles, "tile": a.tile,
        }),
    })
}

/// The tiles `gen-triplets` was asked for, checked: one job in one piece, every tile, or
/// the one `--tile`.
fn tile_list(a: &DealJob) -> Result<Vec<Option<Tile>>> {
    let Some(k) = a.tiles else {
        return Ok(vec![None]);
    };
    Tile::new(a.tile.unwrap_or(0), k).map_err(|e| anyhow::anyhow!("--tiles: {e}"))?;
    let which: Vec<usize> = match a.tile {
        Some(i) => vec![i],
        None => (0..k).collect(),
    };
    which
        .into_iter()
        .map(|i| {
            Tile::new(i, k)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("--tiles/--tile: {e}"))
        })
        .collect()
}

/// " (tile I of K)", " (K tiles)" or nothing, for the summary line.
fn tiles_said(a: &DealJob) -> String {
    match (a.tiles, a.tile) {
        (None, _) => String::new(),
        (Some(k), Some(i)) => format!(" (tile {i} of {k})"),
        (Some(k), None) => format!(" ({k} tiles)"),
    }
}

/// A tile's file prefix: <out>.t<I> (the whole job's: <out>).
pub(super) fn tile_prefix(out: &Path, tile: Option<Tile>) -> PathBuf {
    match tile {
        Some(t) => with_suffix(out, &format!(".t{}", t.index)),
        None => out.to_path_buf(),
    }
}

/// The fields both of a job's triplet files share.
struct Lead<'a> {
    job: &'a JobParams,
    widths: &'a [usize],
    batch: usize,
    engine: EngineKind,
    seeds: &'a [Seed; 2],
}

/// Writes one job's (or tile's) pair of triplet files at `prefix`: S1's first, streamed as
/// `fill` computes its explicit values (about 1 GB for a 512x512 image is never held in
/// memory; it is the long, failure-prone write, and if it fails nothing new is left beside
/// an older pair), then S0's (its seed and base OTs: its triple shares follow from the
/// seed). Returns both paths and the bytes written.
#[allow(clippy::too_many_arguments)]
fn write_pair<F>(
    prefix: &Path,
    header: &dyn Fn(Party) -> Header,
    lead: Lead<'_>,
    count: u64,
    (base0, base1): (Vec<u8>, Vec<u8>),
    to: &Outputs,
    fill: F,
) -> Result<([String; 2], u64)>
where
    F: FnOnce(&mut dyn FnMut(&[u64], u32) -> std::io::Result<()>) -> std::io::Result<()> + Send,
{
    let (out0, out1) = (with_ext(prefix, Party::S0), with_ext(prefix, Party::S1));
    check_free_space((&out0, &out1), count, (&base0, &base1))?;
    // Both headers name both parties' base OTs by digest: each server checks its own
    // against its file, and the session tag (which binds the header) proves that the two
    // files are halves of one dealing.
    let digests = base_ot_digests(&base0, &base1);
    let header = |p: Party| {
        let mut h = header(p);
        h.info.push((BASE_OT.into(), digests.clone()));
        h
    };
    let lead_of = |p: Party| TripletsLead {
        job: lead.job.clone(),
        widths: lead.widths.to_vec(),
        batch: lead.batch,
        seed: lead.seeds[p.index()],
        engine: lead.engine,
    };
    let s1 = (Party::S1, out1.as_path(), count);
    write_own(s1, &header(Party::S1), lead_of(Party::S1), base1, to, fill)?;
    // Without its partner the new S1 file is useless: on failure it is removed, not left
    // beside an older `.p0`.
    let s0 = (Party::S0, out0.as_path(), 0);
    if let Err(e) = write_own(
        s0,
        &header(Party::S0),
        lead_of(Party::S0),
        base0,
        to,
        |_| Ok(()),
    ) {
        let _ = std::fs::remove_file(&out1);
        return Err(e);
    }
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .with_context(|| format!("cannot read {}", p.display()))
    };
    let bytes = size(&out0)? + size(&out1)?;
    Ok((
        [out0.display().to_string(), out1.display().to_string()],
        bytes,
    ))
}

/// Writes party `p`'s triplet file at `path`: S1's explicit values (`count` bits) streamed
/// from `fill` as they are made (about 1 GB for a 512x512 image is never held in memory),
/// S0's its seed and base OTs (its triple shares follow from the seed; `fill` is not
/// called). The base OTs are wiped once written.
pub(super) fn write_own<F>(
    (p, path, count): (Party, &Path, u64),
    header: &Header,
    lead: TripletsLead,
    mut base: Vec<u8>,
    to: &Outputs,
    fill: F,
) -> Result<()>
where
    F: FnOnce(&mut dyn FnMut(&[u64], u32) -> std::io::Result<()>) -> std::io::Result<()> + Send,
{
    match p {
        Party::S1 => {
            let written =
                triplet_stream::write(path, header, &lead, count, &base, to.party(p), fill);
            base.zeroize();
            written
        }
        // The base OTs go with the body's drop.
        Party::S0 => {
            let t0 = Triplets {
                job: lead.job.clone(),
                widths: lead.widths.clone(),
                batch: lead.batch,
                seed: lead.seed,
                engine: lead.engine,
                corrections: Default::default(),
                base_ot: base,
            };
            container::write(path, header, &t0, to.party(p))
        }
    }
}

/// Headers (circuits, plans), framing, checksum, signature and sealing of one triplet file,
/// on top of its values: a generous bound (measured: a few KB).
const FILE_SLACK: u64 = 256 << 10;

/// What a pair of triplet files will take: S1's explicit values (`bits` bits, packed at
/// their widths) and base OTs, S0's seed and base OTs, each with [`FILE_SLACK`].
pub fn pair_bytes(bits: u64, base0: usize, base1: usize) -> [u64; 2] {
    [
        base0 as u64 + FILE_SLACK,
        bits.div_ceil(8) + base1 as u64 + FILE_SLACK,
    ]
}

/// Refuses, before anything is drawn or written, a pair that the free space of its
/// folder(s) cannot hold (a disk that fills half-way through a study's dealing wastes it).
fn check_free_space(
    (out0, out1): (&Path, &Path),
    count: u64,
    (base0, base1): (&[u8], &[u8]),
) -> Result<()> {
    use super::space::{check, folder_of, free_bytes};
    let [n0, n1] = pair_bytes(count, base0.len(), base1.len());
    let (d0, d1) = (folder_of(out0), folder_of(out1));
    let same = match (d0.canonicalize(), d1.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => d0 == d1,
    };
    let what = |p: &Path| format!("the triplets {}", p.display());
    if same {
        let both = format!("{} and {}", what(out0), out1.display());
        return check(d0, n0 + n1, free_bytes(d0)?, &both);
    }
    check(d0, n0, free_bytes(d0)?, &what(out0))?;
    check(d1, n1, free_bytes(d1)?, &what(out1))
}
