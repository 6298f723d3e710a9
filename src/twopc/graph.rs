//! One secure CNN graph job between S0 and S1 (docs/graph.md, milestone 4): the plan's steps
//! in order, on additive shares of channel-major maps.
//!
//! Per step kind (docs/protocol.md, "Secure CNN graphs"):
//! - a product (conv or transposed conv, affine map, a PReLU's slopes) is a Beaver product
//!   against the dealer's C = A (x) B: the map it reads is opened once as V = X - B under a
//!   fresh mask B of that tensor (a tensor read by several steps is opened once, each step
//!   with its own triple), the weights once as U = W - A; party i computes
//!   U (x) (i V + [B]_i) + [A]_i (x) V + [C]_i, then adds its share of the bias;
//! - a rescaling, a ReLU, a leaky ReLU, a clip and a max pooling run the engine's circuits
//!   (max(a, b) = a + ReLU(b - a), the window's values in the oracle's order);
//! - joins, poolings by average, resizes and pixel (un)shuffles are public linear maps each
//!   party applies to its own share (party 0 adds public constants).
//!
//! Nothing else is opened. The dealer's randomness is consumed in the order
//! [`GraphPlan::uses`] lists, which `dealer::graph` walks too.

use crate::ring::Party;
use std::collections::HashMap;
use std::time::Instant;

use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::corr::batches::batches;
use crate::corr::randomness::PartyRandomness;
use crate::corr::slot::Slot;
use crate::inference::graph::{window_at, window_dims, Map};
use crate::ring::graph::costs::kind_name;
use crate::ring::graph::uses::{
    per_channel, product_input, product_pair, secret_parts, Fused, Use,
};
use crate::ring::graph::{linear_step, GraphPlan, Kind};
use crate::ring::share::Seed;
use crate::twopc::beaver::plus_uv;
use crate::twopc::channel::{open_bits, Channel, ChannelError, LinkStats};
use crate::twopc::error::ProtocolError;
use crate::twopc::extend::open_extending;
use crate::twopc::job::{open_in_job, same_session, OpFigures, Report, Weights};
use crate::twopc::nonlinear::{EngineCounters, Nonlinear};
use crate::twopc::weights::{open_layers, Opened};

pub struct GraphJobInputs<'a> {
    pub party: Party,
    /// The plan with this party's shares of the secret values.
    pub plan: &'a GraphPlan,
    /// The input's size: sides multiples of the plan's total stride (the caller pads).
    pub height: usize,
    pub width: usize,
    /// This party's share of the encoded input, padded (scale s): the image's planes, then
    /// the noise map's channels ([`crate::model::graph::Inputs::pad`]).
    pub image: &'a [u64],
    pub rand: PartyRandomness,
    /// Bytes both parties must agree on (job, model and randomness ids).
    pub session_tag: Vec<u8>,
    pub weights: Weights<'a>,
    /// Elements per circuit run (the dealer's choice).
    pub relu_batch: usize,
}

/// This party's shares of the weighted steps' masks, from `seed` (a job's or a model mask's).
pub fn mask_shares(seed: &Seed, plan: &GraphPlan) -> Vec<Vec<u64>> {
    plan.weight_steps()
        .iter()
        .enumerate()
        .map(|(j, &(_, n))| crate::corr::masks::mask_share(seed, j as u32, n))
        .collect()
}

/// This party's shares of the weighted steps' weights (each step's first secret part), with
/// the count each must have.
fn weight_shares(plan: &GraphPlan) -> Vec<(&[u64], usize)> {
    plan.weight_steps()
        .into_iter()
        .map(|(i, n)| (secret_parts(&plan.steps[i].kind)[0], n))
        .collect()
}

/// Opens U = W - A of every weighted step (one message each way).
pub fn open_graph_weights(
    ch: &mut dyn Channel,
    party: Party,
    plan: &GraphPlan,
    mask: Vec<Vec<u64>>,
) -> Result<Opened, ChannelError> {
    let w: Vec<&[u64]> = weight_shares(plan).into_iter().map(|(w, _)| w).collect();
    open_layers(ch, party, &w, mask)
}

/// A map opened for the products that read it: V = X - B (public) and this party's B.
struct Masked {
    v: Map<u64>,
    b: Map<u64>,
}

