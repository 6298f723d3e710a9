//! The dealer's correlated randomness for a CNN graph job (docs/graph.md, milestone 4), from
//! public facts only: the plan without weights, the image size, the engine and the batch.
//!
//! Streams, all from the parties' seeds: the weight mask A_j of the j-th weighted step
//! (`WeightMask(j)`, the model mask's when the weights were opened once); the map mask B_t of
//! every tensor t a product reads (`ActMask(t, 0)`: one per tensor, however many steps read
//! it), and of a PReLU's t - max(0, t) (`ActMask(step, 1)`); a product step's triple
//! C = A (x) B (`MatTriple(step, 0)`); a step's circuit runs, numbered from 0 in the order
//! the step makes them (`AndTriple/DaBit/EdaBit(step, run)`); for the boolean engine, a
//! ReLU result t extended before its opening, party 1's share of ρ_0 ρ_1 (`MapExtend(t)`).
//! Party 1's explicit values are the triples', the runs' and the extensions' in the order
//! of [`GraphPlan::uses`], step after step.

use crate::circuit::activation::ActCircuit;
use crate::circuit::netlist::Netlist;
use crate::corr::batches::batches;
use crate::corr::engine_kind::EngineKind;
use crate::corr::explicit::explicit_into;
use crate::corr::operands::GraphOperands;
use crate::corr::pack::{low_mask, Tally};
use crate::corr::randomness::{bits_of, extension_words, PartyRandomness};
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::dealer::DealSeeds;
use crate::inference::graph::Map;
use crate::ring::graph::uses::{product, Use};
use crate::ring::graph::GraphPlan;
use crate::ring::share::{add, Prg, Seed, Stream};
use crate::ring::Party;

/// Netlists of the boolean engine, recorded once per circuit (a graph uses a few).
#[derive(Default)]
struct Nets(Vec<(ActCircuit, Netlist)>);

impl Nets {
    fn of(&mut self, circ: &ActCircuit) -> &Netlist {
        let i = match self.0.iter().position(|(c, _)| c == circ) {
            Some(i) => i,
            None => {
                self.0.push((*circ, Netlist::record(circ)));
                self.0.len() - 1
            }
        };
        &self.0[i].1
    }
}

/// Party 1's explicit values for a graph job on an h x w input (sides multiples of the
/// plan's stride), circuits in runs of `batch` elements, and their bits: a product's triple
/// and a circuit's daBit and edaBit shares at [`GraphPlan::product_bits`] and
/// [`GraphPlan::circuit_out_bits`] of its step.
pub fn correction_count(
    plan: &GraphPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
    batch: usize,
) -> Result<Tally, String> {
    let dims = plan.dims(h, w)?;
    let need = plan.needed_bits();
    let fused = plan.fused(engine == EngineKind::Gmw);
    let mut nets = Nets::default();
    let mut n = Tally::default();
    for i in 1..plan.steps.len() {
        for u in plan.uses(i, &dims, &fused) {
            n = n + match u {
                Use::Product { len } => Tally::of(len, plan.product_bits(&need, i)),
                Use::Extend { len, bits } => Tally::of(len, bits),
                Use::Circuit { circ, elements } if engine == EngineKind::Gmw => {
                    let net = nets.of(&circ);
                    let bits = plan.circuit_bits(&need, i, &fused);
                    batches(elements, batch.max(1))
                        .map(|(_, _, n)| RunShape::of(net, n).explicit(bits))
                        .sum()
                }
                Use::Circuit { .. } => Tally::default(),
            };
        }
    }
    Ok(n)
}

