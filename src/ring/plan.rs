//! The fixed-point plan: exactly which integers the secure protocol computes, derived once
//! from a float model. The plaintext oracle and both servers follow the same plan, so the
//! secure result can be compared with the oracle bit for bit.
//!
//! Scales: input pixels at `s`; weights at `s`; layer-1 products at `2s`. A hidden layer's
//! circuit keeps `q` fractional bits of its pre-activation (exact floor, shift `sh`), the
//! polynomial pieces are evaluated at scale `F = 2q + cs`, so hidden activations leave at
//! scale `F` and later products are at `s + F`. The output layer is truncated to scale `s`.
//! A ReLU MLP's hidden layers instead truncate their pre-activation (scale `2s`) exactly to
//! scale `s` inside the ReLU circuit, so every product is at `2s`.

use serde::{Deserialize, Serialize};

use crate::circuit::activation::{ActCircuit, ActConsts, TruncParams};
use crate::model::mlp::{Activation, Model, PatchShape};
use crate::model::tanhstar::TanhStar;
use crate::ring::fixed::encode;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixedParams {
    /// Fractional bits of inputs and weights (paper: 18; default 16).
    pub s: u32,
    /// Fractional bits kept of a pre-activation inside the activation circuit.
    pub q: u32,
    /// Fractional bits of the tanh* coefficients.
    pub cs: u32,
    /// Integer bits of a pre-activation: |z| < 2^zbits.
    pub zbits: u32,
    /// Integer bits of an output value (normalised pixel domain): |o| < 2^out_bits.
    pub out_bits: u32,
    pub tanh: TanhStar,
}

impl Default for FixedParams {
    fn default() -> Self {
        FixedParams {
            // The paper used 18. Every fractional bit of a product costs one AND gate and one
            // OT per element in the activation circuit. Shipped model vs float, mean/max
            // error in grey levels: s 12: 0.095/0.98, 14: 0.038/0.50, 16: 0.028/0.23,
            // 17: 0.026/0.19; 16 keeps the error at the level of 18 for 4 of 102 bits.
            s: 16,
            q: 10,
            cs: 10,
            zbits: 8,
            out_bits: 3,
            tanh: TanhStar::PAPER,
        }
    }
}

impl FixedParams {
    /// Scale of hidden activations.
    pub fn act_scale(&self) -> u32 {
        2 * self.q + self.cs
    }

    /// The ReLU circuit of a ReLU MLP's hidden layers: the pre-activation at scale 2s, exactly
    /// truncated to scale s, signed with `zbits` integer bits.
    pub fn relu_trunc(&self) -> TruncParams {
        TruncParams {
            sh: self.s,
            k: self.zbits + self.s + 1,
        }
    }