/// The step loop's state: what is held, and where the randomness stands.
struct Job<'a, 'b> {
    ch: &'b mut dyn Channel,
    engine: &'b mut dyn Nonlinear,
    party: Party,
    rand: PartyRandomness,
    batch: usize,
    rep: Report,
    /// The weighted steps' opened weights, by step: (U, this party's A).
    weights: HashMap<usize, (&'a [u64], &'a [u64])>,
    /// Each masked-map stream's opening width ([`GraphPlan::open_bits`]).
    open_widths: HashMap<(u32, u32), u32>,
    /// Per step: the bits of its product's result and of its circuits' outputs that their
    /// readers read ([`GraphPlan::product_bits`], [`GraphPlan::circuit_out_bits`]): the
    /// widths the dealer made party 1's values at.
    product_bits: Vec<u32>,
    circuit_bits: Vec<u32>,
    /// The ReLU results left mod 2^k and extended when opened (a fusing engine's).
    fused: Fused,
    /// Circuit runs made so far by the current step (its runs' stream index).
    run: u32,
    /// The current step's uses of the randomness so far, compared with the dealer's list
    /// ([`GraphPlan::uses`]) when the step ends.
    used: Vec<Use>,
}

impl Job<'_, '_> {
    /// A circuit over this party's shares `z` at step `step`, in runs of the batch size.
    fn circuit(
        &mut self,
        step: usize,
        circ: ActCircuit,
        z: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        let t = Instant::now();
        self.used.push(Use::Circuit {
            circ,
            elements: z.len(),
        });
        let mut out = Vec::with_capacity(z.len());
        let bits = self.circuit_bits[step];
        for (_, start, n) in batches(z.len(), self.batch) {
            let at = Slot {
                layer: step as u32,
                batch: self.run,
            };
            self.run += 1;
            let part = &z[start..start + n];
            out.extend(match circ {
                ActCircuit::Relu(p) => {
                    self.engine
                        .relu(self.ch, &mut self.rand, at, p.sh, p.k, bits, part)?
                }
                ActCircuit::Trunc(p) => {
                    self.engine
                        .trunc(self.ch, &mut self.rand, at, p.sh, p.k, bits, part)?
                }
                ActCircuit::TanhSelect(_) => unreachable!("no tanh* in a graph"),
            });
        }
        self.rep.seconds_nonlinear += t.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Opens `x` under the fresh mask of stream (t, k), for product step `step`.
    fn open_masked(
        &mut self,
        step: usize,
        (t, k): (u32, u32),
        x: &Map<u64>,
    ) -> Result<Masked, ProtocolError> {
        // Part of the linear phase, as a CNN job counts its openings.
        let t0 = Instant::now();
        let b = self.rand.act_mask(t, k, x.v.len())?;
        // Only the low bits its readers need are sent (docs/protocol.md, "Ring width").
        let bits = self.open_widths[&(t, k)];
        let v = match self.fused.opens(step, t as usize).filter(|_| k == 0) {
            // A ReLU result held mod 2^k: extended by its shares' top bits as it is opened.
            Some(hi) => {
                self.used.push(Use::Extend {
                    len: x.v.len(),
                    bits: hi,
                });
                let pk = bits - hi;
                open_extending(self.ch, self.party, &mut self.rand, t, &x.v, &b, pk, bits)?
            }
            None => {
                let share: Vec<u64> =
                    x.v.iter()
                        .zip(&b)
                        .map(|(x, b)| x.wrapping_sub(*b))
                        .collect();
                open_bits(self.ch, self.party, &share, bits, "masked map")?
            }
        };
        self.rep.seconds_linear += t0.elapsed().as_secs_f64();
        Ok(Masked {
            v: Map { v, ..*x },
            b: Map { v: b, ..*x },
        })
    }

    /// This party's share of product step `step`'s weights (x) the opened map, bias not
    /// included: U (x) (i V + [B]_i) + [A]_i (x) V + [C]_i.
    fn product(
        &mut self,
        plan: &GraphPlan,
        step: usize,
        m: &Masked,
    ) -> Result<Map<u64>, ProtocolError> {
        let t = Instant::now();
        let kind = &plan.steps[step].kind;
        let (u, a) = self.weights[&step];
        // U (x) [B]_i + A_i (x) V in one product per group (`ring::graph::conv`); party 1,
        // which takes the U (x) V term, multiplies by U + A_1 where A_1 was (a weight-sized
        // sum, where V + [B]_1 would be map-sized).
        let sum;
        let a = if self.party.is_s1() {
            sum = plus_uv(u, a);
            &sum[..]
        } else {
            a
        };
        let mut z = product_pair(kind, [u, a], [&m.b, &m.v]);
        self.used.push(Use::Product { len: z.v.len() });
        let bits = self.product_bits[step];
        let c = self.rand.mat_triple(step as u32, 0, z.v.len(), bits)?;
        for (z, c) in z.v.iter_mut().zip(&c) {
            *z = z.wrapping_add(*c);
        }
        self.rep.seconds_linear += t.elapsed().as_secs_f64();
        Ok(z)
    }

    /// Where the link and the engine stand (what an op's figures are counted from).
    fn mark(&self) -> (Instant, LinkStats, EngineCounters) {
        (Instant::now(), self.ch.stats(), self.engine.counters())
    }

    /// Adds what happened since `from` to op `op`'s figures.
    fn tally(&mut self, op: &'static str, from: (Instant, LinkStats, EngineCounters)) {
        let (t, l, e) = from;
        let (l2, e2) = (self.ch.stats(), self.engine.counters());
        let f = match self.rep.ops.iter().position(|f| f.op == op) {
            Some(j) => &mut self.rep.ops[j],
            None => {
                self.rep.ops.push(OpFigures {
                    op,
                    ..Default::default()
                });
                self.rep.ops.last_mut().expect("pushed")
            }
        };
        f.add_step(t, (l, l2), (e, e2));
    }

    /// Party 0 adds public constant `k` to its share.
    fn plus(&self, x: u64, k: u64) -> u64 {
        if self.party.is_s0() {
            x.wrapping_add(k)
        } else {
            x
        }
    }
}

/// Runs the job; returns this party's share of the output map, held at the word's top
/// ([`GraphPlan::output_of`], at [`GraphPlan::out_scale`]).
pub fn run(
    ch: &mut dyn Channel,
    mut inp: GraphJobInputs<'_>,
    engine: &mut dyn Nonlinear,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Map<u64>, Report), ProtocolError> {
    let t_start = Instant::now();
    let (party, plan) = (inp.party, inp.plan);
    let (h, w) = (inp.height, inp.width);
    plan.check_streams().map_err(ProtocolError::Setup)?;
    let dims = plan.dims(h, w).map_err(ProtocolError::Setup)?;
    if inp.image.len() != plan.inputs().len(h, w) {
        return Err(ProtocolError::Setup(format!(
            "input share of {} values for a {h} x {w} input ({} expected)",
            inp.image.len(),
            plan.inputs().len(h, w)
        )));
    }
    let costs = plan.costs(h, w).map_err(ProtocolError::Setup)?;
    same_session(ch, party, &inp.session_tag)?;
    let from = (Instant::now(), ch.stats(), engine.counters());
    let per_job_weights = matches!(inp.weights, Weights::PerJob);
    let shares = weight_shares(plan);
    let per_job;
    let opened: &Opened = match inp.weights {
        Weights::Opened(o) => o,
        Weights::PerJob => {
            per_job = open_in_job(ch, party, &mut inp.rand, &shares)?;
            &per_job
        }
    };
    let steps = plan.weight_steps();
    if opened.u.len() != steps.len()
        || steps
            .iter()
            .enumerate()
            .any(|(j, &(_, n))| opened.u[j].len() != n || opened.mask[j].len() != n)
    {
        return Err(ProtocolError::Setup(
            "opened weights do not have the model's shape".into(),
        ));
    }
    let weights = steps
        .iter()
        .enumerate()
        .map(|(j, &(i, _))| (i, (&opened.u[j][..], &opened.mask[j][..])))
        .collect();
    let need = plan.needed_bits();
    let fused = plan.fused(engine.fuses_relu_extension());
    let mut job = Job {
        ch,
        engine,
        party,
        rand: inp.rand,
        batch: inp.relu_batch.max(1),
        rep: Report {
            party: party.into(),
            patches: h * w,
            ..Default::default()
        },
        weights,
        open_widths: plan.open_widths(),
        product_bits: (0..plan.steps.len())
            .map(|i| plan.product_bits(&need, i))
            .collect(),
        circuit_bits: (0..plan.steps.len())
            .map(|i| plan.circuit_bits(&need, i, &fused))
            .collect(),
        fused,
        run: 0,
        used: Vec::new(),
    };
    job.rep.seconds_setup = t_start.elapsed().as_secs_f64();
    if per_job_weights {
        job.tally("OpenWeights", from);
    }

    // When each map, and each opened map, is last read (then dropped).
    let n = plan.steps.len();
    let mut last = vec![0; n];
    let mut last_product = vec![0; n];
    for (i, st) in plan.steps.iter().enumerate() {
        st.inputs.iter().for_each(|&t| last[t] = i);
        if job.weights.contains_key(&i) && product_input(plan, i).1 == 0 {
            last_product[st.inputs[0]] = i;
        }
    }
    last[plan.output] = usize::MAX;
    let mut maps: Vec<Option<Map<u64>>> = vec![None; n];
    let mut masked: Vec<Option<Masked>> = (0..n).map(|_| None).collect();
    for (at, m) in plan.input_maps(inp.image, h, w) {
        maps[at] = Some(m);
    }
    for i in 1..n {
        if maps[i].is_some() {
            continue;
        }
        job.run = 0;
        job.used.clear();
        let from = job.mark();
        let out = step(&mut job, plan, i, &maps, &mut masked)?;
        job.tally(kind_name(&plan.steps[i].kind), from);
        // Made independently of the dealer's list: a drift is an error, not a wrong image.
        if job.used != plan.uses(i, &dims, &job.fused) || [out.c, out.h, out.w] != dims[i] {
            return Err(ProtocolError::Setup(format!(
                "step {i} used the randomness otherwise than the dealer's plan says"
            )));
        }
        maps[i] = Some(out);
        for &t in &plan.steps[i].inputs {
            if last[t] == i {
                maps[t] = None;
            }
            if last_product[t] == i {
                masked[t] = None;
            }
        }
        job.rep.batches += 1;
        progress(i, n - 1);
    }
    job.rand.finish()?;
    let mut rep = job.rep;
    let pixels = (h * w) as f64;
    for f in &mut rep.ops {
        if let Some(c) = costs.get(f.op) {
            f.comparisons = (c.comparisons_per_pixel * pixels).round() as u64;
            f.macs = (c.macs_per_pixel * pixels).round() as u64;
        }
    }
    rep.macs = rep.ops.iter().map(|f| f.macs).sum();
    rep.seconds_total = t_start.elapsed().as_secs_f64();
    rep.link = job.ch.stats();
    rep.engine = job.engine.counters();
    let mut out = maps[plan.output].take().expect("the output is kept");
    // Its shares agree mod 2^out_bits only: the bits above leave the word.
    plan.output_of(&mut out);
    Ok((out, rep))
}

/// Step `i` on this party's shares of its inputs.
fn step(
    job: &mut Job<'_, '_>,
    plan: &GraphPlan,
    i: usize,
    maps: &[Option<Map<u64>>],
    masked: &mut [Option<Masked>],
) -> Result<Map<u64>, ProtocolError> {
    let st = &plan.steps[i];
    let p = plan.params;
    let ins: Vec<&Map<u64>> = st
        .inputs
        .iter()
        .map(|&t| maps[t].as_ref().expect("made before and not yet dropped"))
        .collect();
    if let Some(out) = linear_step(&st.kind, &ins, p) {
        return Ok(out);
    }
    let x = ins[0];
    let relu = |sh| ActCircuit::Relu(TruncParams { sh, k: p.k });
    let trunc = |sh| ActCircuit::Trunc(TruncParams { sh, k: p.k });
    Ok(match &st.kind {
        Kind::Input { .. } | Kind::NoiseMap { .. } => unreachable!("the inputs are given"),
        Kind::Add { .. }
        | Kind::Sub { .. }
        | Kind::Concat { .. }
        | Kind::AvgPool { .. }
        | Kind::Resize { .. }
        | Kind::DepthToSpace { .. }
        | Kind::SpaceToDepth { .. } => unreachable!("linear steps are made above"),
        Kind::Trunc { sh } => Map {
            v: job.circuit(i, trunc(*sh), &x.v)?,
            ..*x
        },
        Kind::Relu { sh } => Map {
            v: job.circuit(i, relu(*sh), &x.v)?,
            ..*x
        },
        Kind::Conv { b, .. } | Kind::Affine { b, .. } => {
            let t = st.inputs[0];
            if masked[t].is_none() {
                masked[t] = Some(job.open_masked(i, (t as u32, 0), x)?);
            }
            let z = job.product(plan, i, masked[t].as_ref().expect("opened above"))?;
            z.map(|c, v| v.wrapping_add(per_channel(b, c)))
        }
        Kind::MaxPool { window } => max_pool(job, i, relu(0), window, x)?,
        Kind::LeakyRelu { sh, alpha } => {
            let r = job.circuit(i, relu(*sh), &x.v)?;
            let t = job.circuit(i, trunc(*sh), &x.v)?;
            let v = r
                .iter()
                .zip(&t)
                .map(|(&r, &t)| (r << p.ws).wrapping_add(alpha.wrapping_mul(t.wrapping_sub(r))))
                .collect();
            Map { v, ..*x }
        }
        Kind::PRelu { sh, .. } => {
            let r = job.circuit(i, relu(*sh), &x.v)?;
            let t = job.circuit(i, trunc(*sh), &x.v)?;
            let neg = Map {
                v: t.iter().zip(&r).map(|(t, r)| t.wrapping_sub(*r)).collect(),
                ..*x
            };
            let m = job.open_masked(i, product_input(plan, i), &neg)?;
            let z = job.product(plan, i, &m)?;
            Map {
                v: r.iter()
                    .zip(&z.v)
                    .map(|(&r, &z)| (r << p.ws).wrapping_add(z))
                    .collect(),
                ..*x
            }
        }
        Kind::Clip { lo, hi } => {
            let mut v = x.v.clone();
            // lo + ReLU(x - lo)
            if let Some(lo) = lo {
                let d: Vec<u64> = v.iter().map(|&v| job.plus(v, lo.wrapping_neg())).collect();
                let r = job.circuit(i, relu(0), &d)?;
                v = r.iter().map(|&r| job.plus(r, *lo)).collect();
            }
            // hi - ReLU(hi - y)
            if let Some(hi) = hi {
                let d: Vec<u64> = v.iter().map(|&v| job.plus(v.wrapping_neg(), *hi)).collect();
                let r = job.circuit(i, relu(0), &d)?;
                v = r.iter().map(|&r| job.plus(r.wrapping_neg(), *hi)).collect();
            }
            Map { v, ..*x }
        }
    })
}

/// max over each window, as the oracle folds it: m = first; m += ReLU(next - m), one
/// comparison round per further value, every output position with one in the same run.
fn max_pool(
    job: &mut Job<'_, '_>,
    i: usize,
    circ: ActCircuit,
    window: &crate::model::graph::Window,
    x: &Map<u64>,
) -> Result<Map<u64>, ProtocolError> {
    let (oh, ow) = window_dims(window, x.h, x.w);
    let hw = x.h * x.w;
    // Every output's window, as positions in its plane: flat, with each window's start.
    let (mut taps, mut start) = (Vec::new(), Vec::with_capacity(oh * ow + 1));
    let mut at = Vec::new();
    for y in 0..oh {
        for xo in 0..ow {
            window_at(window, x.h, x.w, y, xo, &mut at);
            start.push(taps.len());
            taps.extend(at.iter().map(|&t| t as u32));
        }
    }
    start.push(taps.len());
    let win = |o: usize| &taps[start[o]..start[o + 1]];
    let mut out = Map::zeros(x.c, oh, ow);
    for c in 0..x.c {
        for o in 0..oh * ow {
            out.v[c * oh * ow + o] = x.v[c * hw + win(o)[0] as usize];
        }
    }
    let longest = (0..oh * ow).map(|o| win(o).len()).max().unwrap_or(0);
    for j in 1..longest {
        // Every window with a (j+1)-th value, channel after channel.
        let who: Vec<usize> = (0..oh * ow).filter(|&o| win(o).len() > j).collect();
        let d: Vec<u64> = (0..x.c)
            .flat_map(|c| who.iter().map(move |&o| (c, o)))
            .map(|(c, o)| x.v[c * hw + win(o)[j] as usize].wrapping_sub(out.v[c * oh * ow + o]))
            .collect();
        let r = job.circuit(i, circ, &d)?;
        let at = (0..x.c).flat_map(|c| who.iter().map(move |&o| c * oh * ow + o));
        for (o, r) in at.zip(r) {
            out.v[o] = out.v[o].wrapping_add(r);
        }
    }
    Ok(out)
}
