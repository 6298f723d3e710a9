//! The MLP's secure job between S0 and S1: the layer loop over batches of patches.
//! Everything a server holds is a share; every value it opens is masked by fresh dealer
//! randomness (see docs/protocol.md for the message list).

use crate::ring::Party;
use std::time::Instant;

use crate::corr::batches::{batches, extract_batch};
use crate::corr::randomness::PartyRandomness;
use crate::corr::slot::Slot;
use crate::formats::bodies::JobParams;
use crate::model::geometry::Geometry;
use crate::ring::matmul::PackedA;
use crate::ring::plan::{mlp_product_bits, Hidden, Plan, MLP_OPEN_BITS};
use crate::ring::share::sub;
use crate::twopc::beaver::{matmul_share, pack_weights};
use crate::twopc::channel::{open, Channel};
use crate::twopc::error::ProtocolError;
use crate::twopc::job::{open_in_job, same_session, Report, Weights};
use crate::twopc::nonlinear::Nonlinear;
use crate::twopc::poly::tanh_star_poly;
use crate::twopc::weights::Opened;

pub struct JobInputs<'a> {
    pub party: Party,
    /// The plan with this party's weight shares.
    pub plan: &'a Plan,
    pub job: &'a JobParams,
    /// This party's share of the encoded image (unpadded, row-major).
    pub image: &'a [u64],
    pub rand: PartyRandomness,
    pub batch: usize,
    /// Bytes both parties must agree on (job, model and randomness ids).
    pub session_tag: Vec<u8>,
    pub weights: Weights<'a>,
    /// The run of the patch grid this job computes (a tile's), or every patch.
    pub patches: Option<std::ops::Range<usize>>,
}

fn add_bias(z: &mut [u64], bias: &[u64], n: usize) {
    for (row, &b) in z.chunks_mut(n).zip(bias) {
        for v in row {
            *v = v.wrapping_add(b);
        }
    }
}

/// The most an MLP job keeps packed across its batches (the shipped model's panels are 19 MB).
const KEEP_PANELS_MAX: usize = 128 << 20;

