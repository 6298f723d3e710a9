//! CNN graphs (issue 47, docs/graph.md): a denoiser that is a directed acyclic graph of
//! convolutions, transposed convolutions, joins, poolings, resizes and activations, as U-Nets,
//! RED-CNN and DRUNet are. Node `i` produces tensor `i` (one output each, in topological
//! order); node 0 is the image (one grey channel, or three colour planes), and a graph may read
//! one more input, a noise-level map at a fraction of the image's resolution (FFDNet's:
//! [`Op::NoiseMap`]). Shapes are symbolic in the image's size
//! ([`shape`]), so one description runs on every image whose size is a multiple of the
//! graph's total stride.

mod chain;
pub mod public;
pub mod random;
pub mod reach;
pub mod shape;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::image::window::DeclaredWindow;
use crate::model::cnn::MAX_CHANNELS;
use crate::model::mlp::ModelError;

pub use self::shape::{Extent, Shape};

/// Most nodes of a graph (a 4-level U-Net exports to about 60).
pub const MAX_NODES: usize = 4096;
/// Largest kernel side of a convolution or pooling (a transposed conv's 4x4 and 8x8 up-sampling
/// kernels included).
pub const MAX_KERNEL: usize = 8;
/// Largest stride, dilation, pad, resize scale or block of one op.
pub const MAX_STEP: usize = 8;
/// Largest total stride (the lcm of every tensor's stride): an image is padded to a multiple.
pub const MAX_TOTAL_STRIDE: usize = 256;
/// Most weights and constants of a graph: the bound `ring::plan` puts on a model share.
pub const MAX_VALUES: usize = 1 << 27;

/// The spatial parameters of a convolution or a pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Zeros added before and after each axis, as ONNX orders them: top, left, bottom, right.
    pub pads: [usize; 4],
}

impl Window {
    /// Whether each of the `outputs` windows along `axis` (0 rows, 1 columns), over an input
    /// of `size`, holds at least one input value (not padding only).
    pub fn covers(&self, axis: usize, size: i64, outputs: i64) -> bool {
        let (k, s, d, p) = (
            self.kernel[axis] as i64,
            self.stride[axis] as i64,
            self.dilation[axis] as i64,
            self.pads[axis] as i64,
        );
        (0..outputs).all(|o| (0..k).any(|t| (0..size).contains(&(o * s - p + t * d))))
    }

    fn check(&self) -> Result<(), String> {
        let w = self;
        if w.kernel.iter().any(|&k| k == 0 || k > MAX_KERNEL) {
            return Err(format!(
                "a {}x{} kernel (1 to {MAX_KERNEL} a side)",
                w.kernel[0], w.kernel[1]
            ));
        }
        let steps = w.stride.iter().chain(&w.dilation);
        if steps.clone().any(|&s| s == 0) || steps.clone().any(|&s| s > MAX_STEP) {
            return Err(format!(
                "strides {:?} and dilations {:?} (1 to {MAX_STEP})",
                w.stride, w.dilation
            ));
        }
        if w.pads.iter().any(|&p| p > MAX_STEP * MAX_KERNEL) {
            return Err(format!(
                "pads {:?} (at most {})",
                w.pads,
                MAX_STEP * MAX_KERNEL
            ));
        }
        Ok(())
    }
}

/// A convolution (or, with `transposed`, a transposed convolution).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvOp {
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub window: Window,
    /// Transposed only: rows and columns added after the output's end.
    pub output_padding: [usize; 2],
    pub transposed: bool,
    /// A convolution: cout x (cin / groups) x kh x kw; a transposed one: cin x (cout /
    /// groups) x kh x kw (ONNX's layouts), row-major.
    pub w: Vec<f64>,
    pub b: Vec<f64>,
}

