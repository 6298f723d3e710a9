//! An MLP job's hidden-layer matrix triples made by the two servers, batch by batch and
//! layer by layer in the dealer's order (`crate::dealer::generate_into`): party 1 leaves with
//! the corrections the dealer would write for the same seeds, party 0 with nothing (its
//! shares are its streams). The output layer's product is read mod 2^64, wider than the
//! plaintext modulus can be (`he::MAX_BITS`): it is not made here yet.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::{ensure, Context, Result};
use rand09::{CryptoRng, Rng};

use super::he::He;
use super::triple::{Evaluator, KeyHolder, TripleShape};
use crate::corr::batches::batches;
use crate::corr::operands::MlpOperands;
use crate::ring::Party;
use crate::twopc::channel::Channel;

/// The public facts both parties make the triples from.
pub struct HiddenTriples<'a> {
    pub widths: &'a [usize],
    /// Each hidden layer's product width (the dealer's `NonlinearDeal::product_bits`).
    pub bits: &'a [u32],
    pub patches: Range<usize>,
    pub batch: usize,
}

/// One side's key material: party 1 holds a key per product width, party 0 the public keys.
enum Side {
    Keys(BTreeMap<u32, KeyHolder>),
    PublicKeys(BTreeMap<u32, Evaluator>),
}

impl HiddenTriples<'_> {
    /// Runs the job's hidden-layer triples as `party` on its own operands. Party 1 returns
    /// its corrections, one vector (dout x n, each value
    /// below 2^bits) per batch and hidden layer, batch-major.
    pub fn run(
        &self,
        ch: &mut dyn Channel,
        party: Party,
        ops: &MlpOperands,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<Vec<u64>>> {
        let hidden = self.widths.len().saturating_sub(2);
        ensure!(
            self.bits.len() == hidden,
            "{} product widths for {hidden} hidden layers",
            self.bits.len()
        );
        // One key per width, made fresh for this run: a width's parameters are its own.
        let mut widths: Vec<u32> = self.bits.to_vec();
        widths.sort_unstable();
        widths.dedup();
        let mut side = if party.is_s0() {
            let mut m = BTreeMap::new();
            for &bits in &widths {
                let he = He::new(bits)?;
                m.insert(bits, Evaluator::start(ch, he)?);
            }
            Side::PublicKeys(m)
        } else {
            let mut m = BTreeMap::new();
            for &bits in &widths {
                let he = He::new(bits)?;
                m.insert(bits, KeyHolder::start(ch, he, rng)?);
            }
            Side::Keys(m)
        };
        let masks: Vec<Vec<u64>> = (0..hidden).map(|l| ops.weight_mask(l)).collect();
        let mut out = Vec::new();
        for (b, start, n) in batches(self.patches.len(), self.batch) {
            let start = self.patches.start + start;
            for (l, mask) in masks.iter().enumerate() {
                let shape = TripleShape {
                    dout: self.widths[l + 1],
                    din: self.widths[l],
                    n,
                    bits: self.bits[l],
                };
                let input = ops.input_mask(l, b, start, n);
                let what = || format!("the triple of layer {l}, batch {b}");
                match &mut side {
                    Side::PublicKeys(m) => {
                        let ev = m.get_mut(&shape.bits).expect("a key per width");
                        let c0 = ops.product_share(l, b, shape.dout * n);
                        ev.triple(ch, shape, (mask, &input, &c0), rng)
                            .with_context(what)?;
                    }
                    Side::Keys(m) => {
                        let kh = m.get_mut(&shape.bits).expect("a key per width");
                        out.push(kh.triple(ch, shape, mask, &input, rng).with_context(what)?);
                    }
                }
            }
        }
        Ok(out)
    }
}