/// Runs the job; returns this party's share of the output canvas sums.
pub fn run(
    ch: &mut dyn Channel,
    mut inp: JobInputs<'_>,
    engine: &mut dyn Nonlinear,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<u64>, Report), ProtocolError> {
    let t_start = Instant::now();
    let party = inp.party;
    let plan = inp.plan;
    let geo = Geometry::new(inp.job.height, inp.job.width, plan.patch, inp.job.stride);
    let range = inp.patches.clone().unwrap_or(0..geo.num_patches());
    if range.end > geo.num_patches() || range.is_empty() {
        return Err(ProtocolError::Setup(format!(
            "patches {}..{} of a job of {}",
            range.start,
            range.end,
            geo.num_patches()
        )));
    }
    let mut rep = Report {
        party: party.into(),
        patches: range.len(),
        ..Default::default()
    };

    // A plan read for opened weights holds no weight shares (`ModelShare::bias_plan`): one
    // that reached a job opening its weights is refused here, before anything is sent.
    if matches!(inp.weights, Weights::PerJob) && !plan.holds_weight_shares() {
        return Err(ProtocolError::Setup(
            "the plan holds no share of the weights to open in this job".into(),
        ));
    }

    // Both servers must be running the same job with matching randomness.
    same_session(ch, party, &inp.session_tag)?;

    // U = W - A: opened here with a mask of this job's, unless it was opened once for the
    // model (its A then masks no other weights, and this job's B is fresh).
    let nl = plan.layers.len();
    let per_job;
    let w: &Opened = match inp.weights {
        Weights::Opened(o) => o,
        Weights::PerJob => {
            let layers: Vec<(&[u64], usize)> = plan
                .layers
                .iter()
                .map(|ly| (ly.w.as_slice(), ly.inputs * ly.outputs))
                .collect();
            per_job = open_in_job(ch, party, &mut inp.rand, &layers)?;
            &per_job
        }
    };

    // Open the image once, masked by a fresh image-sized dealer mask; patches are then
    // extracted from the opened masked image and from the mask shares alike.
    let npix = inp.image.len();
    let bimg = inp.rand.image_mask(npix)?;
    let vimg = open(ch, party, &sub(inp.image, &bimg), "masked image")?;
    let v_pad = geo.pad(&vimg);
    let b_pad = geo.pad(&bimg);
    let x_pad = geo.pad(inp.image);
    drop((vimg, bimg));
    rep.seconds_setup = t_start.elapsed().as_secs_f64();

    let centre = geo.centre_indices();
    let mut canvas = vec![0u64; geo.canvas_h * geo.canvas_w];
    let weights = geo.patch.window_weights();
    let total = range.len();
    let mut done = 0;
    let macs: Vec<usize> = plan
        .layers
        .iter()
        .scan(0, |sum, ly| {
            *sum += ly.inputs * ly.outputs;
            Some(*sum)
        })
        .collect();
    // [U | A_i] of each layer, packed once for all the job's batches when the panels are
    // small. Otherwise (a job of one batch, or a large model: 27.8 M weights make 445 MB of
    // panels beside U and A) each layer is packed when it comes and dropped after: packing
    // copies each weight twice, about 1% of a 128-patch batch's multiply-adds.
    let panel_bytes: usize = plan
        .layers
        .iter()
        .map(|ly| 16 * ly.inputs * ly.outputs)
        .sum();
    let keep = batches(total, inp.batch.max(1)).count() > 1 && panel_bytes <= KEEP_PANELS_MAX;
    // Bits of layer l's product its readers read (docs/protocol.md, "Ring width"): a hidden
    // layer's only its circuit, mod 2^n; the output layer's whole. The dealer makes party
    // 1's matrix triple at that width (`dealer::NonlinearDeal::product_bits`).
    let circuits = plan.circuits();
    let nl_bits = |l: usize| mlp_product_bits(&circuits, l);
    let mut packed: Vec<Option<PackedA>> = (0..nl).map(|_| None).collect();
    for (b, start, n) in batches(total, inp.batch.max(1)) {
        let start = range.start + start;
        rep.batches += 1;
        let mut act: Vec<u64> = Vec::new();
        for l in 0..nl {
            let ly = &plan.layers[l];
            let t = Instant::now();
            let (v, b_i) = if l == 0 {
                (
                    extract_batch(&geo, &v_pad, start, n),
                    extract_batch(&geo, &b_pad, start, n),
                )
            } else {
                let b_i = inp.rand.act_mask(l as u32, b, ly.inputs * n)?;
                let v = open(ch, party, &sub(&act, &b_i), "masked activations")?;
                (v, b_i)
            };
            let c_i = inp
                .rand
                .mat_triple(l as u32, b, ly.outputs * n, nl_bits(l))?;
            let ua = match packed[l].take() {
                Some(p) => p,
                None => pack_weights(party, &w.u[l], &w.mask[l], ly.outputs, ly.inputs),
            };
            let mut z = matmul_share(&ua, &v, &b_i, c_i, n);
            if keep {
                packed[l] = Some(ua);
            }
            add_bias(&mut z, &ly.b, n);
            rep.seconds_linear += t.elapsed().as_secs_f64();
            if l + 1 < nl {
                let t = Instant::now();
                let at = Slot {
                    layer: l as u32,
                    batch: b,
                };
                match plan.hidden {
                    Hidden::TanhStar => {
                        let c = &plan.acts[l];
                        let triples = inp.rand.elem_triples(l as u32, b, z.len())?;
                        let sel = engine.select(ch, &mut inp.rand, at, c, &z)?;
                        let t2 = Instant::now();
                        rep.seconds_nonlinear += (t2 - t).as_secs_f64();
                        act = tanh_star_poly(ch, party, c, &sel, &triples)?;
                        rep.seconds_polynomial += t2.elapsed().as_secs_f64();
                    }
                    Hidden::Relu => {
                        // The circuit's outputs are the activations themselves (scale s).
                        let tp = plan.params.relu_trunc();
                        // The next layer opens the activations at 64 bits.
                        act = engine.relu(ch, &mut inp.rand, at, tp.sh, tp.k, MLP_OPEN_BITS, &z)?;
                        rep.seconds_nonlinear += t.elapsed().as_secs_f64();
                    }
                }
            } else {
                // Output layer: the residual skip is a public linear map of the input share;
                // the values go into the canvas untruncated (at the plan's out_scale).
                if plan.residual {
                    let x = extract_batch(&geo, &x_pad, start, n);
                    let shift = ly.prod_scale - plan.params.s;
                    for (r, &ci) in centre.iter().enumerate() {
                        for j in 0..n {
                            z[r * n + j] = z[r * n + j].wrapping_add(x[ci * n + j] << shift);
                        }
                    }
                }
                act = z;
            }
            // Per layer within the batch (a gmw batch of 2048 patches takes seconds), in
            // proportion to the layers' multiply-accumulates (the first layer's dominate).
            progress(done + n * macs[l] / macs[nl - 1].max(1), total);
        }
        // Aggregation weights are public integers: applied to the shares locally.
        for j in 0..n {
            for (r, idx) in geo.output_indices(start + j).enumerate() {
                canvas[idx] = canvas[idx].wrapping_add(act[r * n + j].wrapping_mul(weights[r]));
            }
        }
        done += n;
    }
    inp.rand.finish()?;
    rep.seconds_total = t_start.elapsed().as_secs_f64();
    rep.link = ch.stats();
    rep.engine = engine.counters();
    Ok((canvas, rep))
}
