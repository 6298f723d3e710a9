//! Bodies of the container kinds, and the typed loaders every command uses.

use crate::ring::Party;
use std::path::Path;
use zeroize::Zeroize;

use serde::{Deserialize, Serialize};

use crate::corr::engine_kind::EngineKind;
use crate::formats::container::{self, FormatError, Header, Kind};
use crate::image::MAX_PIXELS;
use crate::model::geometry::Geometry;
use crate::model::mlp::ModelMeta;
use crate::model::preprocess::Preprocess;
use crate::ring::graph::GraphPlan;
use crate::ring::plan::Plan;
use crate::ring::share::{expand, share_with_seed, Prg, Seed, Stream};

/// A vector share, either explicit or as a PRG seed (the other party's share is then
/// `values - PRG(seed)`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Data {
    Explicit(Vec<u64>),
    Seed(Seed),
}

// Seeds are wiped when a body is dropped (best effort: a `Seed` is an array, so copies made
// on the way are not).
impl Drop for Data {
    fn drop(&mut self) {
        if let Data::Seed(s) = self {
            s.zeroize();
        }
    }
}

/// `impl Drop` wiping the secret fields of each body type: seeds, and the base OTs (both
/// seeds of every pair for S0, Δ for S1).
macro_rules! wipe_on_drop {
    ($($body:ty => $($field:ident)+),* $(,)?) => {$(
        impl Drop for $body {
            fn drop(&mut self) {
                $(self.$field.zeroize();)+
            }
        }
    )*};
}

wipe_on_drop!(
    Triplets => seed base_ot,
    TripletsLead => seed,
    ModelMask => seed,
    DealerMask => seeds,
    OpenedWeights => seed,
);

impl Data {
    pub fn materialise(&self, stream: Stream, n: usize) -> Result<Vec<u64>, String> {
        match self {
            Data::Explicit(v) => check_values(v.len(), n).map(|_| v.clone()),
            Data::Seed(s) => Ok(expand(s, stream, n)),
        }
    }
}

fn check_values(len: usize, n: usize) -> Result<(), String> {
    if len == n {
        Ok(())
    } else {
        Err(format!("share holds {len} values, expected {n}"))
    }
}

/// A party's share of a model: the public plan (weights removed) and the share of the
/// weights and biases, flattened as W1, b1, W2, b2, ...
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelShare {
    pub plan: Plan,
    pub meta: ModelMeta,
    pub data: Data,
}

impl ModelShare {
    /// The model owner's split of `plan` (`share-model`): S0's body holds its share as
    /// explicit values, S1's the seed of its share; both carry the plan without weights.
    pub fn split(plan: &Plan, meta: &ModelMeta, seed: &Seed) -> [ModelShare; 2] {
        let explicit = share_with_seed(&flatten_weights(plan), seed, Stream::ModelShare);
        let mut public = plan.clone();
        for l in public.layers.iter_mut() {
            l.w.clear();
            l.b.clear();
        }
        [Data::Explicit(explicit), Data::Seed(*seed)].map(|data| ModelShare {
            plan: public.clone(),
            meta: meta.clone(),
            data,
        })
    }

    pub fn num_values(plan: &Plan) -> usize {
        plan.layers
            .iter()
            .map(|l| l.inputs * l.outputs + l.outputs)
            .sum()
    }

    /// The plan with this party's bias shares filled in and no weight shares: for a server
    /// whose weights were opened once for the model (`--weights`), whose products take U and
    /// its share of their mask, never its share of W (222 MB for the paper MLP, copied or
    /// expanded at each read of the share for nothing).
    pub fn bias_plan(&self) -> Result<Plan, String> {
        self.filled_plan(false)
    }

    /// The plan with this party's weight shares filled in.
    pub fn share_plan(&self) -> Result<Plan, String> {
        self.filled_plan(true)
    }

