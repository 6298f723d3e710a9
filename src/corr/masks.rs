//! The weight mask A of the linear layers' Beaver products: each party's share is expanded
//! from the seed that owns it (a job's seed, or a model mask's seed; never both for one A).

use crate::ring::plan::Plan;
use crate::ring::share::{Prg, Seed, Stream};

/// One party's share of layer `layer`'s weight mask A (`n` values), from the seed that owns
/// it: a job's seed, or a model mask's seed (never both for one A).
pub fn mask_share(seed: &Seed, layer: u32, n: usize) -> Vec<u64> {
    Prg::new(seed, Stream::WeightMask(layer)).vec(n)
}

/// This party's share of every layer's weight mask A.
pub fn mask_shares(seed: &Seed, plan: &Plan) -> Vec<Vec<u64>> {
    plan.layers
        .iter()
        .enumerate()
        .map(|(l, ly)| mask_share(seed, l as u32, ly.inputs * ly.outputs))
        .collect()
}

/// Number of weights (not biases) of all layers: the length of U.
pub fn weight_count(plan: &Plan) -> usize {
    plan.layers.iter().map(|l| l.inputs * l.outputs).sum()
}
