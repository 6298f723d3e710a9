//! What the secure run of a graph plan consumes, step by step, from public facts only (the
//! plan without its weights and the image size): every tensor's size, which values are
//! secret weights, and per step its Beaver products and circuit runs in order. The dealer
//! (`dealer::graph`) makes the randomness by walking this list; the servers (`twopc::graph`)
//! record what each step consumed, derived from the step itself, and refuse to go on when
//! it differs from this list: a drift between the two is an error, not a wrong image.

use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::inference::graph::{conv_dims, window_at, window_dims, Map};
use crate::ring::graph::{GraphPlan, Kind};
use crate::ring::share::MAX_STREAM_LAYER;

/// A tensor's size: channels, height, width.
pub type Dims = [usize; 3];

/// One use of the dealer's randomness by a step, in the order the step makes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Use {
    /// A Beaver product of secret weights with a secret map: `len` output values of
    /// C = A (x) B (a matrix triple, stream `MatTriple(step, 0)`).
    Product { len: usize },
    /// A circuit over `elements` values, run in batches of the dealer's batch size.
    Circuit { circ: ActCircuit, elements: usize },
    /// A ReLU result held mod 2^k extended by its shares' top bits as its masked map is
    /// opened: `len` shares of ρ_0 ρ_1 at `bits` (stream `MapExtend(tensor)`).
    Extend { len: usize, bits: u32 },
}

/// Which ReLU results an engine that fuses the extension (the boolean one:
/// `Nonlinear::fuses_relu_extension`, docs/protocol.md "The ReLU by selection") leaves mod
/// 2^k, to be extended by their shares' top bits when they are opened: the CNN chain's
/// saving, for every graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fused {
    /// Per step: the bits its opening adds above k when its ReLU result is extended.
    pub extended: Vec<Option<u32>>,
    /// Per step: the first product step that reads it (where its masked map is opened).
    pub opener: Vec<usize>,
}

impl Fused {
    /// Step `i`'s ReLU result is left mod 2^k.
    pub fn left_at_k(&self, i: usize) -> bool {
        self.extended.get(i).is_some_and(|e| e.is_some())
    }

    /// The bits above k of the extension product step `i` makes when it opens its input
    /// `t`'s masked map, if it is that tensor's opener and the tensor is extended.
    pub fn opens(&self, i: usize, t: usize) -> Option<u32> {
        self.extended
            .get(t)
            .copied()
            .flatten()
            .filter(|_| self.opener[t] == i)
    }
}

impl GraphPlan {
    /// Every step's output size on an h x w input (sides multiples of the total stride),
    /// or why that size cannot be run.
    pub fn dims(&self, h: usize, w: usize) -> Result<Vec<Dims>, String> {
        let [sy, sx] = self.stride;
        if h == 0 || w == 0 || !h.is_multiple_of(sy) || !w.is_multiple_of(sx) {
            return Err(format!(
                "{h} x {w}: the sides must be positive multiples of the total stride {sy} x {sx}"
            ));
        }
        let mut dims: Vec<Dims> = Vec::with_capacity(self.steps.len());
        for (i, st) in self.steps.iter().enumerate() {
            let ins: Vec<Dims> = st.inputs.iter().map(|&t| dims[t]).collect();
            let [c, ih, iw] = ins.first().copied().unwrap_or([1, h, w]);
            let d = match &st.kind {
                &Kind::Input { channels } => [channels, h, w],
                &Kind::NoiseMap { channels, block } => [channels, h / block, w / block],
                Kind::Conv { op, .. } => {
                    let (oh, ow) = conv_dims(op, ih, iw);
                    [op.cout, oh, ow]
                }
                Kind::Concat { .. } => [ins.iter().map(|d| d[0]).sum(), ih, iw],
                Kind::AvgPool { window, .. } | Kind::MaxPool { window } => {
                    let (oh, ow) = window_dims(window, ih, iw);
                    [c, oh, ow]
                }
                Kind::Resize { r, .. } => [c, ih * r.scale[0], iw * r.scale[1]],
                Kind::DepthToSpace { block, .. } => [c / (block * block), ih * block, iw * block],
                Kind::SpaceToDepth { block } => [c * block * block, ih / block, iw / block],
                Kind::Trunc { .. }
                | Kind::Add { .. }
                | Kind::Sub { .. }
                | Kind::Affine { .. }
                | Kind::Relu { .. }
                | Kind::LeakyRelu { .. }
                | Kind::PRelu { .. }
                | Kind::Clip { .. } => [c, ih, iw],
            };
            if d.contains(&0) || ins.iter().any(|x| x[1..] != ins[0][1..]) {
                return Err(format!(
                    "{h} x {w}: step {i} would have an empty or mismatched map"
                ));
            }
            // A pooling window of padding only has no value (as `Graph::padded_size`).
            if let Kind::AvgPool { window, .. } | Kind::MaxPool { window } = &st.kind {
                let covered = (0..2).all(|a| window.covers(a, [ih, iw][a] as i64, d[a + 1] as i64));
                if !covered {
                    return Err(format!(
                        "{h} x {w}: step {i} would have a pooling window of padding only"
                    ));
                }
            }
            dims.push(d);
        }
        Ok(dims)
    }