impl ConvOp {
    /// Checks everything but the weights themselves (window, channels, groups, output
    /// padding); returns how many weights its shape holds.
    pub fn check_shape(&self) -> Result<usize, String> {
        let c = self;
        let ch = |c: usize| (1..=MAX_CHANNELS).contains(&c);
        c.window.check()?;
        if !ch(c.cin) || !ch(c.cout) {
            return Err(format!(
                "maps {} to {} channels (1 to {MAX_CHANNELS})",
                c.cin, c.cout
            ));
        }
        if c.groups == 0 || !c.cin.is_multiple_of(c.groups) || !c.cout.is_multiple_of(c.groups) {
            return Err(format!(
                "{} groups for {} to {} channels (a divisor of both)",
                c.groups, c.cin, c.cout
            ));
        }
        let op = c.output_padding;
        if !c.transposed && op != [0, 0] {
            return Err("output padding on a convolution".into());
        }
        let w = &c.window;
        if (0..2).any(|a| op[a] >= w.stride[a].max(w.dilation[a])) {
            return Err(format!(
                "output padding {op:?} (less than the stride or the dilation, as ONNX requires)"
            ));
        }
        let rows = if c.transposed { c.cin } else { c.cout };
        Ok(rows * c.row_len())
    }

    /// Weights of one filter (a row of `w`): a convolution's inputs per output.
    pub fn row_len(&self) -> usize {
        let [kh, kw] = self.window.kernel;
        if self.transposed {
            self.cout / self.groups * kh * kw
        } else {
            self.cin / self.groups * kh * kw
        }
    }
}

/// How a resize finds its source positions (ONNX's `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Coords {
    /// x = (i + 0.5) / r - 0.5 (PyTorch's `align_corners=False`).
    HalfPixel,
    /// As `HalfPixel`, except 0 for an output of length 1.
    PytorchHalfPixel,
    /// x = i / r.
    Asymmetric,
}

/// How a nearest-neighbour resize rounds a source position (ONNX's `nearest_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounding {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interp {
    Nearest(Rounding),
    Linear,
}

/// Up-sampling by a whole factor per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub scale: [usize; 2],
    pub interp: Interp,
    pub coords: Coords,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The image (node 0 only), [`Graph::colours`] planes.
    Input,
    /// The noise-level map the gateway shares beside the image (FFDNet: sigma/255 at every
    /// position): `channels` planes (one, or one per colour) at 1/`block` of the image's
    /// resolution, a second input that reads nothing. At most one per graph.
    NoiseMap {
        channels: usize,
        block: usize,
    },
    Conv(ConvOp),
    /// inputs[0] + inputs[1].
    Add,
    /// inputs[0] - inputs[1].
    Sub,
    /// The inputs' channels, in order.
    Concat,
    /// x * scale + shift per channel (one value: every channel): a constant `Mul`, `Add`,
    /// `Sub` or `Div`, or a batch norm that follows no convolution.
    Affine {
        scale: Vec<f64>,
        shift: Vec<f64>,
    },
    /// Mean over the window; `count_pad`: padded positions count (as zeros).
    AvgPool {
        window: Window,
        count_pad: bool,
    },
    /// Largest value in the window (padded positions are not candidates).
    MaxPool {
        window: Window,
    },
    Resize(Resize),
    /// Channels to space in blocks of `block` x `block`; `crd`: ONNX's CRD order, else DCR.
    DepthToSpace {
        block: usize,
        crd: bool,
    },
    SpaceToDepth {
        block: usize,
    },
    Relu,
    LeakyRelu {
        alpha: f64,
    },
    /// Per-channel slopes (one value: every channel).
    PRelu {
        slope: Vec<f64>,
    },
    /// min(max(x, lo), hi); an absent bound does not clip.
    Clip {
        lo: Option<f64>,
        hi: Option<f64>,
    },
}

impl Op {
    /// The op's name in messages (ONNX's spelling where it has one).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::NoiseMap { .. } => "NoiseMap",
            Op::Conv(c) if c.transposed => "ConvTranspose",
            Op::Conv(_) => "Conv",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Concat => "Concat",
            Op::Affine { .. } => "Affine",
            Op::AvgPool { .. } => "AveragePool",
            Op::MaxPool { .. } => "MaxPool",
            Op::Resize(_) => "Resize",
            Op::DepthToSpace { .. } => "DepthToSpace",
            Op::SpaceToDepth { .. } => "SpaceToDepth",
            Op::Relu => "Relu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::PRelu { .. } => "PRelu",
            Op::Clip { .. } => "Clip",
        }
    }

    /// How many inputs the op reads (`None`: one or more).
    fn arity(&self) -> Option<usize> {
        match self {
            Op::Input | Op::NoiseMap { .. } => Some(0),
            Op::Add | Op::Sub => Some(2),
            Op::Concat => None,
            _ => Some(1),
        }
    }

    /// Its weights and constants, for the finiteness check.
    fn values(&self) -> Vec<&[f64]> {
        match self {
            Op::Conv(c) => vec![c.w.as_slice(), c.b.as_slice()],
            Op::Affine { scale, shift } => vec![scale.as_slice(), shift.as_slice()],
            Op::PRelu { slope } => vec![slope.as_slice()],
            _ => Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    /// The tensors it reads (earlier nodes).
    pub inputs: Vec<usize>,
}

/// A CNN graph. Its output is the image's planes at the image's resolution: the denoised
/// image (a residual network subtracts in the graph, `Sub(0, net)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub output: usize,
    /// Planes of the image it takes and gives: 1 (gray) or 3 (RGB, planes one after another).
    pub colours: usize,
    /// The noise level the model was trained for (sigma*), on the 0..255 scale.
    pub sigma: f64,
    /// Fixed-point settings measured for the model (s, ws, k), as a CNN's.
    pub fixed_point: Option<[u32; 3]>,
    pub window: Option<DeclaredWindow>,
}