    /// [`FixedParams::validate`] for the hidden activation: a ReLU layer's products (scale 2s,
    /// zbits integer bits, a sign) must fit the ring too.
    pub fn validate_for(&self, hidden: Hidden) -> Result<(), String> {
        self.validate()?;
        if hidden == Hidden::Relu && 2 * self.s + self.zbits + 1 > 64 {
            return Err(format!(
                "fixed-point parameters overflow the 64-bit ring: 2s + zbits + 1 = {} > 64",
                2 * self.s + self.zbits + 1
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        self.tanh.validate()?;
        // Each field bounded first, so the sums below cannot wrap (they may come from a file).
        if !(4..=24).contains(&self.s) || !(4..=20).contains(&self.q) || self.cs > 24 {
            return Err("fixed-point scales out of range (s 4..24, q 4..20, cs <= 24)".into());
        }
        if self.zbits > 40 || self.out_bits > 32 {
            return Err(format!(
                "integer bits out of range (zbits {} <= 40, out_bits {} <= 32)",
                self.zbits, self.out_bits
            ));
        }
        let f = self.act_scale();
        if self.s + f + self.zbits + 1 > 64 || self.q + self.zbits + 1 > 40 {
            return Err(format!(
                "fixed-point parameters overflow the 64-bit ring: s + 2q + cs + zbits + 1 = {} > 64",
                self.s + f + self.zbits + 1
            ));
        }
        if self.q > self.s + self.s.min(f) {
            return Err("q must not exceed the product scale".into());
        }
        if self.tanh.b >= (self.zbits as f64).exp2() {
            return Err("tanh* breakpoint b does not fit in zbits integer bits".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// Row-major outputs x inputs, at scale s.
    pub w: Vec<u64>,
    /// At the product scale.
    pub b: Vec<u64>,
    pub prod_scale: u32,
}

/// Most layers a plan may have (stream ids hold the layer in 16 bits).
pub const MAX_LAYERS: usize = crate::ring::share::MAX_STREAM_LAYER as usize + 1;
/// Most weights and biases a model may have: 2^27 values, 1 GiB per share (the paper-size
/// network has 27.8 M); the weights' opening is one frame, within the link's frame limit.
pub const MAX_MODEL_VALUES: usize = 1 << 27;
const _: () = assert!(8 * MAX_MODEL_VALUES as u64 <= crate::net::link::DEFAULT_MAX_FRAME);

/// Weights and biases of a model with these layer widths (input first), refused beyond
/// [`MAX_MODEL_VALUES`] with checked arithmetic (the widths may come from a file).
pub fn count_model_values(widths: &[u64]) -> Result<u64, String> {
    widths.windows(2).try_fold(0u64, |total, w| {
        w[0].checked_mul(w[1])
            .and_then(|n| n.checked_add(w[1]))
            .and_then(|n| n.checked_add(total))
            .filter(|&n| n <= MAX_MODEL_VALUES as u64)
            .ok_or_else(|| format!("more than {MAX_MODEL_VALUES} weights and biases"))
    })
}

/// What a plan's hidden layers compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hidden {
    /// The paper's tanh*: the selection circuit, then the polynomial on arithmetic shares.
    TanhStar,
    /// max(0, x): the ReLU circuit with the exact truncation to scale s (its outputs are the
    /// activations; no polynomial, no elementwise triples).
    Relu,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub params: FixedParams,
    pub patch: PatchShape,
    pub layers: Vec<PlanLayer>,
    pub hidden: Hidden,
    /// tanh* constants, one per hidden layer (identical except `sh`); none for ReLU.
    pub acts: Vec<ActConsts>,
    /// Scale of the output layer's values. They are not truncated: the servers add them into
    /// the canvas at this scale (overlap sums still fit the ring) and the receiver divides.
    pub out_scale: u32,
    /// The input centre is added to the output (residual), shifted to the product scale.
    pub residual: bool,
}

/// Bits an MLP opens its activations at: all of them. Its circuits' outputs (daBits, edaBits)
/// and the polynomial's elementwise triples are therefore made at this width by the dealer
/// and read at it by the servers (docs/protocol.md, "Ring width").
pub const MLP_OPEN_BITS: u32 = 64;

/// Bits of an MLP layer `l`'s product that its readers read, given the hidden layers'
/// `circuits` ([`Plan::circuits`]): a hidden layer's only its circuit, mod 2^n; the output
/// layer's whole. The dealer makes party 1's matrix triple at it, the server reads it so.
pub fn mlp_product_bits(circuits: &[ActCircuit], l: usize) -> u32 {
    circuits
        .get(l)
        .map_or(MLP_OPEN_BITS, |c| (c.n() as u32).min(MLP_OPEN_BITS))
}

impl Plan {
    /// Scale of the activations a hidden layer passes on.
    pub fn act_scale(&self) -> u32 {
        match self.hidden {
            Hidden::TanhStar => self.params.act_scale(),
            Hidden::Relu => self.params.s,
        }
    }

    /// The boolean circuit of each hidden layer, as the engines run it and the dealer deals
    /// for it.
    pub fn circuits(&self) -> Vec<ActCircuit> {
        let hidden = self.layers.len().saturating_sub(1);
        match self.hidden {
            Hidden::TanhStar => self.acts.iter().map(ActCircuit::tanh_star).collect(),
            Hidden::Relu => vec![ActCircuit::Relu(self.params.relu_trunc()); hidden],
        }
    }

    /// Whether every layer holds a share of its whole weight matrix (a plan read for opened
    /// weights holds its biases alone: `ModelShare::bias_plan`).
    pub fn holds_weight_shares(&self) -> bool {
        self.layers
            .iter()
            .all(|ly| ly.w.len() == ly.inputs * ly.outputs)
    }

    pub fn widths(&self) -> Vec<usize> {
        let mut v = vec![self.layers[0].inputs];
        v.extend(self.layers.iter().map(|l| l.outputs));
        v
    }

    /// Builds the plan: folds the mean shift into layer 1 (W1 (I - 11^T/n)) and encodes.
    pub fn from_model(model: &Model, params: FixedParams) -> Result<Plan, String> {
        let hidden = match model.meta.activation {
            Activation::Tanh | Activation::TanhStar => Hidden::TanhStar,
            Activation::Relu => Hidden::Relu,
        };
        params.validate_for(hidden)?;
        let s = params.s;
        let f = match hidden {
            Hidden::TanhStar => params.act_scale(),
            Hidden::Relu => s,
        };
        let nl = model.layers.len();
        let mut layers = Vec::with_capacity(nl);
        let mut acts = Vec::new();
        for (i, l) in model.layers.iter().enumerate() {
            let (o, n) = l.w.dim();
            let mut w = l.w.clone();
            if i == 0 && model.meta.mean_shift {
                for mut row in w.rows_mut() {
                    let mean = row.sum() / n as f64;
                    row.mapv_inplace(|v| v - mean);
                }
            }
            let in_scale = if i == 0 { s } else { f };
            let prod_scale = s + in_scale;
            layers.push(PlanLayer {
                inputs: n,
                outputs: o,
                w: w.iter().map(|&v| encode(v, s)).collect(),
                b: l.b.iter().map(|&v| encode(v, prod_scale)).collect(),
                prod_scale,
            });
            if i + 1 < nl && hidden == Hidden::TanhStar {
                acts.push(act_consts(&params, prod_scale));
            }
        }
        let out_scale = layers[nl - 1].prod_scale;
        let plan = Plan {
            params,
            patch: model.patch_shape(),
            layers,
            hidden,
            acts,
            out_scale,
            residual: model.meta.residual,
        };
        plan.check_output_headroom()?;
        Ok(plan)
    }

    /// Checks a plan read from a model share (weights removed) before anything is sized from
    /// it: every public field must be what [`Plan::from_model`] derives from the parameters,
    /// the layer widths and the flags, and the sizes must be sane. A crafted share (its
    /// checksum is not a signature) is refused here instead of panicking or allocating without
    /// bound later.
    pub fn validate_public(&self) -> Result<(), String> {
        self.params.validate_for(self.hidden)?;
        let nl = self.layers.len();
        if nl == 0 || nl > MAX_LAYERS {
            return Err(format!("{nl} layers (1 to {MAX_LAYERS} supported)"));
        }
        let (s, f) = (self.params.s, self.act_scale());
        for (i, l) in self.layers.iter().enumerate() {
            if l.inputs == 0 || l.outputs == 0 {
                return Err(format!(
                    "layer {i} has an empty side ({} x {})",
                    l.outputs, l.inputs
                ));
            }
            if i > 0 && self.layers[i - 1].outputs != l.inputs {
                return Err(format!(
                    "layer {i} takes {} inputs but layer {} gives {}",
                    l.inputs,
                    i - 1,
                    self.layers[i - 1].outputs
                ));
            }
            if !l.w.is_empty() || !l.b.is_empty() {
                return Err(format!("layer {i} carries weights in its public plan"));
            }
            let want = s + if i == 0 { s } else { f };
            if l.prod_scale != want {
                return Err(format!(
                    "layer {i} has product scale {} (expected {want})",
                    l.prod_scale
                ));
            }
        }
        let widths: Vec<u64> = self.widths().iter().map(|&w| w as u64).collect();
        count_model_values(&widths)?;
        let p = self.patch;
        if p.output == 0
            || p.output > p.input
            || !(p.input - p.output).is_multiple_of(2)
            || p.input.checked_mul(p.input) != Some(self.layers[0].inputs)
            || p.output.checked_mul(p.output) != Some(self.layers[nl - 1].outputs)
        {
            return Err(format!(
                "patch shape {}x{} in, {}x{} out does not match the layer widths {:?}",
                p.input,
                p.input,
                p.output,
                p.output,
                self.widths()
            ));
        }
        let want_acts = match self.hidden {
            Hidden::TanhStar => nl - 1,
            Hidden::Relu => 0,
        };
        if self.acts.len() != want_acts {
            return Err(format!(
                "{} tanh* constants for {} hidden layers of {:?}",
                self.acts.len(),
                nl - 1,
                self.hidden
            ));
        }
        for (i, c) in self.acts.iter().enumerate() {
            if *c != act_consts(&self.params, self.layers[i].prod_scale) {
                return Err(format!(
                    "hidden layer {i}: activation constants differ from those of the fixed-point parameters"
                ));
            }
        }
        if self.out_scale != self.layers[nl - 1].prod_scale {
            return Err(format!(
                "output scale {} differs from the last layer's product scale {}",
                self.out_scale,
                self.layers[nl - 1].prod_scale
            ));
        }
        self.check_output_headroom()
    }

    /// A canvas pixel sums at most one output per window position (stride 1), each with
    /// |o| < 2^out_bits times its aggregation weight: the total must stay below 2^63.
    /// Also checked on plans read from model shares, so a hand-edited window cannot make
    /// the sums wrap silently.
    pub fn check_output_headroom(&self) -> Result<(), String> {
        let weight_total: u64 = self.patch.window_weights().iter().sum();
        let weight_bits = 64 - (weight_total.max(1) - 1).leading_zeros();
        if self.out_scale + self.params.out_bits + weight_bits + 1 > 64 {
            return Err(format!(
                "output scale {} leaves no room for canvas sums in the 64-bit ring \
                 (aggregation weights sum to {weight_total}, {weight_bits} bits)",
                self.out_scale
            ));
        }
        Ok(())
    }
}

fn act_consts(p: &FixedParams, prod_scale: u32) -> ActConsts {
    let (q, cs) = (p.q, p.cs);
    let t = &p.tanh;
    ActConsts {
        sh: prod_scale - q,
        k: p.zbits + q + 1,
        a_fix: encode(t.a, q),
        b_fix: encode(t.b, q),
        n: [encode(t.n1, cs), encode(t.n2, cs)],
        c: [encode(t.c1, q + cs), encode(t.c2, q + cs)],
        d: [encode(t.d1, 2 * q + cs), encode(t.d2, 2 * q + cs)],
        sat: 1u64 << (2 * q + cs),
    }
}