    /// Every step's channel count (the same on every input size).
    pub fn channels(&self) -> Vec<usize> {
        let mut ch: Vec<usize> = Vec::with_capacity(self.steps.len());
        for st in &self.steps {
            let c = st.inputs.first().map_or(1, |&t| ch[t]);
            ch.push(match &st.kind {
                &Kind::Input { channels } | &Kind::NoiseMap { channels, .. } => channels,
                Kind::Conv { op, .. } => op.cout,
                Kind::Concat { .. } => st.inputs.iter().map(|&t| ch[t]).sum(),
                Kind::DepthToSpace { block, .. } => c / (block * block),
                Kind::SpaceToDepth { block } => c * block * block,
                _ => c,
            });
        }
        ch
    }

    /// The lengths of step `i`'s secret parts (as [`GraphPlan::secret_values`] lists them),
    /// from the structure alone: a public plan, whose secret values are absent, has them too.
    /// `ch`: [`GraphPlan::channels`].
    pub fn secret_counts(&self, i: usize, ch: &[usize]) -> Vec<usize> {
        match &self.steps[i].kind {
            Kind::Conv { op, .. } => {
                let rows = if op.transposed { op.cin } else { op.cout };
                vec![rows * op.row_len(), op.cout]
            }
            Kind::Affine { .. } => vec![ch[i], ch[i]],
            Kind::PRelu { .. } => vec![ch[i]],
            _ => vec![],
        }
    }

    /// An affine map's and a PReLU's one value for all channels, repeated per channel (the
    /// same bits: [`per_channel`]), so that every count follows from the structure.
    pub(super) fn per_channel_values(&mut self) {
        let ch = self.channels();
        for (st, &c) in self.steps.iter_mut().zip(&ch) {
            let parts: Vec<&mut Vec<u64>> = match &mut st.kind {
                Kind::Affine { a, b } => vec![a, b],
                Kind::PRelu { slope, .. } => vec![slope],
                _ => vec![],
            };
            for v in parts.into_iter().filter(|v| v.len() == 1) {
                *v = vec![v[0]; c];
            }
        }
    }

    /// The steps that multiply by secret weights, in order, with the number of weights each
    /// masks (a conv's kernel, an affine map's scales, a PReLU's slopes). Position `j` in
    /// this list names the weight mask stream `WeightMask(j)`, as a CNN's layer does.
    pub fn weight_steps(&self) -> Vec<(usize, usize)> {
        let ch = self.channels();
        (0..self.steps.len())
            .filter_map(|i| self.secret_counts(i, &ch).first().map(|&n| (i, n)))
            .collect()
    }

