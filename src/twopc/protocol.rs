//! One secure denoising job between S0 and S1: the layer loop over batches of patches.
//! Everything a server holds is a share; every value it opens is masked by fresh dealer
//! randomness (see docs/protocol.md for the message list).

use crate::ring::Party;
use std::time::Instant;

use serde::Serialize;

use crate::circuit::activation::ActConsts;
use crate::corr::batches::{batches, extract_batch};
use crate::corr::randomness::{PartyRandomness, RandomnessError};
use crate::corr::slot::Slot;
use crate::formats::bodies::JobParams;
use crate::model::geometry::Geometry;
use crate::ring::matmul::PackedA;
use crate::ring::plan::{mlp_product_bits, Hidden, Plan, MLP_OPEN_BITS};
use crate::ring::share::sub;
use crate::twopc::beaver::{matmul_share, pack_weights};
use crate::twopc::channel::{exchange, open, Channel, ChannelError, LinkStats};
use crate::twopc::poly::{tanh_star_poly, SelShares};
use crate::twopc::weights::{open_layers, Opened};

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    #[error("{0}")]
    Setup(String),
}

/// The nonlinear steps, one implementation per engine: garbled circuits
/// ([`crate::twopc::gc::engine`], randomness from base OTs given at construction) and boolean
/// shares ([`crate::twopc::gmw`], AND triples and daBits drawn from `rand` at `at`).
pub trait Nonlinear {
    /// Arithmetic shares of the activation circuit's outputs for pre-activation shares `v`.
    fn select(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        c: &ActConsts,
        v: &[u64],
    ) -> Result<SelShares, ProtocolError>;
    /// Arithmetic shares of max(0, floor(v / 2^sh)), the signed k-bit truncation's ReLU
    /// (a CNN hidden layer's activation), correct mod 2^out_bits: the width at which the
    /// caller's readers read them (docs/protocol.md, "Ring width"; the boolean engine's
    /// dealer values are made at that width, the bits above it are arbitrary).
    #[allow(clippy::too_many_arguments)]
    fn relu(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError>;
    /// The exact rescaling (a graph's `Trunc`): shares of floor(V / 2^sh) as a signed k-bit
    /// value, sign-extended in the ring (the circuit's offset-binary output converted, and
    /// its offset taken off by party 1), correct mod 2^out_bits as for [`Self::relu`].
    #[allow(clippy::too_many_arguments)]
    fn trunc(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError>;
    fn counters(&self) -> EngineCounters;
    /// Whether a CNN job's ReLU results are left mod 2^k and extended by their shares' top
    /// bits before the next layer's opening (the boolean engine: docs/protocol.md, "The ReLU
    /// by selection"). An engine that says so must give, from [`Self::relu`] at
    /// `out_bits = k`, shares of a value below 2^(k-1): the wrap is the top bits' OR only then.
    fn fuses_relu_extension(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EngineCounters {
    pub and_gates: u64,
    pub ots: u64,
    pub elements: u64,
    /// Rounds of the engine itself: message exchanges it waited for, both parties sending
    /// at once (the boolean engine: AND depth + 1 per circuit run; not counted for GC).
    pub rounds: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// 0 or 1 (`u8::from(Party)`), as the JSON summary prints it.
    pub party: u8,
    pub patches: usize,
    pub batches: usize,
    pub seconds_setup: f64,
    pub seconds_linear: f64,
    /// A graph job's part of `seconds_linear` in its products alone (packing and multiplying,
    /// the kernel's work), without the openings (which wait on the peer) and the randomness.
    pub seconds_products: f64,
    pub seconds_nonlinear: f64,
    pub seconds_polynomial: f64,
    pub seconds_total: f64,
    pub link: LinkStats,
    pub engine: EngineCounters,
    /// Multiply-adds of the job's secret products (weights times a secret map), counted
    /// once: each party computes two such products (docs/protocol.md), so the linear
    /// phase's rate is `2 macs / seconds_linear` per party. 0 where not counted (an MLP).
    pub macs: u64,
    /// A graph job's figures per op kind, in the order first met (`OpenWeights`: the
    /// opening of its weights when it opens them itself); empty for other jobs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpFigures>,
}

/// One op kind's part of a graph job, as one party saw it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpFigures {
    /// ONNX's name of the op (`Trunc`: the plan's rescalings; `OpenWeights`: the opening
    /// of the masked weights at the job's start).
    pub op: &'static str,
    pub steps: usize,
    pub seconds: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub engine_rounds: u64,
    pub and_gates: u64,
    /// The plan's counts for the op kind (`inspect`'s): circuit elements and multiply-adds.
    pub comparisons: u64,
    pub macs: u64,
}

impl OpFigures {
    /// Adds one step: the time since `t` and what the link and the engine did between the
    /// two readings of each.
    pub fn add_step(
        &mut self,
        t: Instant,
        (l, l2): (LinkStats, LinkStats),
        (e, e2): (EngineCounters, EngineCounters),
    ) {
        self.steps += 1;
        self.seconds += t.elapsed().as_secs_f64();
        self.bytes_sent += l2.bytes_sent - l.bytes_sent;
        self.bytes_received += l2.bytes_received - l.bytes_received;
        self.messages_sent += l2.messages_sent - l.messages_sent;
        self.engine_rounds += e2.rounds - e.rounds;
        self.and_gates += e2.and_gates - e.and_gates;
    }
}

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

/// Where the masked weights U = W - A come from (see [`crate::twopc::weights`]).
pub enum Weights<'a> {
    /// Opened at the start of this job, A from the job's randomness.
    PerJob,
    /// Opened once for the model; the job's matrix triples were made against its A.
    Opened(&'a Opened),
}

/// Opens U = W - A in a job without a model mask: A is this job's own, one weight mask per
/// layer (each served once). `layers`: this party's weight shares and the count each must
/// have (a share of another length is refused, not opened).
pub(crate) fn open_in_job(
    ch: &mut dyn Channel,
    party: Party,
    rand: &mut PartyRandomness,
    layers: &[(&[u64], usize)],
) -> Result<Opened, ProtocolError> {
    let mask = layers
        .iter()
        .enumerate()
        .map(|(l, &(_, n))| rand.weight_mask(l as u32, n))
        .collect::<Result<_, _>>()?;
    let w: Vec<&[u64]> = layers.iter().map(|&(w, _)| w).collect();
    Ok(open_layers(ch, party, &w, mask)?)
}

/// Exchanges the session tags (job, model and randomness ids): a peer holding the files of
/// another job, model or dealer run is refused before anything secret is sent.
pub(crate) fn same_session(
    ch: &mut dyn Channel,
    party: Party,
    tag: &[u8],
) -> Result<(), ChannelError> {
    if exchange(ch, party, tag)? != tag {
        return Err(ChannelError::Mismatch(
            "the peer server holds files of a different job, model or dealer run".into(),
        ));
    }
    Ok(())
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
