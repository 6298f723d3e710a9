//! A CNN graph job's product steps made by the two servers, step by step in the dealer's
//! order (`crate::dealer::graph::generate_into`): party 1 leaves with each step's
//! correction as the dealer would write it for the same seeds, party 0 with nothing (its
//! shares are its streams). The job's circuits' correlations (AND triples, daBits, the
//! extensions) are not made here yet.

use std::collections::btree_map::{BTreeMap, Entry};

use anyhow::{Context, Result};
use rand09::{CryptoRng, Rng};

use super::conv::{ConvShape, Keys};
use super::he::{He, Set};
use crate::corr::engine_kind::EngineKind;
use crate::corr::operands::GraphOperands;
use crate::ring::graph::uses::Use;
use crate::ring::graph::GraphPlan;
use crate::ring::Party;
use crate::twopc::channel::Channel;

/// The public facts both parties make the products from.
pub struct GraphProducts<'a> {
    pub plan: &'a GraphPlan,
    pub h: usize,
    pub w: usize,
    pub engine: EngineKind,
}

/// One product step party 1 made: the step and its correction (each value below 2^bits).
pub struct StepCorrection {
    pub step: usize,
    pub bits: u32,
    pub values: Vec<u64>,
}

impl GraphProducts<'_> {
    /// Runs the job's product steps as `party` on its own operands; party 1 returns its
    /// corrections in the dealer's order. A key pair per party and product width, made fresh
    /// for this run when the width is first met (both parties walk the same public plan).
    /// Whenever one party sends, the other is reading (party 1's blocks first, then party
    /// 0's; per sum, party 1 sends first), so a link whose send waits for the peer's read
    /// does not deadlock.
    pub fn run(
        &self,
        ch: &mut dyn Channel,
        party: Party,
        ops: &GraphOperands,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<StepCorrection>> {
        let plan = self.plan;
        let dims = plan.dims(self.h, self.w).map_err(anyhow::Error::msg)?;
        let need = plan.needed_bits();
        let fused = plan.fused(self.engine == EngineKind::Gmw);
        let mut keys: BTreeMap<u32, Keys> = BTreeMap::new();
        let mut out = Vec::new();
        for i in 1..plan.steps.len() {
            for u in plan.uses(i, &dims, &fused) {
                let Use::Product { len } = u else { continue };
                let kind = &plan.steps[i].kind;
                let bits = plan.product_bits(&need, i);
                let what = || format!("the product of step {i}");
                let a = ops.weight_mask(i);
                let b = ops.input_mask(plan, i, &dims);
                let degree = Set::for_bits(bits).degree;
                let shape =
                    ConvShape::new(kind, [b.c, b.h, b.w], bits, degree).with_context(what)?;
                let keys = match keys.entry(bits) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(Keys::start(ch, party, He::new(bits)?, rng)?),
                };
                let c0 = party.is_s0().then(|| ops.product_share(i, len));
                let made = keys
                    .conv_triple(ch, party, kind, &shape, (&a, &b), c0.as_deref(), rng)
                    .with_context(what)?;
                if let Some(values) = made {
                    out.push(StepCorrection {
                        step: i,
                        bits,
                        values,
                    });
                }
            }
        }
        Ok(out)
    }
}