    /// The plan without its secret values (what files may carry and the dealer reads).
    pub fn public(&self) -> GraphPlan {
        let mut plan = self.clone();
        for st in &mut plan.steps {
            for part in secret_parts_mut(&mut st.kind) {
                part.clear();
            }
        }
        plan
    }

    /// Every secret value of the plan, step after step: a conv's weights then biases, an
    /// affine map's scales then shifts, a PReLU's slopes (what a model share splits).
    pub fn secret_values(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for st in &self.steps {
            for part in secret_parts(&st.kind) {
                out.extend_from_slice(part);
            }
        }
        out
    }

    /// How many secret values the plan has, from its structure (a public plan too).
    pub fn secret_count(&self) -> usize {
        let ch = self.channels();
        (0..self.steps.len())
            .map(|i| self.secret_counts(i, &ch).iter().sum::<usize>())
            .sum()
    }

    /// The plan with its secret values replaced by `values` (a party's shares), in the order
    /// of [`GraphPlan::secret_values`].
    /// Works on a public plan as on a full one: the counts come from the structure.
    pub fn with_secret_values(&self, values: &[u64]) -> Result<GraphPlan, String> {
        let ch = self.channels();
        let want = self.secret_count();
        if values.len() != want {
            return Err(format!(
                "{} secret values for a plan that has {want}",
                values.len()
            ));
        }
        let mut plan = self.clone();
        let mut at = 0;
        for (i, st) in plan.steps.iter_mut().enumerate() {
            let counts = self.secret_counts(i, &ch);
            for (part, n) in secret_parts_mut(&mut st.kind).into_iter().zip(counts) {
                *part = values[at..at + n].to_vec();
                at += n;
            }
        }
        Ok(plan)
    }

    /// Step `i`'s uses of the dealer's randomness, in order, given its inputs' sizes and what
    /// the engine fuses ([`Fused`]).
    pub fn uses(&self, i: usize, dims: &[Dims], fused: &Fused) -> Vec<Use> {
        let st = &self.steps[i];
        let k = self.params.k;
        let n = |d: Dims| d[0] * d[1] * d[2];
        let circuit = |circ, elements| Use::Circuit { circ, elements };
        let relu = |sh| ActCircuit::Relu(TruncParams { sh, k });
        let trunc = |sh| ActCircuit::Trunc(TruncParams { sh, k });
        match &st.kind {
            Kind::Conv { .. } | Kind::Affine { .. } => {
                let t = st.inputs[0];
                let extend = fused.opens(i, t).map(|bits| Use::Extend {
                    len: n(dims[t]),
                    bits,
                });
                extend
                    .into_iter()
                    .chain([Use::Product { len: n(dims[i]) }])
                    .collect()
            }
            Kind::Trunc { sh } => vec![circuit(trunc(*sh), n(dims[i]))],
            Kind::Relu { sh } => vec![circuit(relu(*sh), n(dims[i]))],
            // One run keeps max(0, t), one t itself; a PReLU's secret slopes then multiply
            // t - max(0, t).
            Kind::LeakyRelu { sh, .. } => vec![
                circuit(relu(*sh), n(dims[i])),
                circuit(trunc(*sh), n(dims[i])),
            ],
            Kind::PRelu { sh, .. } => vec![
                circuit(relu(*sh), n(dims[i])),
                circuit(trunc(*sh), n(dims[i])),
                Use::Product { len: n(dims[i]) },
            ],
            Kind::Clip { lo, hi } => [lo.is_some(), hi.is_some()]
                .iter()
                .filter(|&&b| b)
                .map(|_| circuit(relu(0), n(dims[i])))
                .collect(),
            Kind::MaxPool { window } => {
                let [c, ih, iw] = dims[st.inputs[0]];
                max_pool_rounds(window, ih, iw)
                    .into_iter()
                    .map(|per_plane| circuit(relu(0), c * per_plane))
                    .collect()
            }
            _ => vec![],
        }
    }

