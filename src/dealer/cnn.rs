//! The dealer's correlated randomness for a CNN job, from public facts only (layer shapes,
//! image size, engine, ReLU batch size). Consumption order of party 1's explicit values:
//! layer after layer, (boolean engine, a layer after a ReLU) the product ρ_0 ρ_1 that
//! extends its input map before the opening, the matrix triples C = A cols(B) of each block of
//! output rows, then (boolean engine) for each ReLU run of the layer its AND triples, daBits
//! and selection (docs/protocol.md, "The ReLU by selection").

use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::circuit::netlist::Netlist;
use crate::corr::batches::batches;
use crate::corr::engine_kind::EngineKind;
use crate::corr::explicit::explicit_into;
use crate::corr::masks::mask_share;
use crate::corr::pack::{low_mask, Tally};
use crate::corr::randomness::{act_mask_of, bits_of, extension_words, PartyRandomness};
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::dealer::DealSeeds;
use crate::ring::cnn::{row_blocks, CnnPlan};
use crate::ring::matmul::{ConvCols, PackedA, Rhs};
use crate::ring::share::{add, Prg, Seed, Stream};
use crate::ring::Party;

/// The ReLU circuit of a plan's hidden layers.
pub fn relu_circuit(plan: &CnnPlan) -> ActCircuit {
    ActCircuit::Relu(TruncParams {
        sh: plan.params.ws,
        k: plan.params.k,
    })
}

/// What the dealer and the servers must agree on about the ReLU circuit, recorded in the
/// triplet header: AND gates and outputs of the circuit; for the boolean engine, of its
/// netlist with the output conversion (AND gates, daBits, edaBits per element); then the
/// output's width.
pub fn circuit_shape(plan: &CnnPlan, engine: EngineKind) -> String {
    let circ = relu_circuit(plan);
    let shape = describe_circuit(&circ, engine, || Netlist::record(&circ));
    // The output's width sizes the last layer's values (its C, and for the boolean engine
    // its input's extension): a file dealt at another ("out37" at FFDNet's before wire
    // revision 5, when it was not named) is refused by name, not by its size.
    let out = plan.params.out_bits();
    match engine {
        // The ReLU's result is extended by its shares' top bits before the next layer's
        // opening (one product per value in the file; "wrap" named the two wrap corrections
        // before it).
        EngineKind::Gmw => format!("{shape},extend,out{out}"),
        EngineKind::Gc => format!("{shape},out{out}"),
    }
}

/// One circuit's shape as triplet headers record it: its AND gates and outputs; for the
/// boolean engine, its netlist's (`net`, recorded only then) AND gates, daBits and edaBits.
pub fn describe_circuit<N: std::borrow::Borrow<Netlist>>(
    circ: &ActCircuit,
    engine: EngineKind,
    net: impl FnOnce() -> N,
) -> String {
    match engine {
        EngineKind::Gc => format!("{},{}", circ.and_gates(), circ.out_len()),
        EngineKind::Gmw => {
            // The openings count pins how the ANDs share their `b` (`Level::leader`): a file
            // dealt with other groups would give wrong ANDs.
            let (ands, dabits, edas, openings) = net().borrow().shape();
            format!("{ands},{dabits},{edas},{openings}")
        }
    }
}

/// Party 1's explicit values for a CNN job on an h x w image, ReLUs in runs of `batch`, and
/// their bits: a layer's extension product (boolean engine) at its opening's width less k, its
/// matrix triples at [`CnnPlan::product_bits`], its ReLU runs' values at
/// [`CnnPlan::fused_relu_bits`].
pub fn correction_count(
    plan: &CnnPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
    batch: usize,
) -> Tally {
    let (h, w) = plan.frame.stack_dims(h, w);
    let hw = h * w;
    let net = (engine == EngineKind::Gmw).then(|| Netlist::record(&relu_circuit(plan)));
    let nl = plan.layers.len();
    plan.layers
        .iter()
        .enumerate()
        .map(|(l, ly)| {
            let relu: Tally = match &net {
                Some(net) if l + 1 < nl => batches(ly.cout * hw, batch)
                    .map(|(_, _, n)| RunShape::of(net, n).explicit(plan.fused_relu_bits(l)))
                    .sum(),
                _ => Tally::default(),
            };
            let extension = match &net {
                Some(_) if plan.extends_input(l) => {
                    Tally::of(ly.cin * hw, plan.open_bits(l) - plan.params.k)
                }
                _ => Tally::default(),
            };
            extension + Tally::of(ly.cout * hw, plan.product_bits(l)) + relu
        })
        .sum()
}

