//! The trusted dealer: correlated randomness for one job, made offline from public facts only
//! (model shape, image size, stride, batch size). It never sees an image or a weight.

pub mod boolean;
pub mod graph;

use crate::circuit::activation::ActCircuit;
use crate::corr::batches::batches;
use crate::corr::engine_kind::EngineKind;
use crate::corr::operands::MlpOperands;
use crate::corr::pack::Tally;
use crate::corr::randomness::elem_masks;
use crate::corr::slot::Slot;
use crate::formats::bodies::{JobParams, Triplets};
use crate::model::geometry::Geometry;
use crate::ring::matmul::gemm;
use crate::ring::plan::{mlp_product_bits, MLP_OPEN_BITS};
use crate::ring::share::{add, fresh_seed, Seed};
use boolean::BooleanDeal;

/// What the dealer must know of a job's nonlinear steps: the engine, each hidden layer's
/// circuit (tanh*'s selection is followed by the polynomial, which needs elementwise
/// triples; ReLU's outputs are the activations) and, for the boolean engine, the circuits'
/// netlists (recorded once).
#[derive(Clone, Debug)]
pub struct NonlinearDeal {
    pub engine: EngineKind,
    /// Per hidden layer: its circuit, whose input width (n = sh + k) is the width of the
    /// layer's matrix triple's explicit C ([`mlp_product_bits`]) and whose kind says whether
    /// the tanh* polynomial follows it.
    circuits: Vec<ActCircuit>,
    pub boolean: Option<BooleanDeal>,
}

impl NonlinearDeal {
    /// `circuits`: one per hidden layer ([`crate::ring::plan::Plan::circuits`]).
    pub fn new(engine: EngineKind, circuits: &[ActCircuit]) -> NonlinearDeal {
        NonlinearDeal {
            engine,
            circuits: circuits.to_vec(),
            boolean: (engine == EngineKind::Gmw).then(|| BooleanDeal::new(circuits)),
        }
    }

    /// Whether hidden layer `l` needs the polynomial's three elementwise correlations.
    fn poly(&self, l: usize) -> bool {
        matches!(self.circuits[l], ActCircuit::TanhSelect(_))
    }

    /// Bits of layer `l`'s product that its readers read, of `layers`: a hidden layer's
    /// only by its circuit, mod 2^n; the output layer's whole. An MLP opens every activation
    /// at 64 bits, so the circuits' outputs (daBits, edaBits) and the polynomial's triples
    /// stay at 64.
    pub fn product_bits(&self, l: usize, layers: usize) -> u32 {
        debug_assert_eq!(
            self.circuits.len() + 1,
            layers,
            "one circuit per hidden layer"
        );
        mlp_product_bits(&self.circuits, l)
    }
}

/// The seeds a job's randomness comes from: the servers' job seeds, and the servers' model
/// mask seeds when the weights were opened once for the model (the weight mask A is then the
/// model's, not the job's: see [`crate::twopc::weights`]).
#[derive(Clone, Copy, Debug)]
pub struct DealSeeds {
    pub job: [Seed; 2],
    pub model_mask: Option<[Seed; 2]>,
}

impl DealSeeds {
    /// Fresh job seeds from the operating system, with the model's mask seeds if any.
    pub fn fresh(model_mask: Option<[Seed; 2]>) -> DealSeeds {
        DealSeeds {
            job: [fresh_seed(), fresh_seed()],
            model_mask,
        }
    }
}

/// Checks that a job's layers and batches fit the randomness stream ids (layer index below
/// 2^16, batch index below 2^32), so no two (purpose, layer, batch) streams can alias, and
/// that a batch's largest message (the widest layer's values per patch) stays below 2^28
/// values. `widths`: the model's layer widths, input first.
pub fn check_stream_bounds(
    widths: &[usize],
    num_patches: usize,
    batch: usize,
) -> Result<(), String> {
    let layers = widths.len().saturating_sub(1);
    let widest = widths.iter().copied().max().unwrap_or(0);
    if layers == 0 || layers - 1 > crate::ring::share::MAX_STREAM_LAYER as usize {
        return Err(format!(
            "{layers} layers: 1 to {} are supported",
            crate::ring::share::MAX_STREAM_LAYER as usize + 1
        ));
    }
    if batch == 0 {
        return Err("a batch of 0 patches".into());
    }
    if batch.min(num_patches).saturating_mul(widest) > 1 << 28 {
        return Err(format!(
            "batches of {batch} patches of up to {widest} values exceed 2^28 values per message"
        ));
    }
    if num_patches.div_ceil(batch) > u32::MAX as usize {
        return Err(format!(
            "{num_patches} patches in batches of {batch}: fewer than 2^32 batches are supported"
        ));
    }
    Ok(())
}