    /// The plan with this party's shares of each layer's biases, and of its weights when
    /// `weights`, taken straight from the body (W1, b1, W2, b2, ...): an explicit share
    /// copied once, a seeded one drawn in order (its weights skipped when not wanted).
    fn filled_plan(&self, weights: bool) -> Result<Plan, String> {
        // Every public field checked before the shares are sized from it.
        self.plan.validate_public()?;
        let mut plan = self.plan.clone();
        match &self.data {
            Data::Explicit(v) => {
                check_values(v.len(), Self::num_values(&plan))?;
                let mut off = 0;
                for l in plan.layers.iter_mut() {
                    let nw = l.inputs * l.outputs;
                    if weights {
                        l.w = v[off..off + nw].to_vec();
                    }
                    off += nw;
                    l.b = v[off..off + l.outputs].to_vec();
                    off += l.outputs;
                }
            }
            Data::Seed(s) => {
                let mut prg = Prg::new(s, Stream::ModelShare);
                for l in plan.layers.iter_mut() {
                    let nw = l.inputs * l.outputs;
                    if weights {
                        l.w = prg.vec(nw);
                    } else {
                        prg.skip(nw);
                    }
                    l.b = prg.vec(l.outputs);
                }
            }
        }
        Ok(plan)
    }
}

/// A party's share of a CNN graph's secret values, in `GraphPlan::secret_values` order.
/// The graph itself is public and travels in the header (`GRAPH`, `FIXED_POINT`): every
/// party rebuilds the plan from it ([`crate::formats::checks::graph_plan_from_header`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GraphModelShare {
    pub data: Data,
}

impl GraphModelShare {
    /// The model owner's split of a graph plan's secret values, as [`ModelShare::split`].
    pub fn split(plan: &GraphPlan, seed: &Seed) -> [GraphModelShare; 2] {
        let explicit = share_with_seed(&plan.secret_values(), seed, Stream::ModelShare);
        [Data::Explicit(explicit), Data::Seed(*seed)].map(|data| GraphModelShare { data })
    }

    /// `public` (the plan rebuilt from the header) with this party's shares filled in.
    pub fn share_plan(&self, public: &GraphPlan) -> Result<GraphPlan, String> {
        let values = self
            .data
            .materialise(Stream::ModelShare, public.secret_count())?;
        public.with_secret_values(&values)
    }
}

/// Header `info` value of [`NETWORK`] for CNN graph files (docs/graph.md).
pub const GRAPH: &str = "graph";
/// Header `info` key of a graph's public description (`PublicGraph`, JSON).
pub const GRAPH_DESCRIPTION: &str = "graph_description";
/// Header `info` key of a graph's fixed point, "s,ws,k".
pub const FIXED_POINT: &str = "fixed_point";

pub use super::header::{CNN, NETWORK};

/// Header `info` key of a model's public name (`share-model --name`), copied by the servers
/// into their output shares: what a derived DICOM series' description names.
pub const NAME: &str = "name";

/// Longest model name (a derived series' description has 64 characters in all).
pub const MAX_NAME: usize = 48;

/// Whether `s` may be a model's public name: 1 to [`MAX_NAME`] printable ASCII characters,
/// no backslash (it would split a DICOM text value). The receiver checks it again: a server
/// writes it into the output share's header.
pub fn valid_model_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'\\')
}

/// Header `info` key of an image share made for a model with a noise-map channel, value
/// "shared": the map's values follow the image's in the shared vector. The same whether the
/// map is uniform or per pixel (the servers need not know which).
pub const NOISE_MAP: &str = "noise_map";

/// True when a header belongs to a CNN model or job.
pub fn is_cnn(h: &Header) -> bool {
    h.info(NETWORK) == Some(CNN)
}

/// True when a header belongs to a CNN graph's model or job.
pub fn is_graph(h: &Header) -> bool {
    h.info(NETWORK) == Some(GRAPH)
}

/// True for the networks that run on the whole image (a CNN or a CNN graph), whose output
/// is the image itself, not patches.
pub fn is_whole_image(h: &Header) -> bool {
    is_cnn(h) || is_graph(h)
}

/// Flattens a plan's weights in the order [`ModelShare`] uses.
pub fn flatten_weights(plan: &Plan) -> Vec<u64> {
    let mut v = Vec::with_capacity(ModelShare::num_values(plan));
    for l in &plan.layers {
        v.extend_from_slice(&l.w);
        v.extend_from_slice(&l.b);
    }
    v
}