impl Graph {
    /// Every tensor's shape, checked op by op (see [`shape::infer`]).
    pub fn shapes(&self) -> Result<Vec<Shape>, String> {
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            let at = |m: String| format!("node {i} ({}): {m}", n.op.name());
            let ins = n
                .inputs
                .iter()
                .map(|&t| shapes.get(t).copied())
                .collect::<Option<Vec<Shape>>>()
                .ok_or_else(|| at("reads a tensor not made before it".into()))?;
            let s = match n.op {
                Op::Input => Shape::image(self.colours),
                _ => shape::infer(&n.op, &ins).map_err(at)?,
            };
            shapes.push(s);
        }
        Ok(shapes)
    }

    /// The least common multiple of every tensor's strides: an image's sides are padded to a
    /// multiple of it.
    pub fn total_stride(&self) -> Result<[usize; 2], String> {
        Ok(shape::total_stride(&self.shapes()?))
    }

    /// Checks the structure, the ops' parameters and weights, and the shapes.
    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        self.check(path, false)
    }

    /// [`Graph::validate`]; `public`: a description without its convolutions' weights and
    /// biases ([`public::PublicGraph::graph`]), whose counts follow from their shapes.
    fn check(&self, path: &Path, public: bool) -> Result<(), ModelError> {
        let inv = |msg: String| ModelError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let n = self.nodes.len();
        if !(2..=MAX_NODES).contains(&n) {
            return Err(inv(format!("a graph of {n} nodes (2 to {MAX_NODES})")));
        }
        if !matches!(self.colours, 1 | 3) {
            return Err(inv(format!("{} colour planes (1 or 3)", self.colours)));
        }
        let maps = self
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::NoiseMap { .. }));
        if maps.count() > 1 {
            return Err(inv("more than one noise map".into()));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let at = |m: String| inv(format!("node {i} ({}): {m}", node.op.name()));
            if (i == 0) != (node.op == Op::Input) {
                return Err(at("the image is node 0 and only node 0".into()));
            }
            match node.op.arity() {
                Some(a) if node.inputs.len() != a => {
                    return Err(at(format!("{} inputs ({a} expected)", node.inputs.len())))
                }
                None if node.inputs.is_empty() => return Err(at("no inputs".into())),
                _ => {}
            }
            if let Some(&t) = node.inputs.iter().find(|&&t| t >= i) {
                return Err(at(format!("reads tensor {t}, not made before it")));
            }
            for v in node.op.values() {
                if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
                    return Err(at(format!("non-finite constant at flat index {bad}")));
                }
            }
            match &node.op {
                Op::Conv(c) if public => {
                    c.check_shape().map_err(at)?;
                    if !c.w.is_empty() || !c.b.is_empty() {
                        return Err(at("carries weights in a public description".into()));
                    }
                }
                op => check_op(op).map_err(at)?,
            }
        }
        if self.output >= n || self.output == 0 {
            return Err(inv(format!("output tensor {} of {n}", self.output)));
        }
        let shapes = self.shapes().map_err(inv)?;
        let out = shapes[self.output];
        if out != Shape::image(self.colours) {
            return Err(inv(format!(
                "the output is {} ({} channel(s) at the image's resolution expected)",
                out.describe(),
                self.colours
            )));
        }
        let s = shape::total_stride(&shapes);
        if s.iter().any(|&s| s > MAX_TOTAL_STRIDE) {
            return Err(inv(format!(
                "a total stride of {s:?} (at most {MAX_TOTAL_STRIDE})"
            )));
        }
        let values = self.value_count();
        if values > MAX_VALUES {
            return Err(inv(format!(
                "{values} weights and constants (at most {MAX_VALUES})"
            )));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(inv(format!("sigma must be positive, got {}", self.sigma)));
        }
        Ok(())
    }

    /// Weights and constants of every node; a convolution's from its shape (what its
    /// checked weights hold, and what a public description's would).
    pub fn value_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => {
                    let rows = if c.transposed { c.cin } else { c.cout };
                    rows.saturating_mul(c.row_len()).saturating_add(c.cout)
                }
                op => op.values().iter().map(|v| v.len()).sum::<usize>(),
            })
            .fold(0usize, |a, b| a.saturating_add(b))
    }

    /// The smallest image this graph runs on, and the sizes it pads an h x w image to: each
    /// side rounded up to a multiple of the total stride; refused when a tensor would be
    /// empty.
    pub fn padded_size(&self, h: usize, w: usize) -> Result<(usize, usize), String> {
        let shapes = self.shapes()?;
        let s = shape::total_stride(&shapes);
        let (ph, pw) = (h.div_ceil(s[0]) * s[0], w.div_ceil(s[1]) * s[1]);
        for (i, sh) in shapes.iter().enumerate() {
            let (th, tw) = (sh.h.size(ph), sh.w.size(pw));
            if th < 1 || tw < 1 {
                return Err(format!(
                    "a {h} x {w} image (padded to {ph} x {pw}) gives tensor {i} ({}) a size of \
                     {th} x {tw}; the image is too small for this network",
                    self.nodes[i].op.name()
                ));
            }
            // A pooling window that holds padding only has no value (no maximum, no mean).
            if let Op::AvgPool { window, .. } | Op::MaxPool { window } = &self.nodes[i].op {
                let src = &shapes[self.nodes[i].inputs[0]];
                let sizes = [src.h.size(ph), src.w.size(pw)];
                if let Some(axis) = (0..2).find(|&a| !window.covers(a, sizes[a], [th, tw][a])) {
                    return Err(format!(
                        "a {h} x {w} image (padded to {ph} x {pw}) gives node {i} ({}) a window \
                         of padding only along its {}; the image is too small for this network",
                        self.nodes[i].op.name(),
                        ["height", "width"][axis]
                    ));
                }
            }
        }
        Ok((ph, pw))
    }
}