/// Makes both parties' correlated randomness for a job, in memory (tests; small jobs).
pub fn generate(
    job: &JobParams,
    widths: &[usize],
    patch: crate::model::mlp::PatchShape,
    batch: usize,
    nl: &NonlinearDeal,
) -> (Triplets, Triplets) {
    generate_for_mask(job, widths, patch, batch, nl, None)
}

/// [`generate`] for a model whose weights were opened once with the mask of `model_mask`
/// (the servers' mask seeds).
pub fn generate_for_mask(
    job: &JobParams,
    widths: &[usize],
    patch: crate::model::mlp::PatchShape,
    batch: usize,
    nl: &NonlinearDeal,
    model_mask: Option<[Seed; 2]>,
) -> (Triplets, Triplets) {
    let seeds = DealSeeds::fresh(model_mask);
    generate_with(
        job,
        widths,
        patch,
        batch,
        nl,
        &seeds,
        nl.engine.deal_setup(),
    )
}

/// [`generate_for_mask`] with the job seeds and the engine's setup given (tests that must be
/// reproducible; the dealer itself always draws them fresh).
#[doc(hidden)]
pub fn generate_with(
    job: &JobParams,
    widths: &[usize],
    patch: crate::model::mlp::PatchShape,
    batch: usize,
    nl: &NonlinearDeal,
    seeds: &DealSeeds,
    base_ot: (Vec<u8>, Vec<u8>),
) -> (Triplets, Triplets) {
    let all = Geometry::new(job.height, job.width, patch, job.stride).num_patches();
    let mut corr = crate::corr::pack::Packed::default();
    generate_into(
        job,
        widths,
        patch,
        0..all,
        batch,
        seeds,
        nl,
        &mut |v: &[u64], bits| {
            corr.push(v, bits);
            Ok::<(), std::convert::Infallible>(())
        },
    )
    .unwrap_or_else(|e| match e {});
    let mk = |seed: Seed, corrections, base_ot: Vec<u8>| Triplets {
        job: job.clone(),
        widths: widths.to_vec(),
        batch,
        seed,
        engine: nl.engine,
        corrections,
        base_ot,
    };
    (
        mk(seeds.job[0], Default::default(), base_ot.0),
        mk(seeds.job[1], corr, base_ot.1),
    )
}

/// Explicit values (party 1's triple shares) a job needs, and their bits: per batch of n
/// patches and layer, the matrix triple's dout x n (at [`NonlinearDeal::product_bits`]),
/// plus for a tanh* hidden layer three elementwise correlations of dout x n each, plus the
/// boolean engine's AND triple and daBit shares.
pub fn correction_count(
    widths: &[usize],
    num_patches: usize,
    batch: usize,
    nl: &NonlinearDeal,
) -> Tally {
    let layers = widths.len() - 1;
    let per_patch: Tally = (0..layers)
        .map(|l| {
            let poly = if l + 1 < layers && nl.poly(l) { 3 } else { 0 };
            Tally::of(widths[l + 1], nl.product_bits(l, layers))
                + Tally::of(widths[l + 1] * poly, MLP_OPEN_BITS)
        })
        .sum();
    let boolean: Tally = match &nl.boolean {
        Some(bd) => batches(num_patches, batch)
            .map(|(_, _, n)| bd.explicit_values(widths, n))
            .sum(),
        None => Tally::default(),
    };
    Tally {
        values: per_patch.values * num_patches,
        bits: per_patch.bits * num_patches as u64,
    } + boolean
}

