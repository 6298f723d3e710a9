//! One party's operands of an MLP layer's matrix triple (and of a CNN graph's product step,
//! `GraphOperands`): its share of the weight mask A_l
//! (dout x din) and of the layer's input mask B (din x n patches of a batch), from its own
//! seeds. The dealer sums both parties' (it knows both seeds); each server computes its own
//! when the two make the triple between themselves (`crate::offline`): one function, so the
//! two cannot drift apart.

use crate::corr::batches::extract_batch;
use crate::corr::masks::mask_share;
use crate::corr::randomness::{act_mask_of, image_mask_of};
use crate::inference::map::Map;
use crate::model::geometry::Geometry;
use crate::ring::graph::uses::{product_input, Dims};
use crate::ring::graph::GraphPlan;
use crate::ring::share::{Prg, Seed, Stream};

pub struct MlpOperands {
    geo: Geometry,
    widths: Vec<usize>,
    seed: Seed,
    mask_seed: Seed,
    /// This party's image mask share, padded as the patches read it.
    padded_image: Vec<u64>,
}

impl MlpOperands {
    /// `seed` is the party's job seed, `mask_seed` its weight-mask seed (the model's when
    /// the weights were opened once for it, else the job seed).
    pub fn new(geo: &Geometry, widths: &[usize], seed: &Seed, mask_seed: &Seed) -> MlpOperands {
        MlpOperands {
            geo: *geo,
            widths: widths.to_vec(),
            seed: *seed,
            mask_seed: *mask_seed,
            padded_image: geo.pad(&image_mask_of(seed, geo.height * geo.width)),
        }
    }

    /// The share of layer l's weight mask, dout x din row-major.
    pub fn weight_mask(&self, l: usize) -> Vec<u64> {
        mask_share(
            &self.mask_seed,
            l as u32,
            self.widths[l] * self.widths[l + 1],
        )
    }

    /// Party 0's share of layer l's matrix triple C for batch b (dout x n values, `len`):
    /// its own stream's, as the engine reads it (called on party 0's operands).
    pub fn product_share(&self, l: usize, b: u32, len: usize) -> Vec<u64> {
        Prg::new(&self.seed, Stream::MatTriple(l as u32, b)).vec(len)
    }

    /// The share of layer l's input mask for batch b (patches start..start+n), din x n:
    /// the image mask's windows for the first layer, the activation mask after.
    pub fn input_mask(&self, l: usize, b: u32, start: usize, n: usize) -> Vec<u64> {
        if l == 0 {
            extract_batch(&self.geo, &self.padded_image, start, n)
        } else {
            act_mask_of(&self.seed, l as u32, b, self.widths[l] * n)
        }
    }
}

/// One party's operands of a CNN graph's product steps (`crate::dealer::graph`): its share
/// of the j-th weighted step's weight mask A_j, of the map mask B the step reads, and party
/// 0's share C0 of the product. The dealer sums both parties'; each server computes its own
/// when the two make the product between themselves (`crate::offline::graph`).
pub struct GraphOperands {
    seed: Seed,
    mask_seed: Seed,
    /// Each weighted step's index among them and its weight count.
    weighted: std::collections::HashMap<usize, (u32, usize)>,
}

impl GraphOperands {
    /// `seed` is the party's job seed, `mask_seed` its weight-mask seed (the model's when
    /// the weights were opened once for it, else the job seed).
    pub fn new(plan: &GraphPlan, seed: &Seed, mask_seed: &Seed) -> GraphOperands {
        GraphOperands {
            seed: *seed,
            mask_seed: *mask_seed,
            weighted: plan
                .weight_steps()
                .into_iter()
                .enumerate()
                .map(|(j, (step, n))| (step, (j as u32, n)))
                .collect(),
        }
    }

    /// The share of product step `step`'s weight mask (its weights' layout).
    pub fn weight_mask(&self, step: usize) -> Vec<u64> {
        let (j, n) = self.weighted[&step];
        mask_share(&self.mask_seed, j, n)
    }

    /// The share of the map mask product step `step` reads (`dims`: every tensor's).
    pub fn input_mask(&self, plan: &GraphPlan, step: usize, dims: &[Dims]) -> Map<u64> {
        let (t, k) = product_input(plan, step);
        let [c, h, w] = if k == 1 { dims[step] } else { dims[t as usize] };
        Map {
            c,
            h,
            w,
            v: act_mask_of(&self.seed, t, k, c * h * w),
        }
    }

    /// Party 0's share of product step `step`'s C, `len` values: its own stream's, as the
    /// engine reads it (called on party 0's operands).
    pub fn product_share(&self, step: usize, len: usize) -> Vec<u64> {
        Prg::new(&self.seed, Stream::MatTriple(step as u32, 0)).vec(len)
    }
}
