//! What a graph plan costs per image pixel, op kind by op kind (`inspect`, docs/graph.md):
//! the comparisons its circuits make (every ReLU, truncation, max-pooling and clip element)
//! and the multiply-adds of its products, on a public size, from [`GraphPlan::uses`] and the
//! steps' sizes, so that the figures are the ones the dealer and the servers work to.

use std::collections::BTreeMap;

use super::uses::{Dims, Use};
use super::{GraphPlan, Kind};

/// One op kind's part of the plan.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct KindCost {
    /// Steps of this kind.
    pub steps: usize,
    /// Circuit elements (comparisons) per image pixel.
    pub comparisons_per_pixel: f64,
    /// Multiply-adds of secret weights with secret maps per image pixel.
    pub macs_per_pixel: f64,
}

/// The name a step is counted under (ONNX's spelling where it has one; `Trunc`: the exact
/// rescalings the plan placed).
pub fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Input { .. } => "Input",
        Kind::NoiseMap { .. } => "NoiseMap",
        Kind::Trunc { .. } => "Trunc",
        Kind::Conv { op, .. } if op.transposed => "ConvTranspose",
        Kind::Conv { .. } => "Conv",
        Kind::Add { .. } => "Add",
        Kind::Sub { .. } => "Sub",
        Kind::Concat { .. } => "Concat",
        Kind::Affine { .. } => "Affine",
        Kind::AvgPool { .. } => "AveragePool",
        Kind::MaxPool { .. } => "MaxPool",
        Kind::Resize { .. } => "Resize",
        Kind::DepthToSpace { .. } => "DepthToSpace",
        Kind::SpaceToDepth { .. } => "SpaceToDepth",
        Kind::Relu { .. } => "Relu",
        Kind::LeakyRelu { .. } => "LeakyRelu",
        Kind::PRelu { .. } => "PRelu",
        Kind::Clip { .. } => "Clip",
    }
}

impl GraphPlan {
    /// Per op kind, on an `h x w` input (sides multiples of the stride): steps, comparisons
    /// and multiply-adds per pixel.
    pub fn costs(&self, h: usize, w: usize) -> Result<BTreeMap<&'static str, KindCost>, String> {
        let dims = self.dims(h, w)?;
        let pixels = (h * w) as f64;
        let mut out: BTreeMap<&'static str, KindCost> = BTreeMap::new();
        for (i, st) in self.steps.iter().enumerate().skip(1) {
            let c = out.entry(kind_name(&st.kind)).or_default();
            c.steps += 1;
            for u in self.uses(i, &dims, &Default::default()) {
                match u {
                    Use::Circuit { elements, .. } => {
                        c.comparisons_per_pixel += elements as f64 / pixels
                    }
                    Use::Product { len } => {
                        c.macs_per_pixel += macs(&st.kind, len, &dims, st) / pixels
                    }
                    Use::Extend { .. } => {}
                }
            }
        }
        Ok(out)
    }
}

/// Multiply-adds of a product of `len` output values: a convolution's every output reads a
/// filter row (a transposed one's every input is spread by one); an affine map's or a
/// PReLU's one each.
fn macs(kind: &Kind, len: usize, dims: &[Dims], st: &super::Step) -> f64 {
    match kind {
        Kind::Conv { op, .. } if op.transposed => {
            let [c, ih, iw] = dims[st.inputs[0]];
            (c * ih * iw * op.row_len()) as f64
        }
        Kind::Conv { op, .. } => (len * op.row_len()) as f64,
        _ => len as f64,
    }
}

#[cfg(test)]
mod tests {
    use crate::model::graph::random::{win, Net};
    use crate::model::graph::Op;
    use crate::ring::cnn::CnnFixed;
    use crate::ring::graph::GraphPlan;

    /// A conv (1 to 4 channels, 3x3), ReLU, 2x2 max pooling, a 2x2 stride-2 transposed conv
    /// back to one channel: counted by hand per pixel.
    #[test]
    fn costs_are_counted_per_pixel() {
        let mut n = Net::new(1);
        let a = n.conv(0, 1, 4, win(3, 1, 1), false, 1);
        let a = n.add(Op::Relu, &[a]);
        let p = n.add(
            Op::MaxPool {
                window: win(2, 2, 0),
            },
            &[a],
        );
        let out = n.conv(p, 4, 1, win(2, 2, 0), true, 1);
        let plan = GraphPlan::from_graph(&n.graph(out), CnnFixed::default()).unwrap();
        let c = plan.costs(16, 12).unwrap();
        let got = |k: &str| (c[k].steps, c[k].comparisons_per_pixel, c[k].macs_per_pixel);
        assert_eq!(got("Conv"), (1, 0.0, 36.0));
        assert_eq!(got("Relu"), (1, 4.0, 0.0));
        // 3 comparisons per 2x2 window, per channel.
        assert_eq!(got("MaxPool"), (1, 3.0, 0.0));
        // 4 channels at a quarter of the pixels, each spread over a 2x2 kernel.
        assert_eq!(got("ConvTranspose"), (1, 0.0, 4.0));
        assert_eq!(c.len(), 4, "{c:?}");
    }
}
