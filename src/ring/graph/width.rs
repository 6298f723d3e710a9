//! How many low bits of each value a secure graph job must keep exact (docs/protocol.md,
//! "Ring width"), and so how wide each masked opening is.
//!
//! A circuit reads its input only mod 2^(sh + k) (`circuit::activation`) and outputs an
//! exact value; every other step is ring-linear (products by secret or public weights,
//! joins with their left shifts, average pooling and resizes by encoded public weights,
//! pixel (un)shuffles, public constants added), so its output mod 2^b follows from its
//! inputs mod 2^b. Walking the plan backwards from the output (needed whole, 64 bits),
//! each step asks of its inputs what it needs: a circuit its reading width, a linear step
//! what its own output needs. A product's opening then needs only as many bits as its
//! output does: a map that only circuits read is opened mod 2^(sh + k), one that reaches
//! the output linearly in all 64.

use super::uses::product_input;
use super::{GraphPlan, Kind};

impl GraphPlan {
    /// Per step: the low bits of its output the job needs exact (0: none, never read).
    pub fn needed_bits(&self) -> Vec<u32> {
        let k = self.params.k;
        let mut need = vec![0u32; self.steps.len()];
        need[self.output] = 64;
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
                Kind::Input
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

    /// Bits of product step `step`'s result the job needs exact: the width its dealer
    /// correction C is kept in.
    pub fn product_bits(&self, step: usize) -> u32 {
        self.needed_bits()[step].clamp(1, 64)
    }

    /// Bits of the opening of masked-map stream `(t, k)` ([`product_input`]): the widest
    /// that any product reading it needs.
    pub fn open_bits(&self, stream: (u32, u32)) -> u32 {
        let need = self.needed_bits();
        (1..self.steps.len())
            .filter(|&p| self.is_product(p) && product_input(self, p) == stream)
            .map(|p| need[p])
            .max()
            .unwrap_or(64)
            .clamp(1, 64)
    }

    fn is_product(&self, step: usize) -> bool {
        matches!(
            self.steps[step].kind,
            Kind::Conv { .. } | Kind::Affine { .. } | Kind::PRelu { .. }
        )
    }
}