/// Computes party 1's triple shares for the parties' `seeds`, handing them to `emit` in
/// consumption order (batch -> layer -> matrix triple, then elementwise triples), one piece
/// at a time: the dealer can write them to disk without holding them all. `patches`: the
/// run of the patch grid the job (or tile) computes.
#[allow(clippy::too_many_arguments)]
pub fn generate_into<E>(
    job: &JobParams,
    widths: &[usize],
    patch: crate::model::mlp::PatchShape,
    patches: std::ops::Range<usize>,
    batch: usize,
    deal_seeds: &DealSeeds,
    nonlinear: &NonlinearDeal,
    emit: &mut crate::corr::pack::Emit<'_, E>,
) -> Result<(), E> {
    let geo = Geometry::new(job.height, job.width, patch, job.stride);
    let seeds = &deal_seeds.job;
    let nl = widths.len() - 1;
    // The weight mask A: the model's when its weights were opened once, else this job's.
    let mask_seeds = deal_seeds.model_mask.unwrap_or(*seeds);
    let ops = [0, 1].map(|i| MlpOperands::new(&geo, widths, &seeds[i], &mask_seeds[i]));
    let a: Vec<Vec<u64>> = (0..nl)
        .map(|l| add(&ops[0].weight_mask(l), &ops[1].weight_mask(l)))
        .collect();
    for (b, start, n) in batches(patches.len(), batch) {
        let start = patches.start + start;
        for l in 0..nl {
            let (din, dout) = (widths[l], widths[l + 1]);
            let bm = add(
                &ops[0].input_mask(l, b, start, n),
                &ops[1].input_mask(l, b, start, n),
            );
            let c = gemm(&a[l], &bm, dout, din, n);
            let c0 = ops[0].product_share(l, b, dout * n);
            emit(
                &c.iter()
                    .zip(&c0)
                    .map(|(x, y)| x.wrapping_sub(*y))
                    .collect::<Vec<u64>>(),
                nonlinear.product_bits(l, nl),
            )?;
            let e = dout * n;
            if l + 1 < nl && nonlinear.poly(l) {
                let (sa0, a0, b0, mut prg0) = elem_masks(&seeds[0], l as u32, b, e);
                let (sa1, a1, b1, _) = elem_masks(&seeds[1], l as u32, b, e);
                let sq_c0 = prg0.vec(e);
                let c0 = [prg0.vec(e), prg0.vec(e)];
                emit(
                    &(0..e)
                        .map(|i| {
                            let sa = sa0[i].wrapping_add(sa1[i]);
                            sa.wrapping_mul(sa).wrapping_sub(sq_c0[i])
                        })
                        .collect::<Vec<u64>>(),
                    MLP_OPEN_BITS,
                )?;
                for k in 0..2 {
                    emit(
                        &(0..e)
                            .map(|i| {
                                let x = a0[k][i].wrapping_add(a1[k][i]);
                                let y = b0[k][i].wrapping_add(b1[k][i]);
                                x.wrapping_mul(y).wrapping_sub(c0[k][i])
                            })
                            .collect::<Vec<u64>>(),
                        MLP_OPEN_BITS,
                    )?;
                }
            }
            if l + 1 < nl {
                if let Some(bd) = &nonlinear.boolean {
                    let at = Slot {
                        layer: l as u32,
                        batch: b,
                    };
                    // The circuit's outputs are activations, opened whole.
                    bd.explicit(seeds, at, l, e, MLP_OPEN_BITS, emit)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_stream_bounds;

    #[test]
    fn stream_bounds_refuse_what_stream_ids_cannot_hold() {
        assert!(check_stream_bounds(&[100, 10, 10, 10], 1000, 10).is_ok());
        assert!(check_stream_bounds(&[1; (1 << 16) + 1], 1, 1).is_ok());
        let e = check_stream_bounds(&[1; (1 << 16) + 2], 1, 1).unwrap_err();
        assert!(e.contains("65537 layers"), "{e}");
        assert!(check_stream_bounds(&[1, 1, 1], u32::MAX as usize, 1).is_ok());
        let e = check_stream_bounds(&[1, 1, 1], u32::MAX as usize + 1, 1).unwrap_err();
        assert!(e.contains("fewer than 2^32 batches"), "{e}");
        assert!(check_stream_bounds(&[1, 1, 1], 10, 0).is_err());
        assert!(check_stream_bounds(&[1], 10, 1).is_err());
        // A batch beyond the job is one batch of the job's patches; a huge one is refused.
        assert!(check_stream_bounds(&[1521, 9, 9, 1], 784, usize::MAX).is_ok());
        let e = check_stream_bounds(&[1521, 9, 9, 1], 1 << 20, usize::MAX).unwrap_err();
        assert!(e.contains("2^28 values per message"), "{e}");
    }
}
