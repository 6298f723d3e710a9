//! How many low bits of each value a secure graph job must keep exact (docs/protocol.md,
//! "Ring width"), and so how wide each masked opening is.
//!
//! A circuit reads its input only mod 2^(sh + k) (`circuit::activation`) and outputs an
//! exact value; every other step is ring-linear (products by secret or public weights,
//! joins with their left shifts, average pooling and resizes by encoded public weights,
//! pixel (un)shuffles, public constants added), so its output mod 2^b follows from its
//! inputs mod 2^b. Walking the plan backwards from the output (needed at out_bits),
//! each step asks of its inputs what it needs: a circuit its reading width, a linear step
//! what its own output needs. A product's opening then needs only as many bits as its
//! output does: a map that only circuits read is opened mod 2^(sh + k), one that reaches
//! the output linearly at the output's width.

use std::collections::HashMap;

use super::uses::{product_input, Fused};
use super::{GraphPlan, Kind};

impl GraphPlan {
    /// Per step: the low bits of its output the job needs exact (0: none, never read).
    pub fn needed_bits(&self) -> Vec<u32> {
        let k = self.params.k;
        let mut need = vec![0u32; self.steps.len()];
        need[self.output] = self.out_bits();
        // Steps come after their inputs: every reader of step i is seen before i.
        for (i, st) in self.steps.iter().enumerate().skip(1).rev() {
            let out = need[i];
            let asks = match &st.kind {
                Kind::Trunc { sh }
                | Kind::Relu { sh }
                | Kind::LeakyRelu { sh, .. }
                // A PReLU's product reads its circuits' outputs, which are exact.
                | Kind::PRelu { sh, .. } => sh + k,
                // lo + ReLU(x - lo), hi - ReLU(hi - y): circuits with sh = 0 on x.
                Kind::Clip { lo, hi } if lo.is_some() || hi.is_some() => k,
                Kind::Clip { .. } => out,
                // m = x_first + ReLU(x_next - m) + ...: circuits, and x itself in the sum.
                Kind::MaxPool { .. } => k.max(out),
                // Listed, not `_`: a new kind must say which side it is on.
                Kind::Input { .. }
                | Kind::NoiseMap { .. }
                | Kind::Conv { .. }
                | Kind::Affine { .. }
                | Kind::Add { .. }
                | Kind::Sub { .. }
                | Kind::Concat { .. }
                | Kind::AvgPool { .. }
                | Kind::Resize { .. }
                | Kind::DepthToSpace { .. }
                | Kind::SpaceToDepth { .. } => out,
            };
            for &t in &st.inputs {
                need[t] = need[t].max(asks.min(64));
            }
        }
        need
    }

    /// Bits of the opening of each masked-map stream `(t, k)` ([`product_input`]): the
    /// widest that any product reading it needs (a narrower reader still gets its low bits
    /// exact; a wider one would not). One walk of the plan for all streams.
    pub fn open_widths(&self) -> HashMap<(u32, u32), u32> {
        let need = self.needed_bits();
        let mut widths = HashMap::new();
        for p in (1..self.steps.len()).filter(|&p| self.is_product(p)) {
            let w = widths.entry(product_input(self, p)).or_insert(1);
            *w = need[p].clamp(1, 64).max(*w);
        }
        widths
    }

    /// [`Self::open_widths`] of one stream (64 for a stream no product reads). A job asks
    /// for every stream: it should call `open_widths` once instead.
    pub fn open_bits(&self, stream: (u32, u32)) -> u32 {
        self.open_widths().get(&stream).copied().unwrap_or(64)
    }

    /// Bits of product step `step`'s result its readers read: the step's own need (the
    /// bias, a PReLU's `r << ws` are added ring-linearly), at least 1. The width of the
    /// dealer's explicit C of its triple. `need`: [`Self::needed_bits`].
    pub fn product_bits(&self, need: &[u32], step: usize) -> u32 {
        need[step].clamp(1, 64)
    }