    /// Whether the plan's streams can be named: steps and weight masks below 2^16 (the
    /// stream ids' layer field), as a CNN's layers.
    pub fn check_streams(&self) -> Result<(), String> {
        let lim = MAX_STREAM_LAYER as usize + 1;
        if self.steps.len() > lim {
            return Err(format!(
                "{} steps: at most {lim} are supported",
                self.steps.len()
            ));
        }
        Ok(())
    }
}

/// A step's secret values, to fill or clear.
fn secret_parts_mut(kind: &mut Kind) -> Vec<&mut Vec<u64>> {
    match kind {
        Kind::Conv { w, b, .. } => vec![w, b],
        Kind::Affine { a, b } => vec![a, b],
        Kind::PRelu { slope, .. } => vec![slope],
        _ => vec![],
    }
}

/// A step's secret values, in the order they are shared (the first part is what a
/// product multiplies by: the weights its mask hides).
pub fn secret_parts(kind: &Kind) -> Vec<&[u64]> {
    match kind {
        Kind::Conv { w, b, .. } => vec![w, b],
        Kind::Affine { a, b } => vec![a, b],
        Kind::PRelu { slope, .. } => vec![slope],
        _ => vec![],
    }
}

/// For each comparison round j = 1, 2, ... of a max pooling over an h x w plane: how many
/// output positions have a (j+1)-th value in their window (windows at a border hold fewer).
pub fn max_pool_rounds(win: &crate::model::graph::Window, h: usize, w: usize) -> Vec<usize> {
    let (oh, ow) = window_dims(win, h, w);
    let mut per_len = vec![0usize; win.kernel[0] * win.kernel[1] + 1];
    let mut at = Vec::new();
    for y in 0..oh {
        for x in 0..ow {
            window_at(win, h, w, y, x, &mut at);
            per_len[at.len()] += 1;
        }
    }
    // Round j compares the (j+1)-th value: every window of more than j values.
    (1..per_len.len())
        .map(|j| per_len[j + 1..].iter().sum::<usize>())
        .take_while(|&n| n > 0)
        .collect()
}

/// The bilinear part of product step `kind`: secret weights `w` (a conv's kernel, an affine
/// map's scales, a PReLU's slopes) applied to map `x`, no bias. The oracle's step is this
/// plus the bias, and so is the Beaver product's result once both shares are added.
pub fn product(kind: &Kind, w: &[u64], x: &Map<u64>) -> Map<u64> {
    match kind {
        Kind::Conv { op, .. } => super::conv::conv(op, w, x),
        Kind::Affine { .. } | Kind::PRelu { .. } => x.map(|c, v| v.wrapping_mul(per_channel(w, c))),
        _ => unreachable!("not a product step"),
    }
}

/// `w[0]` (x) `x[0]` + `w[1]` (x) `x[1]` for a product step (a Beaver product's U own +
/// A_i V): one matrix product per group for a conv ([`super::conv::conv_pair`]).
pub fn product_pair(kind: &Kind, w: [&[u64]; 2], x: [&Map<u64>; 2]) -> Map<u64> {
    match kind {
        Kind::Conv { op, .. } => super::conv::conv_pair(op, w, x),
        _ => {
            let (mut z, z1) = (product(kind, w[0], x[0]), product(kind, w[1], x[1]));
            z.v.iter_mut()
                .zip(&z1.v)
                .for_each(|(a, b)| *a = a.wrapping_add(*b));
            z
        }
    }
}

/// The stream (tensor or step, k) of the masked map product step `step` reads: its input
/// tensor's (`ActMask(t, 0)`, one per tensor), or a PReLU's own second map
/// (`ActMask(step, 1)`).
pub fn product_input(plan: &GraphPlan, step: usize) -> (u32, u32) {
    match plan.steps[step].kind {
        Kind::PRelu { .. } => (step as u32, 1),
        _ => (plan.steps[step].inputs[0] as u32, 0),
    }
}

/// A per-channel value, or the one value of all channels.
pub fn per_channel(v: &[u64], c: usize) -> u64 {
    v[if v.len() == 1 { 0 } else { c }]
}