/// Computes party 1's explicit values for the parties' seeds and hands them to `emit` in
/// consumption order, a block at a time. `plan` may be public (no weights).
#[allow(clippy::too_many_arguments)]
pub fn generate_into<E>(
    plan: &CnnPlan,
    h: usize,
    w: usize,
    deal_seeds: &DealSeeds,
    engine: EngineKind,
    batch: usize,
    emit: &mut crate::corr::pack::Emit<'_, E>,
) -> Result<(), E> {
    // The layers run on the frame's sub-images (the whole image for DnCNN).
    let (h, w) = plan.frame.stack_dims(h, w);
    let hw = h * w;
    let seeds = &deal_seeds.job;
    let mask_seeds = deal_seeds.model_mask.unwrap_or(*seeds);
    let net = (engine == EngineKind::Gmw).then(|| Netlist::record(&relu_circuit(plan)));
    let nl = plan.layers.len();
    for (l, ly) in plan.layers.iter().enumerate() {
        let li = l as u32;
        let n_w = ly.weight_count();
        let a = add(
            &mask_share(&mask_seeds[0], li, n_w),
            &mask_share(&mask_seeds[1], li, n_w),
        );
        if net.is_some() && plan.extends_input(l) {
            let hi = plan.open_bits(l) - plan.params.k;
            emit_map_extension(seeds, li, ly.cin * hw, hi, emit)?;
        }
        let b = [0, 1].map(|p| act_mask_of(&seeds[p], li, 0, ly.cin * hw));
        let b = add(&b[0], &b[1]);
        // A packed once for the layer; each block's columns of B packed from the map.
        let a = PackedA::new(&[&a], ly.cout, &[ly.fan_in()]);
        for (blk, row0, rows) in row_blocks(ly, h, w) {
            let n = rows * w;
            let cols = ConvCols::same(vec![&b], ly.cin, h, w, ly.ksize, row0, rows);
            let mut c = vec![0u64; ly.cout * n];
            a.gemm_acc(Rhs::Cols(&cols), &mut c);
            let c0 = Prg::new(&seeds[0], Stream::MatTriple(li, blk)).vec(ly.cout * n);
            c.iter_mut()
                .zip(&c0)
                .for_each(|(x, y)| *x = x.wrapping_sub(*y));
            emit(&c, plan.product_bits(l))?;
        }
        if let (Some(net), true) = (&net, l + 1 < nl) {
            for (b, _, n) in batches(ly.cout * hw, batch) {
                let at = Slot {
                    layer: li,
                    batch: b,
                };
                explicit_into(seeds, at, net, n, plan.fused_relu_bits(l), emit)?;
            }
        }
    }
    Ok(())
}

/// Party 1's shares of ρ_0 ρ_1 for layer `layer`'s extension of its input map
/// (`twopc::cnn::open_extending`), `n` elements at `hi_bits`: ρ_i are party i's bits from
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

/// Both parties' randomness for a CNN job, in memory (tests; small jobs): their seeds,
/// party 1's explicit values (one per u64, each reduced to its width as the dealer file
/// holds it), and the engine's setup data per party.
pub struct CnnDeal {
    pub seeds: [Seed; 2],
    pub corrections: Vec<u64>,
    pub setup: (Vec<u8>, Vec<u8>),
}

impl CnnDeal {
    /// The deal of `seeds` whose explicit values a dealer's `generate_into` (`run`) hands to
    /// its emitter, gathered in memory (`capacity` of them).
    pub fn collect<E>(
        seeds: &DealSeeds,
        setup: (Vec<u8>, Vec<u8>),
        capacity: usize,
        run: impl FnOnce(&mut dyn FnMut(&[u64], u32) -> Result<(), E>) -> Result<(), E>,
    ) -> Result<CnnDeal, E> {
        let mut corrections = Vec::with_capacity(capacity);
        run(&mut |v: &[u64], bits| {
            corrections.extend(v.iter().map(|x| x & low_mask(bits)));
            Ok(())
        })?;
        Ok(CnnDeal {
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

pub fn generate(
    plan: &CnnPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
    batch: usize,
    model_mask: Option<[Seed; 2]>,
) -> CnnDeal {
    let seeds = DealSeeds::fresh(model_mask);
    generate_with(plan, h, w, engine, batch, &seeds, engine.deal_setup())
}

/// [`generate`] with the job seeds and the engine's setup given (tests that must be
/// reproducible; the dealer itself always draws them fresh).
#[doc(hidden)]
pub fn generate_with(
    plan: &CnnPlan,
    h: usize,
    w: usize,
    engine: EngineKind,
    batch: usize,
    seeds: &DealSeeds,
    setup: (Vec<u8>, Vec<u8>),
) -> CnnDeal {
    let capacity = correction_count(plan, h, w, engine, batch).values;
    CnnDeal::collect(seeds, setup, capacity, |emit| {
        generate_into::<std::convert::Infallible>(plan, h, w, seeds, engine, batch, emit)
    })
    .unwrap_or_else(|e| match e {})
}