    /// Bits of the outputs of step `step`'s circuits that their readers read: the width of
    /// the daBit and edaBit shares that make them. A `Trunc`'s or `Relu`'s output is the
    /// step's; a leaky ReLU's and a PReLU's outputs reach it ring-linearly (times public
    /// constants, shifted left, opened at the step's need for the PReLU's product); a max
    /// pooling's running maximum and a clip's first bound's result are also read by the next
    /// circuit, mod 2^k (sh = 0), so those ask k too. `need`: [`Self::needed_bits`].
    pub fn circuit_out_bits(&self, need: &[u32], step: usize) -> u32 {
        let out = need[step];
        let bits = match &self.steps[step].kind {
            Kind::MaxPool { .. } | Kind::Clip { .. } => self.params.k.max(out),
            Kind::Trunc { .. }
            | Kind::Relu { .. }
            | Kind::LeakyRelu { .. }
            | Kind::PRelu { .. } => out,
            // No circuit; listed so that a new kind must say.
            Kind::Input { .. }
            | Kind::NoiseMap { .. }
            | Kind::Conv { .. }
            | Kind::Affine { .. }
            | Kind::Add { .. }
            | Kind::Sub { .. }
            | Kind::Concat { .. }
            | Kind::AvgPool { .. }
            | Kind::Resize { .. }
            | Kind::DepthToSpace { .. }
            | Kind::SpaceToDepth { .. } => 64,
        };
        bits.clamp(1, 64)
    }

    /// [`Fused`] for an engine that fuses the extension (`fuses`), else nothing fused. A ReLU
    /// step is extended when it is not the output, every step that reads it is a conv or an
    /// affine map reading it as its masked map, and that opening is wider than k.
    pub fn fused(&self, fuses: bool) -> Fused {
        let n = self.steps.len();
        let mut f = Fused {
            extended: vec![None; n],
            opener: vec![0; n],
        };
        if !fuses {
            return f;
        }
        let mut readers = vec![Vec::new(); n];
        for (i, st) in self.steps.iter().enumerate() {
            st.inputs.iter().for_each(|&t| readers[t].push(i));
        }
        let widths = self.open_widths();
        let k = self.params.k;
        for (t, rs) in readers.iter().enumerate() {
            let opens_only = !rs.is_empty()
                && rs.iter().all(|&r| {
                    matches!(self.steps[r].kind, Kind::Conv { .. } | Kind::Affine { .. })
                        && product_input(self, r) == (t as u32, 0)
                });
            let bits = widths.get(&(t as u32, 0)).copied().unwrap_or(0);
            if matches!(self.steps[t].kind, Kind::Relu { .. })
                && t != self.output
                && opens_only
                && bits > k
            {
                f.extended[t] = Some(bits - k);
                f.opener[t] = rs[0];
            }
        }
        f
    }

    /// Bits of step `step`'s circuit outputs as an engine makes them: k for a ReLU result
    /// left for its extension ([`Fused`]), else [`Self::circuit_out_bits`].
    pub fn circuit_bits(&self, need: &[u32], step: usize, fused: &Fused) -> u32 {
        if fused.left_at_k(step) {
            self.params.k
        } else {
            self.circuit_out_bits(need, step)
        }
    }