/// What the dealer and the servers must agree on about a graph job's circuits, recorded in
/// the triplet header: each distinct circuit in order of first use, its AND gates and
/// outputs; for the boolean engine, its netlist's AND gates, daBits and edaBits per
/// element; then `out<N>`, the output's width.
pub fn circuit_shapes(
    plan: &GraphPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
) -> Result<String, String> {
    let dims = plan.dims(h, w)?;
    let fused = plan.fused(engine == EngineKind::Gmw);
    let mut seen: Vec<ActCircuit> = Vec::new();
    for i in 1..plan.steps.len() {
        for u in plan.uses(i, &dims, &fused) {
            if let Use::Circuit { circ, .. } = u {
                if !seen.contains(&circ) {
                    seen.push(circ);
                }
            }
        }
    }
    let mut nets = Nets::default();
    let shapes: Vec<String> = seen
        .iter()
        .map(|circ| describe_circuit(circ, engine, &mut nets))
        .collect();
    // The output's width sizes the values of the steps that reach it (wire revision 6,
    // when it was 64): a file dealt at another is refused by name.
    Ok(format!("{};out{}", shapes.join(";"), plan.out_bits()))
}

/// One circuit's shape as triplet headers record it: its AND gates and outputs; for the
/// boolean engine, its netlist's (recorded only then) AND gates, daBits and edaBits.
fn describe_circuit(circ: &ActCircuit, engine: EngineKind, nets: &mut Nets) -> String {
    match engine {
        EngineKind::Gc => format!("{},{}", circ.and_gates(), circ.out_len()),
        EngineKind::Gmw => {
            // The openings count pins how the ANDs share their `b` (`Level::leader`): a file
            // dealt with other groups would give wrong ANDs.
            let (ands, dabits, edas, openings) = nets.of(circ).shape();
            format!("{ands},{dabits},{edas},{openings}")
        }
    }
}

/// Party 1's shares of ρ_0 ρ_1 for tensor `layer`'s extension before its opening
/// (`twopc::extend::open_extending`), `n` elements at `hi_bits`: ρ_i are party i's bits from
/// its own seed (`corr::randomness::extension_bits`), party 0's share of the product the
/// values after them in its stream.
pub(crate) fn emit_map_extension<E>(
    seeds: &[Seed; 2],
    layer: u32,
    n: usize,
    hi_bits: u32,
    emit: &mut crate::corr::pack::Emit<'_, E>,
) -> Result<(), E> {
    // Both parties' ρ words ANDed before they are spread out: one map-sized vector, not three.
    let mut prg0 = Prg::new(&seeds[0], Stream::MapExtend(layer));
    let mut rho = extension_words(&mut prg0, n);
    let rho1 = extension_words(&mut Prg::new(&seeds[1], Stream::MapExtend(layer)), n);
    rho.iter_mut().zip(&rho1).for_each(|(a, b)| *a &= b);
    let mut p = prg0.vec(n);
    for (v, both) in p.iter_mut().zip(bits_of(&rho, n)) {
        *v = both.wrapping_sub(*v);
    }
    emit(&p, hi_bits)
}

