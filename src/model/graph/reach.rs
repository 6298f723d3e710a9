//! How far a graph's output reaches into the image, per axis (tiles, docs/graph.md milestone
//! 6). Position `j` of a tensor at stride `c` is a function of the image positions in
//! `[c j - before, c j + after]` only. The bound is worked out op by op over every index an op
//! names, padding included, and then widened so that it also says where a map ends: every
//! `before >= 0` and `after >= -c * delta` (the map's last position reaches the last image
//! row or beyond). A band of image rows that starts at a multiple of the total stride and
//! holds a row's reach therefore computes that row as the whole image does: every position
//! the row depends on exists in the band exactly where it exists in the whole image, holds
//! the same values, and reads padding (or clamps, or counts a pooling window) alike.

use super::{Graph, Op, Shape};

/// Image positions before and after the one an output position sits on, that it depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    pub before: usize,
    pub after: usize,
}

impl Graph {
    /// The output's reach along `axis` (0: rows, 1: columns).
    pub fn reach(&self, axis: usize) -> Result<Reach, String> {
        let shapes = self.shapes()?;
        let mut at: Vec<(i64, i64)> = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let ins: Vec<(i64, i64)> = n.inputs.iter().map(|&t| at[t]).collect();
            let stride = |s: &Shape| s.axes()[axis].stride as i64;
            let c_in = n.inputs.first().map_or(1, |&t| stride(&shapes[t]));
            let c_out = stride(&shapes[i]);
            let (lo, hi) = ins
                .iter()
                .fold((0, 0), |(l, h), &(a, b)| (l.max(a), h.max(b)));
            let (lo, hi) = match &n.op {
                Op::Conv(c) if c.transposed => {
                    // Output o reads inputs i with i s = o + p0 - t d (t < k): i s lies in
                    // [o + p0 - (k-1) d, o + p0], and c_in i = c_out i s.
                    let (span, p0) = span_pad(&c.window, axis);
                    (lo + c_out * (span - p0), hi + c_out * p0)
                }
                Op::Conv(super::ConvOp { window, .. })
                | Op::AvgPool { window, .. }
                | Op::MaxPool { window } => {
                    // Output j reads inputs j s - p0 + t d (t < k).
                    let (span, p0) = span_pad(window, axis);
                    (lo + c_in * p0, hi + c_in * (span - p0))
                }
                // Every mode reads source positions within 1.5 of o / scale (a nearest's
                // rounding, a linear's two taps), before their clamp to the map.
                Op::Resize(_) => (lo + 2 * c_in, hi + 2 * c_in),
                // Output o comes from input floor(o / b).
                Op::DepthToSpace { .. } => (lo + c_in, hi),
                // Output j gathers inputs j b .. j b + b - 1.
                Op::SpaceToDepth { block } => (lo, hi + c_in * (*block as i64 - 1)),
                // Map row j stands for image rows j b .. j b + b - 1 (the gateway makes it
                // for the padded image's blocks).
                Op::NoiseMap { block, .. } => (0, *block as i64 - 1),
                _ => (lo, hi),
            };
            let delta = shapes[i].axes()[axis].delta;
            at.push((lo.max(0), hi.max(-c_out * delta).max(0)));
        }
        let (lo, hi) = at[self.output];
        Ok(Reach {
            before: lo as usize,
            after: hi as usize,
        })
    }
}

/// A window's dilated span, (k - 1) d, and its leading pad along `axis`.
fn span_pad(w: &super::Window, axis: usize) -> (i64, i64) {
    (
        ((w.kernel[axis] - 1) * w.dilation[axis]) as i64,
        w.pads[axis] as i64,
    )
}