    fn is_product(&self, step: usize) -> bool {
        matches!(
            self.steps[step].kind,
            Kind::Conv { .. } | Kind::Affine { .. } | Kind::PRelu { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::random::{mixed_readers, win, Net};
    use crate::model::graph::{Graph, Op};
    use crate::ring::cnn::CnnFixed;

    /// conv -> ReLU -> conv, then `tail` on it as the output (one channel, the image's size).
    fn chain(tail: Option<Op>) -> Graph {
        let mut n = Net::new(1);
        let a = n.conv(0, 1, 2, win(3, 1, 1), false, 1);
        let a = n.add(Op::Relu, &[a]);
        let b = n.conv(a, 2, 1, win(3, 1, 1), false, 1);
        let o = tail.map_or(b, |op| n.add(op, &[b]));
        n.graph(o)
    }

    /// The step of `kind` (its name), the `nth` of them.
    fn nth(plan: &GraphPlan, kind: &str, nth: usize) -> usize {
        (0..plan.steps.len())
            .filter(|&i| format!("{:?}", plan.steps[i].kind).starts_with(kind))
            .nth(nth)
            .unwrap_or_else(|| panic!("no {kind} #{nth} in {:?}", plan.steps))
    }

    /// What each rule asks, on plans whose structure is known: a map only circuits read is
    /// opened at sh + k; one whose product reaches the output linearly, or through a max
    /// pooling (which passes its window's first value on), at the output's width
    /// (`GraphPlan::out_bits`, 64 before wire revision 6); a clip asks only k.
    #[test]
    fn each_step_asks_of_its_inputs_what_its_readers_read() {
        let p = CnnFixed::default();
        let hidden = p.ws + p.k;
        let open_of = |plan: &GraphPlan, step: usize| plan.open_bits(product_input(plan, step));

        // The output is the second conv itself, at scale s + ws: its input is opened at
        // the output's width, s + ws and the activations' range (k - s bits), as a CNN's.
        let plan = GraphPlan::from_graph(&chain(None), p).unwrap();
        let need = plan.needed_bits();
        assert_eq!(need[plan.output], p.s + p.ws + (p.k - p.s));
        assert_eq!(plan.out_bits(), p.out_bits());
        assert_eq!(open_of(&plan, nth(&plan, "Conv", 0)), hidden);
        assert_eq!(open_of(&plan, nth(&plan, "Conv", 1)), plan.out_bits());

        // A max pooling as the output: rescaled first (a Trunc at sh = ws), then every value
        // it passes on is needed at the output's width (scale s: s + the range's bits,
        // and at least k for its circuits), so the Trunc's output is needed there; the
        // conv before it only by the Trunc's circuit.
        let mp = Op::MaxPool {
            window: win(3, 1, 1),
        };
        let plan = GraphPlan::from_graph(&chain(Some(mp)), p).unwrap();
        let need = plan.needed_bits();
        let t = nth(&plan, "Trunc", 0);
        assert_eq!(plan.steps[nth(&plan, "MaxPool", 0)].inputs, [t]);
        assert_eq!(plan.out_bits(), p.s + (p.k - p.s));
        assert_eq!(
            need[t],
            plan.out_bits().max(p.k),
            "a max pooling passes its values on"
        );
        assert_eq!(open_of(&plan, nth(&plan, "Conv", 1)), hidden);

        // A clip with bounds reads its input only through circuits at sh = 0.
        let clip = Op::Clip {
            lo: Some(-1.0),
            hi: Some(1.0),
        };
        let plan = GraphPlan::from_graph(&chain(Some(clip)), p).unwrap();
        let need = plan.needed_bits();
        let c = nth(&plan, "Clip", 0);
        assert_eq!(need[c], plan.out_bits());
        assert_eq!(need[plan.steps[c].inputs[0]], p.k);
    }

    /// A map read by products of different needs is opened at the widest (a narrower
    /// opening would lose the wide reader's high bits), whichever reader comes first.
    #[test]
    fn a_map_two_products_read_is_opened_at_the_wider_need() {
        // Activations at ±16, so the output's width (31: the least range ±32) is not a
        // ReLU's reading width (ws + k = 30), as at the defaults.
        let p = CnnFixed {
            s: 12,
            ws: 13,
            k: 17,
        };
        for wide_first in [true, false] {
            let (g, [a, r]) = mixed_readers(1, wide_first);
            let plan = GraphPlan::from_graph(&g, p).unwrap();
            let need = plan.needed_bits();
            let widths = plan.open_widths();
            for (t, wide) in [
                (plan.nodes[a], plan.out_bits()),
                (plan.nodes[r], 2 * p.ws + p.k),
            ] {
                let mut readers: Vec<u32> = (1..plan.steps.len())
                    .filter(|&i| plan.is_product(i) && product_input(&plan, i) == (t as u32, 0))
                    .map(|i| need[i])
                    .collect();
                readers.sort();
                assert_eq!(readers, [p.ws + p.k, wide], "step {t}'s readers");
                assert_eq!(
                    widths[&(t as u32, 0)],
                    wide,
                    "step {t}, wide first: {wide_first}"
                );
                assert_eq!(plan.open_bits((t as u32, 0)), wide);
            }
        }
    }
}