/// Computes party 1's explicit values for the parties' seeds and hands them to `emit` in
/// consumption order, a step's product or circuit run at a time. `plan` may be public (its
/// secret values are not read).
#[allow(clippy::too_many_arguments)]
pub fn generate_into<E>(
    plan: &GraphPlan,
    h: usize,
    w: usize,
    deal_seeds: &DealSeeds,
    engine: EngineKind,
    batch: usize,
    emit: &mut crate::corr::pack::Emit<'_, E>,
) -> Result<(), E>
where
    E: From<String>,
{
    plan.check_streams()?;
    let dims = plan.dims(h, w)?;
    let need = plan.needed_bits();
    let fused = plan.fused(engine == EngineKind::Gmw);
    let seeds = &deal_seeds.job;
    let mask_seeds = deal_seeds.model_mask.unwrap_or(*seeds);
    let ops = [0, 1].map(|p| GraphOperands::new(plan, &seeds[p], &mask_seeds[p]));
    let mut nets = Nets::default();
    for i in 1..plan.steps.len() {
        let mut run = 0u32;
        for u in plan.uses(i, &dims, &fused) {
            match u {
                Use::Extend { len, bits } => {
                    let t = plan.steps[i].inputs[0] as u32;
                    emit_map_extension(seeds, t, len, bits, emit)?;
                }
                Use::Product { len } => {
                    let a = add(&ops[0].weight_mask(i), &ops[1].weight_mask(i));
                    let (b0, b1) = (
                        ops[0].input_mask(plan, i, &dims),
                        ops[1].input_mask(plan, i, &dims),
                    );
                    let b = Map {
                        v: add(&b0.v, &b1.v),
                        ..b0
                    };
                    let mut c = product(&plan.steps[i].kind, &a, &b).v;
                    debug_assert_eq!(c.len(), len);
                    let c0 = ops[0].product_share(i, len);
                    c.iter_mut()
                        .zip(&c0)
                        .for_each(|(x, y)| *x = x.wrapping_sub(*y));
                    emit(&c, plan.product_bits(&need, i))?;
                }
                Use::Circuit { circ, elements } => {
                    for (_, _, n) in batches(elements, batch.max(1)) {
                        let at = Slot {
                            layer: i as u32,
                            batch: run,
                        };
                        run += 1;
                        if engine == EngineKind::Gmw {
                            let bits = plan.circuit_bits(&need, i, &fused);
                            explicit_into(seeds, at, nets.of(&circ), n, bits, emit)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Both parties' randomness for a graph job, in memory (tests; small jobs), from fresh
/// seeds.
pub fn generate(
    plan: &GraphPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
    batch: usize,
    model_mask: Option<[Seed; 2]>,
) -> Result<Deal, String> {
    let seeds = DealSeeds::fresh(model_mask);
    generate_with(plan, h, w, engine, batch, &seeds, engine.deal_setup())
}

/// [`generate`] with the seeds and the engine's setup given (tests that must be
/// reproducible; the dealer itself always draws them fresh).
#[doc(hidden)]
pub fn generate_with(
    plan: &GraphPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
    batch: usize,
    seeds: &DealSeeds,
    setup: (Vec<u8>, Vec<u8>),
) -> Result<Deal, String> {
    let capacity = correction_count(plan, h, w, engine, batch)?.values;
    Deal::collect(seeds, setup, capacity, |emit| {
        generate_into::<String>(plan, h, w, seeds, engine, batch, emit)
    })
}

/// Both parties' randomness for a graph job, in memory (tests; small jobs): their seeds,
/// party 1's explicit values (one per u64, each reduced to its width as the dealer file
/// holds it), and the engine's setup data per party.
pub struct Deal {
    pub seeds: [Seed; 2],
    pub corrections: Vec<u64>,
    pub setup: (Vec<u8>, Vec<u8>),
}

impl Deal {
    /// The deal of `seeds` whose explicit values a dealer's `generate_into` (`run`) hands to
    /// its emitter, gathered in memory (`capacity` of them).
    fn collect<E>(
        seeds: &DealSeeds,
        setup: (Vec<u8>, Vec<u8>),
        capacity: usize,
        run: impl FnOnce(&mut dyn FnMut(&[u64], u32) -> Result<(), E>) -> Result<(), E>,
    ) -> Result<Deal, E> {
        let mut corrections = Vec::with_capacity(capacity);
        run(&mut |v: &[u64], bits| {
            corrections.extend(v.iter().map(|x| x & low_mask(bits)));
            Ok(())
        })?;
        Ok(Deal {
            seeds: seeds.job,
            corrections,
            setup,
        })
    }

    /// Party `p`'s randomness (its seed; S1 also the explicit values) and engine setup, as
    /// its triplet file would give them.
    pub fn party(&self, p: Party) -> (PartyRandomness, &[u8]) {
        let (corrections, setup) = match p {
            Party::S0 => (Vec::new(), &self.setup.0),
            Party::S1 => (self.corrections.clone(), &self.setup.1),
        };
        (
            PartyRandomness::new(p, self.seeds[p.index()], corrections),
            setup,
        )
    }
}