/// Public job parameters chosen by the gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    pub height: usize,
    pub width: usize,
    pub bit_depth: u8,
    pub stride: usize,
    pub scale: u32,
    pub pre: Preprocess,
    pub sigma: f64,
    pub model_sigma: f64,
    /// The noise level and scaling were derived from the image's pixels (`--sigma auto`, or
    /// a level in the image's units on a window derived from its values): then `sigma` is
    /// the model's nominal one and `pre` the identity, stand-ins, and the receiver decodes
    /// with the scaling the gateway gave it privately (the study's sources file, or
    /// share-image's `<out>.rx.json`). Nothing derived from pixels is public.
    #[serde(default)]
    pub private_pre: bool,
    /// Colour planes of the image (1 gray, 3 RGB; issue 48): the shares hold its planes one
    /// after another, each `height` x `width`. Public, like the image's size: the servers
    /// run the model of as many planes, and the receiver writes the image back in colour.
    /// (Format version 9: the bodies holding a job carry it; a header's JSON without it is
    /// gray.)
    #[serde(default = "one_colour")]
    pub colours: usize,
}

fn one_colour() -> usize {
    1
}

/// Checks a job's geometry with the model's patch shape before anything is sized from it:
/// the stride leaves no output pixel uncovered, and the padded image (what the servers and
/// the dealer hold several copies of) stays below 2^30 values.
pub fn check_geometry(job: &JobParams, patch: crate::model::mlp::PatchShape) -> Result<(), String> {
    if patch.output == 0 || patch.output > patch.input || patch.input > 1024 {
        return Err(format!(
            "patch of {}x{} in, {}x{} out",
            patch.input, patch.input, patch.output, patch.output
        ));
    }
    if job.stride > patch.output {
        return Err(format!(
            "stride {} exceeds the {}x{} output patch: some pixels would get no estimate",
            job.stride, patch.output, patch.output
        ));
    }
    let side = |n: usize| n.checked_add(patch.output + job.stride + patch.input);
    let padded = side(job.height)
        .zip(side(job.width))
        .and_then(|(h, w)| h.checked_mul(w));
    if padded.is_none_or(|n| n > 1 << 30) {
        return Err(format!(
            "a {} x {} image padded for {}x{} patches exceeds 2^30 values",
            job.height, job.width, patch.input, patch.input
        ));
    }
    Ok(())
}

impl JobParams {
    /// Checks parameters read from a file before anything is sized from them.
    pub fn validate(&self) -> Result<(), String> {
        let (h, w) = (self.height, self.width);
        if h == 0 || w == 0 || h.checked_mul(w).is_none_or(|n| n > MAX_PIXELS) {
            return Err(format!(
                "image of {h} x {w} pixels (1 to {MAX_PIXELS} pixels supported)"
            ));
        }
        if self.stride == 0 || self.stride > 4096 {
            return Err(format!("stride {} (1 to 4096 supported)", self.stride));
        }
        if self.bit_depth != 8 && self.bit_depth != 16 {
            return Err(format!("bit depth {} (8 or 16 supported)", self.bit_depth));
        }
        if !matches!(self.colours, 1 | 3) {
            return Err(format!(
                "{} colour planes (1 gray or 3 RGB supported)",
                self.colours
            ));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.sigma) || !positive(self.model_sigma) || !positive(self.pre.noise_scale) {
            return Err("noise levels must be finite and positive".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageShare {
    pub job: JobParams,
    /// Share of the normalised, encoded (unpadded) image, row-major; for a CNN with a
    /// noise-map channel, followed by the share of the map's values.
    pub data: Data,
}

/// The fields of [`Triplets`] before `corrections`, in the same order. Bincode is positional,
/// so these encode to exactly the first bytes of a `Triplets` body: the dealer writes party
/// 1's file from it piecewise and `serve` reads it back piecewise
/// ([`super::triplet_stream`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TripletsLead {
    pub job: JobParams,
    pub widths: Vec<usize>,
    pub batch: usize,
    pub seed: Seed,
    pub engine: EngineKind,
}

/// Dealer output for one party and one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Triplets {
    pub job: JobParams,
    pub widths: Vec<usize>,
    /// Patches per batch.
    pub batch: usize,
    /// This party's randomness seed (masks and its own triple shares).
    pub seed: Seed,
    /// The nonlinearity engine these correlations are for.
    pub engine: EngineKind,
    /// Party 1 only: explicit triple shares, in consumption order, each at the width its
    /// reader needs (docs/formats.md).
    pub corrections: crate::corr::pack::Packed,
    /// Base OTs for the IKNP extension (role-specific, serialised by `twopc::ot`).
    pub base_ot: Vec<u8>,
}

/// A server's share of a model's weight mask A (dealer output, once per model): the seed of
/// its share of every layer's A. Header: the model id and the mask id ("model_mask").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelMask {
    pub seed: Seed,
}

/// The dealer's record of a model's weight mask: both servers' seeds, from which it makes
/// every later job's matrix triples C = A B. Secret: kept by the dealer, never sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DealerMask {
    pub seeds: [Seed; 2],
}