/// Where and what a graph's noise map is: its node, channels and block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapInput {
    pub node: usize,
    pub channels: usize,
    pub block: usize,
}

impl MapInput {
    /// Its sides for an image of h x w (each side's blocks, a partial one included): what
    /// the gateway makes, before padding.
    pub fn dims(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.block), w.div_ceil(self.block))
    }
}

/// What a job's input holds: the image's planes, and the noise map if there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    pub colours: usize,
    pub map: Option<MapInput>,
}

impl Inputs {
    /// Values of the input for an h x w image: the image's planes, then the map's channels
    /// at [`MapInput::dims`] (of a padded size: its sides over the block).
    pub fn len(&self, h: usize, w: usize) -> usize {
        let map = self.map.map_or(0, |m| {
            let (mh, mw) = m.dims(h, w);
            m.channels * mh * mw
        });
        self.colours * h * w + map
    }

    /// An input ([`Inputs::len`] values; plain values or one party's shares) padded to
    /// ph x pw (multiples of the map's block) by repeating each plane's last row and column,
    /// and each map channel's at its block: a public linear map, so the oracle and each
    /// server pad alike.
    pub fn pad<T: Copy>(
        &self,
        input: &[T],
        (h, w): (usize, usize),
        (ph, pw): (usize, usize),
    ) -> Vec<T> {
        assert_eq!(input.len(), self.len(h, w), "image then map values");
        let (image, map) = input.split_at(self.colours * h * w);
        let mut out: Vec<T> = image
            .chunks_exact(h * w)
            .flat_map(|plane| pad_edges(plane, (h, w), (ph, pw)))
            .collect();
        if let Some(m) = self.map {
            let (mh, mw) = m.dims(h, w);
            let padded = (ph / m.block, pw / m.block);
            for ch in map.chunks_exact(mh * mw) {
                out.extend(pad_edges(ch, (mh, mw), padded));
            }
        }
        out
    }
}

