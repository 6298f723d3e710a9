//! How a party's correlated randomness is laid out, shared by the dealer (who makes it) and
//! the servers (who consume it), so both walk it in the same order.
//!
//! Each party holds a seed; masks and party 0's triple shares come from ChaCha streams named
//! by purpose, layer and batch ([`Stream`]). Party 1's triple shares (`c` of C = A B and of
//! the elementwise triples) are explicit "corrections", consumed in the order
//! batch -> layer -> (matrix triple, then elementwise triples of a hidden layer).

use crate::ring::share::{Prg, Seed, Stream};

/// Elementwise correlations for one hidden layer and batch (`e` elements): a square pair
/// (sa, sa^2) for tc^2 and two Beaver triples for the selections g1 p1 and g2 p2.
#[derive(Clone, Debug, Default)]
pub struct ElemTriples {
    pub sq_a: Vec<u64>,
    pub sq_c: Vec<u64>,
    pub a: [Vec<u64>; 2],
    pub b: [Vec<u64>; 2],
    pub c: [Vec<u64>; 2],
}

/// Source of one party's randomness for a job.
pub struct PartyRandomness {
    pub party: u8,
    seed: Seed,
    corrections: Vec<u64>,
    cursor: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("the correlated randomness is exhausted ({need} more values needed at offset {at} of {len}): it was made for a different job size")]
pub struct Exhausted {
    need: usize,
    at: usize,
    len: usize,
}

impl PartyRandomness {
    pub fn new(party: u8, seed: Seed, corrections: Vec<u64>) -> Self {
        PartyRandomness {
            party,
            seed,
            corrections,
            cursor: 0,
        }
    }

    pub fn weight_mask(&self, layer: u32, n: usize) -> Vec<u64> {
        Prg::new(&self.seed, Stream::WeightMask(layer)).vec(n)
    }

    pub fn image_mask(&self, n: usize) -> Vec<u64> {
        Prg::new(&self.seed, Stream::ImageMask).vec(n)
    }

    pub fn act_mask(&self, layer: u32, batch: u32, n: usize) -> Vec<u64> {
        Prg::new(&self.seed, Stream::ActMask(layer, batch)).vec(n)
    }

    fn take(&mut self, n: usize) -> Result<Vec<u64>, Exhausted> {
        if self.cursor + n > self.corrections.len() {
            return Err(Exhausted {
                need: n,
                at: self.cursor,
                len: self.corrections.len(),
            });
        }
        let v = self.corrections[self.cursor..self.cursor + n].to_vec();
        self.cursor += n;
        Ok(v)
    }

    /// This party's share of C = A B for (layer, batch), n = outputs x batch.
    pub fn mat_triple(&mut self, layer: u32, batch: u32, n: usize) -> Result<Vec<u64>, Exhausted> {
        if self.party == 0 {
            Ok(Prg::new(&self.seed, Stream::MatTriple(layer, batch)).vec(n))
        } else {
            self.take(n)
        }
    }

    pub fn elem_triples(
        &mut self,
        layer: u32,
        batch: u32,
        e: usize,
    ) -> Result<ElemTriples, Exhausted> {
        let (sq_a, a, b, mut prg) = elem_masks(&self.seed, layer, batch, e);
        let (sq_c, c) = if self.party == 0 {
            (prg.vec(e), [prg.vec(e), prg.vec(e)])
        } else {
            (self.take(e)?, [self.take(e)?, self.take(e)?])
        };
        Ok(ElemTriples {
            sq_a,
            sq_c,
            a,
            b,
            c,
        })
    }

    /// True when every explicit value was consumed (a job-size mismatch shows up here).
    pub fn fully_consumed(&self) -> bool {
        self.cursor == self.corrections.len()
    }
}

/// The seed-derived part of a party's elementwise triples: (sq_a, a, b) and the stream
/// positioned where party 0's `c` shares follow.
pub type ElemMasks = (Vec<u64>, [Vec<u64>; 2], [Vec<u64>; 2], Prg);

pub fn elem_masks(seed: &Seed, layer: u32, batch: u32, e: usize) -> ElemMasks {
    let mut prg = Prg::new(seed, Stream::ElemTriple(layer, batch));
    let sq_a = prg.vec(e);
    let a = [prg.vec(e), prg.vec(e)];
    let b = [prg.vec(e), prg.vec(e)];
    (sq_a, a, b, prg)
}