/// A server's opened weights (`open-weights`, once per model): U = W - A of every layer,
/// flattened W1, W2, ... (biases stay shared), and the seed of its own share of A.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenedWeights {
    pub seed: Seed,
    pub u: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutputShare {
    pub geometry: Geometry,
    pub job: JobParams,
    /// Fixed-point scale of the canvas values (the plan's `out_scale`).
    pub scale: u32,
    /// Share of the canvas sums, canvas-sized, row-major.
    pub canvas: Vec<u64>,
}

/// Reads a container of `kind` (and `party`, when given) with its typed body.
pub fn load<B: serde::de::DeserializeOwned>(
    path: &Path,
    kind: Kind,
    party: Option<Party>,
) -> Result<(Header, B), FormatError> {
    // One open: kind and party are checked on its header before the body is read, and the
    // body, checksum and signature come from the same handle.
    container::Opened::open(path)?.read(kind, party)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::ManuallyDrop;

    /// A server with opened weights takes only its bias shares: the ones `share_plan` gives,
    /// from either party's body, with no weight share; a body of the wrong length is refused.
    #[test]
    fn a_bias_plan_holds_the_share_plans_biases_and_no_weights() {
        use crate::model::mlp::{random_model, Activation};
        use crate::ring::plan::FixedParams;
        let meta = ModelMeta {
            sigma: 25.0,
            mean_shift: true,
            residual: false,
            activation: Activation::TanhStar,
            aggregation_sigma: 0.0,
        };
        let model = random_model(&[9, 7, 5, 1], 3, meta.clone());
        let plan = Plan::from_model(&model, FixedParams::default()).unwrap();
        for share in ModelShare::split(&plan, &meta, &[4; 32]) {
            let full = share.share_plan().unwrap();
            let biases = share.bias_plan().unwrap();
            for (f, b) in full.layers.iter().zip(&biases.layers) {
                assert_eq!(f.b, b.b);
                assert_eq!(f.b.len(), f.outputs);
                assert!(b.w.is_empty());
                assert_eq!(f.w.len(), f.inputs * f.outputs);
            }
        }
        let [mut short, _] = ModelShare::split(&plan, &meta, &[4; 32]);
        if let Data::Explicit(v) = &mut short.data {
            v.pop();
        }
        let e = short.bias_plan().unwrap_err();
        assert!(e.contains("share holds"), "{e}");
    }

    /// Dropping a body wipes its seeds. The fields read after the drop are plain bytes in
    /// place (the memory is still ours), not freed heap memory.
    #[test]
    fn seeds_are_wiped_on_drop() {
        let mut d = ManuallyDrop::new(Data::Seed([7; 32]));
        unsafe { ManuallyDrop::drop(&mut d) };
        assert!(matches!(&*d, Data::Seed(s) if *s == [0; 32]));
        let mut m = ManuallyDrop::new(ModelMask { seed: [9; 32] });
        unsafe { ManuallyDrop::drop(&mut m) };
        assert_eq!(m.seed, [0; 32]);
        let mut dm = ManuallyDrop::new(DealerMask {
            seeds: [[1; 32], [2; 32]],
        });
        unsafe { ManuallyDrop::drop(&mut dm) };
        assert_eq!(dm.seeds, [[0; 32]; 2]);
        // A triplet body's base OTs too (zeroize empties the Vec after wiping its bytes).
        let mut t = ManuallyDrop::new(Triplets {
            job: JobParams {
                height: 1,
                width: 1,
                bit_depth: 8,
                stride: 1,
                scale: 8,
                pre: crate::model::preprocess::Preprocess::new(25.0, 25.0, true),
                sigma: 25.0,
                model_sigma: 25.0,
                private_pre: false,
                colours: 1,
            },
            widths: vec![1, 1],
            batch: 1,
            seed: [3; 32],
            engine: Default::default(),
            corrections: Default::default(),
            base_ot: vec![5; 64],
        });
        unsafe { ManuallyDrop::drop(&mut t) };
        assert_eq!(t.seed, [0; 32]);
        assert!(t.base_ot.is_empty());
    }
}