impl Inputs {
    /// Rows `rows` of a padded input (ph x pw, [`Inputs::pad`]; both ends multiples of the
    /// map's block): each plane's, then each map channel's rows over its block. A tile's
    /// job runs on these.
    pub fn rows<T: Copy>(
        &self,
        input: &[T],
        (ph, pw): (usize, usize),
        rows: std::ops::Range<usize>,
    ) -> Vec<T> {
        let (image, map) = input.split_at(self.colours * ph * pw);
        let mut out: Vec<T> = image
            .chunks_exact(ph * pw)
            .flat_map(|plane| &plane[rows.start * pw..rows.end * pw])
            .copied()
            .collect();
        if let Some(m) = self.map {
            let (b, mw) = (m.block, pw / m.block);
            for ch in map.chunks_exact(ph / b * mw) {
                out.extend_from_slice(&ch[rows.start / b * mw..rows.end / b * mw]);
            }
        }
        out
    }
}

impl Graph {
    /// The noise map it reads, if any.
    pub fn noise_map(&self) -> Option<MapInput> {
        self.nodes
            .iter()
            .enumerate()
            .find_map(|(node, n)| match n.op {
                Op::NoiseMap { channels, block } => Some(MapInput {
                    node,
                    channels,
                    block,
                }),
                _ => None,
            })
    }

    /// What its input holds.
    pub fn inputs(&self) -> Inputs {
        Inputs {
            colours: self.colours,
            map: self.noise_map(),
        }
    }
}

/// An h x w map (row-major) padded to ph x pw by repeating its last row and column.
pub fn pad_edges<T: Copy>(v: &[T], (h, w): (usize, usize), (ph, pw): (usize, usize)) -> Vec<T> {
    (0..ph)
        .flat_map(|y| (0..pw).map(move |x| v[y.min(h - 1) * w + x.min(w - 1)]))
        .collect()
}

/// An op's own parameters, apart from its inputs' shapes.
pub fn check_op(op: &Op) -> Result<(), String> {
    match op {
        Op::Conv(c) => {
            let weights = c.check_shape()?;
            if c.w.len() != weights || c.b.len() != c.cout {
                return Err(format!(
                    "{} weights and {} biases for its shape ({} and {} expected)",
                    c.w.len(),
                    c.b.len(),
                    weights,
                    c.cout
                ));
            }
            Ok(())
        }
        Op::AvgPool { window, .. } | Op::MaxPool { window } => {
            window.check()?;
            let [kh, kw] = window.kernel;
            let [d0, d1] = window.dilation;
            let p = window.pads;
            // A pad as wide as the window would make a window of padding only.
            if p[0].max(p[2]) > (kh - 1) * d0 || p[1].max(p[3]) > (kw - 1) * d1 {
                return Err(format!("pads {p:?} as wide as the window"));
            }
            Ok(())
        }
        Op::Resize(r) => {
            if r.scale.iter().any(|&s| s == 0 || s > MAX_STEP) {
                return Err(format!("scale {:?} (whole, 1 to {MAX_STEP})", r.scale));
            }
            Ok(())
        }
        Op::NoiseMap { channels, block } => {
            if !(1..=MAX_CHANNELS).contains(channels) || *block == 0 || *block > MAX_STEP {
                return Err(format!(
                    "{channels} channel(s) at 1/{block} of the image's resolution (1 to \
                     {MAX_CHANNELS} channels, 1 to {MAX_STEP})"
                ));
            }
            Ok(())
        }
        Op::DepthToSpace { block, .. } | Op::SpaceToDepth { block } => {
            if *block == 0 || *block > MAX_STEP {
                return Err(format!("block {block} (1 to {MAX_STEP})"));
            }
            Ok(())
        }
        Op::Affine { scale, shift } => {
            if scale.is_empty() || shift.is_empty() {
                return Err("an empty scale or shift".into());
            }
            Ok(())
        }
        Op::PRelu { slope } if slope.is_empty() => Err("no slope".into()),
        Op::LeakyRelu { alpha } if !alpha.is_finite() => Err(format!("alpha {alpha}")),
        Op::Clip { lo, hi } => {
            if let Some(v) = lo.iter().chain(hi).find(|v| !v.is_finite()) {
                return Err(format!("bound {v}"));
            }
            match (lo, hi) {
                (Some(l), Some(h)) if l > h => Err(format!("bounds {l} > {h}")),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
