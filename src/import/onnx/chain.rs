//! The walk over an ONNX graph that maps it onto the project's two families: the patch MLP
//! (Gemm, or MatMul + Add, with Tanh or Relu) and the convolution stack of DnCNN and FFDNet (Conv,
//! BatchNormalization folded into it, Relu, Sub for the residual), with the pixel
//! (un)shuffle and noise map around it spelt however the exporter spells them.
//!
//! Nodes are read in file order, which ONNX requires to be topological: an input not yet
//! defined is refused, so cycles are too. Every value is one of
//! - a public constant (initializers, `Constant`, shapes), on which shape ops are folded;
//! - a *probe*: what the image and noise-level inputs become through rearrangements
//!   (Reshape, Transpose, SpaceToDepth, Tile, Expand, Concat, ...), evaluated on tensors of
//!   position numbers, so that the first convolution can read off which sub-image each of
//!   its channels is, and the output which channel each pixel comes from;
//! - the stack of linear layers built so far, each value of which is consumed once (the
//!   networks are chains; a branch is refused).

use std::collections::{HashMap, HashSet};

use super::proto::{attr_type, AttributeProto, GraphProto, NodeProto, ValueInfoProto};
use super::tensor::{type_name, volume, Tensor, MAX_PROBE, MAX_RANK};
use crate::model::cnn::{MAX_CHANNELS, MAX_CONV_LAYERS};
use crate::model::frame::Frame;

/// Most nodes a graph may have (DnCNN-S exports to about 50).
pub const MAX_NODES: usize = 10_000;

/// Most values the walk may copy or compute in all, 256 MB of them (a 512 x 512 FFDNet
/// export takes about 3 million, a 1024 x 1024 one 12 million), so that a graph of many
/// nodes on a large tensor can neither keep the reader busy nor fill its memory.
const MAX_WORK: usize = 1 << 25;

/// Position numbers of the noise-level input in probes (image positions are >= 0).
const MAP: f64 = -1.0;

/// Why a graph is refused: the node (its name, or `#index` without one), its op and what.
#[derive(Debug)]
pub struct Refusal {
    pub node: Option<(String, String)>,
    pub msg: String,
    /// Nodes read before the refusal (the node count for one of the whole graph after its
    /// nodes were read): of two walks refusing a file, the one that read further is reported.
    pub at: usize,
}

impl Refusal {
    pub(super) fn graph(msg: impl Into<String>) -> Refusal {
        Refusal {
            node: None,
            msg: msg.into(),
            at: 0,
        }
    }
}

type R<T> = Result<T, Refusal>;

/// One linear layer: `cout x (cin * k * k)` weights, row-major, and its bias (k = 1 for a
/// dense layer).
#[derive(Clone, Debug)]
pub struct Lin {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    /// A BatchNormalization was folded into it.
    pub bn: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Tanh,
    Relu,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Family {
    Mlp,
    Cnn,
}

/// The chain of layers a value is the output of.
#[derive(Clone, Debug)]
pub struct Stack {
    pub family: Family,
    pub layers: Vec<Lin>,
    /// The activation between layers (one kind for the whole network).
    pub act: Option<Act>,
    /// The last layer is followed by its activation.
    activated: bool,
    /// A MatMul waiting for its Add (the bias).
    bias_pending: bool,
    /// The frame the first convolution reads, and for each of its input channels in the
    /// frame's order, the graph's channel.
    pub frame: Frame,
    pub in_perm: Vec<usize>,
    /// Height and width the convolutions run on in the exported example, when known.
    pub dims: Option<(usize, usize)>,
}

/// What the graph computes, once walked.
#[derive(Debug)]
pub struct Walked {
    pub stack: Stack,
    /// For each output channel of the last layer in the frame's order, the graph's channel.
    pub out_perm: Vec<usize>,
    /// The output is the image minus the stack's (DnCNN's residual).
    pub residual: bool,
}

#[derive(Clone, Debug)]
enum Val {
    Const(Tensor),
    /// Rearranged inputs; `back`: of the stack's output rather than the inputs.
    Probe {
        t: Tensor,
        back: bool,
    },
    /// The image input itself.
    Image,
    /// The noise-level input itself.
    Level,
    Stack(Box<Stack>),
    /// The image minus the stack (after Sub).
    Residual(Box<Stack>, Option<Tensor>),
}

/// A graph input: its name and dimensions (`None`: dynamic or unknown).
pub(super) struct Input {
    pub(super) name: String,
    pub(super) dims: Vec<Option<usize>>,
}

pub(super) fn input_of(v: &ValueInfoProto) -> R<Input> {
    let tt = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| Refusal::graph(format!("graph input {:?} is not a tensor", v.name)))?;
    // FLOAT, or DOUBLE (a float64 export keeps f64 weights exactly).
    if tt.elem_type != 1 && tt.elem_type != 11 {
        return Err(Refusal::graph(format!(
            "graph input {:?} has element type {} (FLOAT or DOUBLE expected: export the model \
             in float32)",
            v.name,
            type_name(tt.elem_type)
        )));
    }
    let shape = tt
        .shape
        .as_ref()
        .ok_or_else(|| Refusal::graph(format!("graph input {:?} has no shape", v.name)))?;
    let dims = shape
        .dim
        .iter()
        .map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize))
        .collect();
    Ok(Input {
        name: v.name.clone(),
        dims,
    })
}

/// An input's dimensions, the batch taken as 1 when dynamic; refused when another one is.
fn fixed_dims(inp: &Input) -> Result<Vec<usize>, String> {
    if inp.dims.len() > MAX_RANK {
        return Err(format!(
            "graph input {:?} has rank {}",
            inp.name,
            inp.dims.len()
        ));
    }
    let mut dims = Vec::with_capacity(inp.dims.len());
    for (a, d) in inp.dims.iter().enumerate() {
        dims.push(match (a, d) {
            (0, None) => 1,
            (_, Some(d)) => *d,
            (_, None) => {
                return Err(format!(
                    "graph input {:?} has shape {} with a dynamic size at axis {a}; \
                     rearranging it needs a fixed one: export with a fixed example size \
                     (ppdenoise then runs the network on any size)",
                    inp.name,
                    show_dims(&inp.dims)
                ))
            }
        });
    }
    Ok(dims)
}

pub(super) fn show_dims(d: &[Option<usize>]) -> String {
    let v: Vec<String> = d
        .iter()
        .map(|x| x.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", v.join(", "))
}

/// The walk's state.
struct Walk<'g> {
    vals: HashMap<&'g str, Val>,
    /// Stack values already consumed (a second use is a branch).
    used: HashSet<&'g str>,
    image: Input,
    level: Option<Input>,
    level_used: bool,
    /// The stack whose output a back probe rearranges.
    back: Option<Stack>,
    /// Values copied or computed so far ([`MAX_WORK`]).
    work: std::cell::Cell<usize>,
}

/// Walks `g` (its initializers already read into `consts`).
pub fn walk(g: &GraphProto, consts: HashMap<&str, Tensor>) -> R<Walked> {
    if g.node.len() > MAX_NODES {
        return Err(Refusal::graph(format!(
            "{} nodes (at most {MAX_NODES})",
            g.node.len()
        )));
    }
    if !g.sparse_initializer.is_empty() {
        return Err(Refusal::graph("sparse initializers are not supported"));
    }
    // Inputs that are not initializers (older exporters list both).
    let inputs: Vec<&ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !consts.contains_key(i.name.as_str()))
        .collect();
    let (image, level) = match inputs[..] {
        [x] => (input_of(x)?, None),
        [x, y] => (input_of(x)?, Some(input_of(y)?)),
        [] => return Err(Refusal::graph("the graph has no input")),
        _ => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(Refusal::graph(format!(
                "the graph has {} inputs ({}); a denoiser takes the image, and an FFDNet-style \
                 one also its noise level or map",
                inputs.len(),
                names.join(", ")
            )));
        }
    };
    let [out] = &g.output[..] else {
        return Err(Refusal::graph(format!(
            "the graph has {} outputs (one, the denoised image, expected)",
            g.output.len()
        )));
    };
    let mut w = Walk {
        vals: consts
            .into_iter()
            .map(|(k, t)| (k, Val::Const(t)))
            .collect(),
        used: HashSet::new(),
        image,
        level,
        level_used: false,
        back: None,
        work: Default::default(),
    };
    w.vals.insert(g.input_name(&w.image.name), Val::Image);
    if let Some(l) = &w.level {
        w.vals.insert(g.input_name(&l.name), Val::Level);
    }
    for (i, node) in g.node.iter().enumerate() {
        let label = if node.name.is_empty() {
            format!("#{i}")
        } else {
            node.name.clone()
        };
        w.node(node).map_err(|msg| Refusal {
            node: Some((label, node.op_type.clone())),
            msg,
            at: i,
        })?;
    }
    conclude(w, out).map_err(|r| Refusal {
        at: g.node.len(),
        ..r
    })
}

/// The checks of the whole graph once its nodes are read.
fn conclude(mut w: Walk, out: &ValueInfoProto) -> R<Walked> {
    if let (Some(l), false) = (&w.level, w.level_used) {
        return Err(Refusal::graph(format!(
            "graph input {:?} is not used as a noise level concatenated to the image; a \
             denoiser takes the image only (and FFDNet a noise map)",
            l.name
        )));
    }
    let result = w
        .vals
        .remove(out.name.as_str())
        .ok_or_else(|| Refusal::graph(format!("graph output {:?} is not computed", out.name)))?;
    let (stack, back, residual) = match result {
        Val::Stack(s) => (*s, None, false),
        Val::Probe { t, back: true } => {
            (w.back.take().expect("a back probe's stack"), Some(t), false)
        }
        Val::Residual(s, back) => (*s, back, true),
        _ => {
            return Err(Refusal::graph(format!(
                "graph output {:?} is not computed by a network of linear layers",
                out.name
            )))
        }
    };
    finish(stack, back, residual)
}

trait InputName {
    fn input_name<'a>(&'a self, name: &str) -> &'a str;
}

impl InputName for GraphProto {
    /// The graph's own copy of an input's name (for the map's borrowed keys).
    fn input_name<'a>(&'a self, name: &str) -> &'a str {
        self.input
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.name.as_str())
            .expect("an input of this graph")
    }
}

/// Checks the end of the stack and reads the output's channel order.
fn finish(stack: Stack, back: Option<Tensor>, residual: bool) -> R<Walked> {
    if stack.activated {
        return Err(Refusal::graph(
            "the network ends with an activation; the last layer must be linear (a denoiser's \
             output is not clipped by an activation)",
        ));
    }
    let last = stack.layers.last().expect("a stack has a layer");
    let r = stack.frame.unshuffle;
    let out_perm = match (&back, stack.family) {
        (_, Family::Mlp) | (None, _) => {
            if stack.family == Family::Cnn && last.cout != 1 {
                return Err(Refusal::graph(format!(
                    "the last convolution gives {} channels but the output is not rearranged \
                     into an image (one channel expected, or a pixel shuffle)",
                    last.cout
                )));
            }
            (0..last.cout).collect()
        }
        (Some(t), Family::Cnn) => shuffle_order(t, last.cout, r, stack.dims)?,
    };
    Ok(Walked {
        stack,
        out_perm,
        residual,
    })
}

/// For the stack's output rearranged into `t` (probe values: channel * h * w + y * w + x),
/// the graph's channel that fills each sub-image in the frame's order (sub-image q at row
/// offset q mod r, column offset q div r).
fn shuffle_order(t: &Tensor, cout: usize, r: usize, dims: Option<(usize, usize)>) -> R<Vec<usize>> {
    let bad = |why: String| {
        Refusal::graph(format!(
            "the output is not the stack's {cout} channels pixel-shuffled into one image \
             ({why})"
        ))
    };
    let (h, w) = dims.ok_or_else(|| bad("the size is not fixed".into()))?;
    if h < 2 || w < 2 {
        return Err(bad(format!(
            "an export of {h}x{w} maps is too small to tell"
        )));
    }
    if t.dims != [1, 1, h * r, w * r] || cout != r * r {
        return Err(bad(format!(
            "shape {:?} from {cout} channels of {h}x{w}, unshuffle factor {r}",
            t.dims
        )));
    }
    let big_w = w * r;
    let mut order = vec![usize::MAX; r * r];
    for (q, slot) in order.iter_mut().enumerate() {
        let (dy, dx) = (q % r, q / r);
        let v = t.data[dy * big_w + dx];
        let c = (v as usize) / (h * w);
        for y in 0..h {
            for x in 0..w {
                let want = (c * h * w + y * w + x) as f64;
                if t.data[(y * r + dy) * big_w + x * r + dx] != want {
                    return Err(bad(format!(
                        "pixel ({}, {}) is not from channel {c}",
                        y * r + dy,
                        x * r + dx
                    )));
                }
            }
        }
        *slot = c;
    }
    let mut seen = order.clone();
    seen.sort_unstable();
    if seen != (0..r * r).collect::<Vec<_>>() {
        return Err(bad("a channel is used twice".into()));
    }
    Ok(order)
}

/// The attributes of one node, each read once by name; any left unread is refused.
pub(super) struct Attrs<'a> {
    list: &'a [AttributeProto],
    read: Vec<&'a str>,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(node: &'a NodeProto) -> Result<Attrs<'a>, String> {
        if let Some(a) = node.attribute.iter().find(|a| !a.ref_attr_name.is_empty()) {
            return Err(format!(
                "attribute {} refers to a function's attribute, which is not supported",
                a.name
            ));
        }
        let mut names: Vec<&str> = node.attribute.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("attribute {} is given twice", w[0]));
        }
        Ok(Attrs {
            list: &node.attribute,
            read: Vec::new(),
        })
    }

    pub(super) fn get(
        &mut self,
        name: &'a str,
        ty: i32,
    ) -> Result<Option<&'a AttributeProto>, String> {
        self.read.push(name);
        match self.list.iter().find(|a| a.name == name) {
            Some(a) if a.r#type != ty => Err(format!(
                "attribute {name} has attribute type {} ({ty} expected)",
                a.r#type
            )),
            other => Ok(other),
        }
    }

    pub(super) fn int(&mut self, name: &'a str, default: i64) -> Result<i64, String> {
        Ok(self.get(name, attr_type::INT)?.map_or(default, |a| a.i))
    }

    pub(super) fn float(&mut self, name: &'a str, default: f32) -> Result<f32, String> {
        Ok(self.get(name, attr_type::FLOAT)?.map_or(default, |a| a.f))
    }

    pub(super) fn ints(&mut self, name: &'a str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.get(name, attr_type::INTS)?.map(|a| a.ints.clone()))
    }

    pub(super) fn string(&mut self, name: &'a str, default: &str) -> Result<String, String> {
        Ok(self
            .get(name, attr_type::STRING)?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(&a.s).into_owned()
            }))
    }

    /// Refuses the attributes not read (each op reads all it supports).
    pub(super) fn done(self, op: &str) -> Result<(), String> {
        match self
            .list
            .iter()
            .find(|a| !self.read.contains(&a.name.as_str()))
        {
            Some(a) => Err(format!(
                "attribute {} is not supported on {op} (supported: {})",
                a.name,
                if self.read.is_empty() {
                    "none".to_string()
                } else {
                    self.read.join(", ")
                }
            )),
            None => Ok(()),
        }
    }
}

/// The ops read, for the message refusing any other.
pub const SUPPORTED_OPS: &str = "Conv, BatchNormalization, Relu, Sub (the residual), Gemm, \
     MatMul, Add (a MatMul's bias), Tanh, Identity, Dropout, Constant, ConstantOfShape, Shape, \
     Reshape, Flatten, Transpose, SpaceToDepth, DepthToSpace, Tile, Expand, Concat, \
     Unsqueeze, Squeeze, Cast";

impl<'g> Walk<'g> {
    /// A node's input by position (`None` when absent or given as "").
    fn arg(&mut self, node: &'g NodeProto, i: usize) -> Result<Option<Val>, String> {
        let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        match self.vals.get(name.as_str()) {
            Some(Val::Stack(_) | Val::Residual(..) | Val::Probe { back: true, .. }) => {
                self.used.insert(name.as_str());
                Ok(self.vals.remove(name.as_str()))
            }
            Some(v) => {
                self.charge(v)?;
                Ok(Some(v.clone()))
            }
            None if self.used.contains(name.as_str()) => Err(format!(
                "input {name:?} is used a second time; the network must be a chain (branches \
                 other than the residual are not supported)"
            )),
            None => Err(format!(
                "input {name:?} is not defined before this node (the graph is not in \
                 topological order, or has a cycle)"
            )),
        }
    }

    fn need(&mut self, node: &'g NodeProto, i: usize, what: &str) -> Result<Val, String> {
        self.arg(node, i)?
            .ok_or_else(|| format!("input {i} ({what}) is missing"))
    }

    fn constant(&mut self, node: &'g NodeProto, i: usize, what: &str) -> Result<Tensor, String> {
        match self.need(node, i, what)? {
            Val::Const(t) => Ok(t),
            _ => Err(format!(
                "input {i} ({what}) must be a constant of the file, not computed from the image"
            )),
        }
    }

    /// A value as a probe: the inputs become position numbers (fixed sizes needed).
    fn probe(&mut self, v: Val) -> Result<(Tensor, bool), String> {
        let positions = |inp: &Input, fill: Option<f64>| -> Result<Tensor, String> {
            let dims = fixed_dims(inp)?;
            let n = volume(&dims, MAX_PROBE).ok_or_else(|| {
                format!(
                    "graph input {:?} is larger than {MAX_PROBE} values",
                    inp.name
                )
            })?;
            Ok(Tensor::new(
                dims,
                (0..n).map(|i| fill.unwrap_or(i as f64)).collect(),
            ))
        };
        match v {
            Val::Probe { t, back } => Ok((t, back)),
            Val::Image => {
                let t = positions(&self.image, None)?;
                self.charge_len(t.data.len())?;
                Ok((t, false))
            }
            Val::Level => {
                self.level_used = true;
                let level = self.level.as_ref().expect("a level input");
                let t = positions(level, Some(MAP))?;
                self.charge_len(t.data.len())?;
                Ok((t, false))
            }
            Val::Stack(s) => {
                if s.activated || s.family != Family::Cnn {
                    return Err("rearranges the network's inner values; only its input and \
                                its output may be rearranged"
                        .into());
                }
                if self.back.is_some() {
                    return Err("rearranges the output of a second network branch".into());
                }
                let cout = s.layers.last().expect("a layer").cout;
                let (h, w) = s.dims.ok_or(
                    "rearranges the stack's output, which needs the image size fixed in the export",
                )?;
                let n = volume(&[cout, h, w], MAX_PROBE).ok_or("output too large to rearrange")?;
                self.charge_len(n)?;
                // The stack travels with its output's probe until the graph's output.
                let t = Tensor::new(vec![1, cout, h, w], (0..n).map(|i| i as f64).collect());
                self.back = Some(*s);
                Ok((t, true))
            }
            Val::Const(_) => Err("rearranges a constant where the image was expected".into()),
            Val::Residual(..) => Err("rearranges the residual's result".into()),
        }
    }
}

/// A rearrangement's operand: a constant, or a probe (`Some(back)`).
type Data = (Tensor, Option<bool>);

impl<'g> Walk<'g> {
    fn data(&mut self, v: Val) -> Result<Data, String> {
        match v {
            Val::Const(t) => Ok((t, None)),
            v => self.probe(v).map(|(t, back)| (t, Some(back))),
        }
    }

    fn put(&mut self, node: &'g NodeProto, v: Val) -> Result<(), String> {
        let Some(name) = node.output.first().filter(|n| !n.is_empty()) else {
            return Err("has no output".into());
        };
        if let Some(extra) = node.output[1..].iter().find(|n| !n.is_empty()) {
            return Err(format!(
                "has a second output {extra:?} (training outputs are not supported)"
            ));
        }
        if self.vals.contains_key(name.as_str()) || self.used.contains(name.as_str()) {
            return Err(format!("redefines {name:?}"));
        }
        self.charge(&v)?;
        self.vals.insert(name.as_str(), v);
        Ok(())
    }

    /// Counts a tensor value's size against [`MAX_WORK`] (before it is copied).
    fn charge(&self, v: &Val) -> Result<(), String> {
        match v {
            Val::Const(t) | Val::Probe { t, .. } => self.charge_len(t.data.len() + t.dims.len()),
            _ => Ok(()),
        }
    }

    /// Counts `n` values made or copied against [`MAX_WORK`] (before they are).
    fn charge_len(&self, n: usize) -> Result<(), String> {
        let work = self.work.get().saturating_add(n);
        self.work.set(work);
        if work > MAX_WORK {
            return Err(format!(
                "the graph's constants and rearrangements come to more than {MAX_WORK} values \
                 copied or computed (a denoiser's take a few million)"
            ));
        }
        Ok(())
    }

    /// Reads one node into the walk's state.
    fn node(&mut self, node: &'g NodeProto) -> Result<(), String> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(format!(
                "is in domain {:?}; only standard ONNX ops are supported ({SUPPORTED_OPS})",
                node.domain
            ));
        }
        let mut at = Attrs::new(node)?;
        let op = node.op_type.as_str();
        let most = match op {
            "Constant" => 0,
            "Relu" | "Tanh" | "Identity" | "Flatten" | "Transpose" | "SpaceToDepth"
            | "DepthToSpace" | "Shape" | "Cast" | "ConstantOfShape" => 1,
            "Sub" | "Add" | "MatMul" | "Reshape" | "Tile" | "Expand" | "Unsqueeze" | "Squeeze" => 2,
            "Conv" | "Gemm" | "Dropout" => 3,
            "BatchNormalization" => 5,
            _ => usize::MAX,
        };
        if node.input.len() > most {
            return Err(format!(
                "has {} inputs ({op} takes at most {most})",
                node.input.len()
            ));
        }
        let v = match op {
            "Identity" => self.need(node, 0, "X")?,
            "Dropout" => {
                at.int("seed", 0)?;
                at.float("ratio", 0.5)?;
                if let Some(t) = node.input.get(2).filter(|n| !n.is_empty()) {
                    let on = self.constant(node, 2, "training_mode")?;
                    if on.data.iter().any(|&v| v != 0.0) {
                        return Err(format!("training_mode {t:?} is on"));
                    }
                }
                self.need(node, 0, "data")?
            }
            "Constant" => Val::Const(constant_node(&mut at)?),
            "ConstantOfShape" => {
                let shape = ints(&self.constant(node, 0, "shape")?)?;
                let fill = match at.get("value", attr_type::TENSOR)? {
                    Some(a) => {
                        let t = Tensor::from_proto(a.t.as_ref().ok_or("value has no tensor")?, 1)?;
                        t.data[0]
                    }
                    None => 0.0,
                };
                if shape.len() > MAX_RANK || shape.iter().any(|&d| d < 1) {
                    return Err(format!("shape {shape:?} (1 to {MAX_RANK} positive sizes)"));
                }
                let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                let n = volume(&dims, MAX_PROBE).ok_or("its shape is too large")?;
                Val::Const(Tensor::new(dims, vec![fill; n]))
            }
            "Shape" => {
                let (start, end) = (at.int("start", 0)?, at.int("end", i64::MAX)?);
                let x = self.need(node, 0, "data")?;
                // The inputs' shapes from their declarations, without making a probe.
                let dims = match &x {
                    Val::Image => fixed_dims(&self.image)?,
                    Val::Level => fixed_dims(self.level.as_ref().expect("a level input"))?,
                    Val::Const(t) | Val::Probe { t, .. } => t.dims.clone(),
                    _ => return Err("takes the shape of the network's output".into()),
                };
                let r = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let d: Vec<f64> = dims[clamp(start)..clamp(end).max(clamp(start))]
                    .iter()
                    .map(|&d| d as f64)
                    .collect();
                if d.is_empty() {
                    return Err("gives an empty shape".into());
                }
                Val::Const(Tensor::new(vec![d.len()], d))
            }
            "Cast" => {
                let to = at.int("to", 1)?;
                at.int("saturate", 1)?;
                let x = self.need(node, 0, "input")?;
                match (x, to) {
                    (Val::Const(t), 1 | 6 | 7 | 11) => {
                        let trunc = matches!(to, 6 | 7);
                        Val::Const(Tensor::new(
                            t.dims,
                            t.data
                                .iter()
                                .map(|v| if trunc { v.trunc() } else { *v })
                                .collect(),
                        ))
                    }
                    (v @ (Val::Probe { .. } | Val::Image | Val::Level), 1 | 11) => v,
                    _ => {
                        return Err(format!(
                            "casts to type {} (only FLOAT for the image)",
                            type_name(to as i32)
                        ))
                    }
                }
            }
            "Reshape" | "Flatten" | "Transpose" | "SpaceToDepth" | "DepthToSpace" | "Tile"
            | "Expand" | "Unsqueeze" | "Squeeze" => self.rearrange(node, &mut at)?,
            "Concat" => {
                if node.input.is_empty() {
                    return Err("has no inputs".into());
                }
                let axis = at.int("axis", i64::MIN)?;
                let mut parts = Vec::new();
                for i in 0..node.input.len() {
                    let v = self.need(node, i, "input")?;
                    parts.push(self.data(v)?);
                }
                let kind = parts[0].1;
                if parts.iter().any(|p| p.1 != kind) {
                    return Err(
                        "concatenates the image with a constant or the network's output".into(),
                    );
                }
                let r = parts[0].0.dims.len() as i64;
                let axis = if axis < 0 { axis + r } else { axis };
                if !(0..r).contains(&axis) {
                    return Err(format!("axis out of range for rank {r}"));
                }
                let refs: Vec<&Tensor> = parts.iter().map(|p| &p.0).collect();
                wrap(Tensor::concat(&refs, axis as usize)?, kind)
            }
            "Conv" => self.conv(node, &mut at)?,
            "BatchNormalization" => self.batch_norm(node, &mut at)?,
            "Relu" | "Tanh" => {
                let act = if op == "Relu" { Act::Relu } else { Act::Tanh };
                let Val::Stack(mut s) = self.need(node, 0, "X")? else {
                    return Err(format!(
                        "applies {op} to something other than a layer's output"
                    ));
                };
                if s.activated {
                    return Err("follows another activation".into());
                }
                if (s.family, act) == (Family::Cnn, Act::Tanh) {
                    return Err("Tanh in a convolutional network (ReLU supported)".into());
                }
                if s.act.is_some_and(|a| a != act) {
                    return Err("mixes activations (one kind for the whole network)".into());
                }
                s.act = Some(act);
                s.activated = true;
                s.bias_pending = false;
                Val::Stack(s)
            }
            "Gemm" | "MatMul" => self.dense(node, &mut at)?,
            "Add" => self.add_bias(node)?,
            "Sub" => {
                let a = self.need(node, 0, "A")?;
                let b = self.need(node, 1, "B")?;
                if !self.is_image(&a)? {
                    return Err(
                        "subtracts from something other than the image input (only the \
                                residual, image - network, is supported)"
                            .into(),
                    );
                }
                match b {
                    Val::Stack(s) if s.family == Family::Cnn => Val::Residual(s, None),
                    Val::Probe { t, back: true } => Val::Residual(
                        Box::new(self.back.take().expect("a back probe's stack")),
                        Some(t),
                    ),
                    _ => {
                        return Err("subtracts something other than the network's output from \
                                    the image"
                            .into())
                    }
                }
            }
            other => {
                return Err(format!(
                    "op {other} is not supported; ppdenoise reads {SUPPORTED_OPS} (docs/model.md)"
                ))
            }
        };
        at.done(op)?;
        self.put(node, v)
    }

    /// True when `v` is the image input, as given or rearranged back to itself.
    fn is_image(&mut self, v: &Val) -> Result<bool, String> {
        Ok(match v {
            Val::Image => true,
            Val::Probe { t, back: false } => {
                let (id, _) = self.probe(Val::Image)?;
                *t == id
            }
            _ => false,
        })
    }

    fn rearrange(&mut self, node: &'g NodeProto, at: &mut Attrs<'g>) -> Result<Val, String> {
        let op = node.op_type.as_str();
        let x = self.need(node, 0, "data")?;
        // The stack's output is rearranged only by the shuffle ops (and reshapes of them).
        let (t, kind) = self.data(x)?;
        let out = match op {
            "Reshape" => {
                let allow = at.int("allowzero", 0)? != 0;
                t.reshape(&ints(&self.constant(node, 1, "shape")?)?, allow)?
            }
            "Flatten" => {
                let r = t.dims.len() as i64;
                let axis = at.int("axis", 1)?;
                let axis = if axis < 0 { axis + r } else { axis };
                if !(0..=r).contains(&axis) {
                    return Err(format!("axis out of range for rank {r}"));
                }
                let outer: usize = t.dims[..axis as usize].iter().product();
                t.reshape(&[outer as i64, -1], true)
                    .or_else(|_| t.reshape(&[outer as i64, 0], true))?
            }
            "Transpose" => t.transpose(&at.ints("perm")?.unwrap_or_default())?,
            "SpaceToDepth" => t.space_to_depth(block(at)?)?,
            "DepthToSpace" => {
                let b = block(at)?;
                let mode = at.string("mode", "DCR")?;
                if mode != "DCR" && mode != "CRD" {
                    return Err(format!("mode {mode} (DCR or CRD)"));
                }
                t.depth_to_space(b, mode == "CRD")?
            }
            "Tile" => t.tile(&ints(&self.constant(node, 1, "repeats")?)?)?,
            "Expand" => t.expand(&ints(&self.constant(node, 1, "shape")?)?)?,
            _ => {
                // Unsqueeze, Squeeze: axes as an attribute (opset < 13) or an input.
                let from_input = node.input.get(1).is_some_and(|n| !n.is_empty());
                let axes = match at.ints("axes")? {
                    Some(_) if from_input => {
                        return Err("has axes both as an attribute and as an input".into())
                    }
                    Some(a) => Some(a),
                    None if from_input => Some(ints(&self.constant(node, 1, "axes")?)?),
                    None => None,
                };
                let dims = if op == "Unsqueeze" {
                    unsqueeze(&t.dims, &axes.ok_or("has no axes")?)?
                } else {
                    squeeze(&t.dims, axes.as_deref())?
                };
                t.reshape(&dims.iter().map(|&d| d as i64).collect::<Vec<_>>(), true)?
            }
        };
        Ok(wrap(out, kind))
    }

    fn conv(&mut self, node: &'g NodeProto, at: &mut Attrs<'g>) -> Result<Val, String> {
        let x = self.need(node, 0, "X")?;
        let wt = self.constant(node, 1, "W")?;
        let [cout, cin, kh, kw] = wt.dims[..] else {
            return Err(format!(
                "weights of shape {:?} (a 2-D convolution expected)",
                wt.dims
            ));
        };
        let ones = |name: &'g str, at: &mut Attrs<'g>| -> Result<(), String> {
            match at.ints(name)? {
                Some(v) if v.iter().any(|&s| s != 1) => Err(format!(
                    "attribute {name} = {v:?}: only 1 is supported (same-size convolutions)"
                )),
                _ => Ok(()),
            }
        };
        ones("strides", at)?;
        ones("dilations", at)?;
        let group = at.int("group", 1)?;
        if group != 1 {
            return Err(format!("attribute group = {group}: only 1 is supported"));
        }
        if kh != kw || kh % 2 == 0 || kh > crate::model::cnn::MAX_KERNEL {
            return Err(format!(
                "a {kh}x{kw} kernel: square, odd, up to {0}x{0} supported",
                crate::model::cnn::MAX_KERNEL
            ));
        }
        if let Some(ks) = at.ints("kernel_shape")? {
            if ks != [kh as i64, kw as i64] {
                return Err(format!(
                    "attribute kernel_shape = {ks:?} but W is {kh}x{kw}"
                ));
            }
        }
        let p = (kh / 2) as i64;
        let auto = at.string("auto_pad", "NOTSET")?;
        match auto.as_str() {
            "NOTSET" => {
                let pads = at.ints("pads")?.unwrap_or_else(|| vec![0; 4]);
                if pads != [p; 4] {
                    return Err(format!(
                        "attribute pads = {pads:?}: only same padding ({p} on each side for \
                         a {kh}x{kh} kernel, zeros) is supported"
                    ));
                }
            }
            "SAME_UPPER" | "SAME_LOWER" => {
                at.ints("pads")?;
            }
            other => {
                return Err(format!(
                    "attribute auto_pad = {other}: only same padding is supported"
                ))
            }
        }
        if cout == 0 || cin == 0 || cout > MAX_CHANNELS || cin > MAX_CHANNELS {
            return Err(format!(
                "maps {cin} to {cout} channels (1 to {MAX_CHANNELS} supported)"
            ));
        }
        let b = match self.arg(node, 2)? {
            None => vec![0.0; cout],
            Some(Val::Const(t)) if t.data.len() == cout && t.dims.len() == 1 => t.data,
            Some(_) => return Err(format!("input 2 (B) is not a constant of {cout} values")),
        };
        let mut s = match x {
            Val::Stack(s) if s.family == Family::Cnn && s.activated => s,
            Val::Stack(_) => {
                return Err("follows a layer without an activation between them".into());
            }
            Val::Image => {
                let d = &self.image.dims;
                if d.len() != 4 || d[1] != Some(1) {
                    return Err(format!(
                        "reads graph input {:?} of shape {} (N x 1 x H x W, one grey channel, \
                         expected)",
                        self.image.name,
                        show_dims(d)
                    ));
                }
                let dims = d[2].zip(d[3]);
                Box::new(self.new_stack(Family::Cnn, Frame::PLAIN, vec![0], dims))
            }
            v @ Val::Probe { back: false, .. } => {
                let (t, _) = self.probe(v)?;
                let (frame, perm, dims) = unshuffle_order(&t, &self.image)?;
                Box::new(self.new_stack(Family::Cnn, frame, perm, Some(dims)))
            }
            _ => return Err("input X is not the image, its sub-images or a ReLU's output".into()),
        };
        let have = s.channels();
        if cin != have {
            return Err(format!("takes {cin} channels but its input has {have}"));
        }
        if s.layers.len() == MAX_CONV_LAYERS {
            return Err(format!("more than {MAX_CONV_LAYERS} convolutions"));
        }
        s.layers.push(Lin {
            cin,
            cout,
            k: kh,
            w: wt.data,
            b,
            bn: false,
        });
        s.activated = false;
        Ok(Val::Stack(s))
    }

    fn new_stack(
        &self,
        family: Family,
        frame: Frame,
        in_perm: Vec<usize>,
        dims: Option<(usize, usize)>,
    ) -> Stack {
        Stack {
            family,
            layers: Vec::new(),
            act: None,
            activated: true,
            bias_pending: false,
            frame,
            in_perm,
            dims,
        }
    }

    fn batch_norm(&mut self, node: &'g NodeProto, at: &mut Attrs<'g>) -> Result<Val, String> {
        let eps = at.float("epsilon", 1e-5)? as f64;
        at.float("momentum", 0.9)?;
        if at.int("training_mode", 0)? != 0 {
            return Err("attribute training_mode = 1 (export the model in eval mode)".into());
        }
        if at.int("spatial", 1)? != 1 {
            return Err("attribute spatial = 0 is not supported".into());
        }
        let Val::Stack(mut s) = self.need(node, 0, "X")? else {
            return Err("normalizes something other than a convolution's output".into());
        };
        let ok = s.family == Family::Cnn && !s.activated && !s.layers.last().is_some_and(|l| l.bn);
        if !ok {
            return Err(
                "does not directly follow a convolution (only a convolution's batch \
                        norm can be folded into it)"
                    .into(),
            );
        }
        let l = s.layers.last_mut().expect("a layer");
        let mut p = Vec::new();
        for (i, what) in ["scale", "B", "mean", "var"].into_iter().enumerate() {
            let t = self.constant(node, i + 1, what)?;
            if t.data.len() != l.cout {
                return Err(format!(
                    "input {} ({what}) has {} values for {} channels",
                    i + 1,
                    t.data.len(),
                    l.cout
                ));
            }
            p.push(t.data);
        }
        crate::model::cnn::fold_batch_norm(&mut l.w, &mut l.b, [&p[0], &p[1], &p[2], &p[3]], eps)?;
        l.bn = true;
        Ok(Val::Stack(s))
    }

    fn dense(&mut self, node: &'g NodeProto, at: &mut Attrs<'g>) -> Result<Val, String> {
        let gemm = node.op_type == "Gemm";
        let x = self.need(node, 0, "A")?;
        let b = self.constant(node, 1, "B")?;
        let (alpha, beta, trans_b) = if gemm {
            if at.int("transA", 0)? != 0 {
                return Err("attribute transA = 1 is not supported".into());
            }
            (
                at.float("alpha", 1.0)? as f64,
                at.float("beta", 1.0)? as f64,
                at.int("transB", 0)? != 0,
            )
        } else {
            (1.0, 1.0, false)
        };
        let [r, c] = b.dims[..] else {
            return Err(format!("weights of shape {:?} (2-D expected)", b.dims));
        };
        // Our layout: out x in.
        let (cout, cin, w) = if trans_b {
            (r, c, b.data.iter().map(|v| v * alpha).collect::<Vec<_>>())
        } else {
            // in x out to out x in (weights: not a probe, so no size cap).
            let w = (0..c)
                .flat_map(|o| (0..r).map(move |i| (o, i)))
                .map(|(o, i)| b.data[i * c + o] * alpha)
                .collect();
            (c, r, w)
        };
        let bias = if gemm {
            match self.arg(node, 2)? {
                None => vec![0.0; cout],
                Some(Val::Const(t)) => per_output(&t, cout, false)?
                    .into_iter()
                    .map(|v| v * beta)
                    .collect(),
                Some(_) => return Err("input 2 (C) is not a constant".into()),
            }
        } else {
            vec![0.0; cout]
        };
        let mut s = match x {
            Val::Stack(s) if s.family == Family::Mlp && s.activated => s,
            Val::Stack(_) => {
                return Err("follows a layer without an activation between them".into())
            }
            Val::Image => {
                let d = &self.image.dims;
                if d.len() != 2 || d[1].is_none() {
                    return Err(format!(
                        "reads graph input {:?} of shape {} (N x D, D fixed: an MLP takes \
                         flattened patches)",
                        self.image.name,
                        show_dims(d)
                    ));
                }
                Box::new(self.new_stack(Family::Mlp, Frame::PLAIN, vec![0], None))
            }
            v @ Val::Probe { back: false, .. } => {
                let (t, _) = self.probe(v)?;
                let n = t.data.len();
                let flat = t.dims.len() == 2
                    && t.dims[0] == 1
                    && t.data.iter().enumerate().all(|(i, &v)| v == i as f64);
                if !flat {
                    return Err(format!(
                        "reads the input rearranged to shape {:?}, not flattened in order \
                         ({n} values)",
                        t.dims
                    ));
                }
                Box::new(self.new_stack(Family::Mlp, Frame::PLAIN, vec![0], None))
            }
            _ => return Err("input A is not the input patches or an activation's output".into()),
        };
        let have = match s.layers.last() {
            Some(l) => l.cout,
            None => self.image_width(),
        };
        if cin != have {
            return Err(format!("takes {cin} inputs but is given {have}"));
        }
        s.layers.push(Lin {
            cin,
            cout,
            k: 1,
            w,
            b: bias,
            bn: false,
        });
        s.activated = false;
        s.bias_pending = !gemm;
        Ok(Val::Stack(s))
    }

    /// The MLP's input width: the product of the image input's fixed dimensions after the
    /// batch.
    fn image_width(&self) -> usize {
        self.image.dims[1..]
            .iter()
            .map(|d| d.unwrap_or(0))
            .product()
    }

    fn add_bias(&mut self, node: &'g NodeProto) -> Result<Val, String> {
        let a = self.need(node, 0, "A")?;
        let b = self.need(node, 1, "B")?;
        let (s, t) = match (a, b) {
            (Val::Stack(s), Val::Const(t)) | (Val::Const(t), Val::Stack(s)) => (s, t),
            _ => {
                return Err(
                    "adds something other than a constant bias to a layer's output \
                            (skip connections are not supported)"
                        .into(),
                )
            }
        };
        let mut s = s;
        if s.activated {
            return Err("adds a bias after an activation".into());
        }
        let l = s.layers.last_mut().expect("a layer");
        let add = per_output(&t, l.cout, s.family == Family::Cnn)?;
        l.b.iter_mut().zip(add).for_each(|(b, a)| *b += a);
        s.bias_pending = false;
        Ok(Val::Stack(s))
    }
}

impl Stack {
    /// Channels (or width) of the stack's current output.
    fn channels(&self) -> usize {
        match self.layers.last() {
            Some(l) => l.cout,
            None => self.frame.in_channels(),
        }
    }
}

/// A bias of `n` values from a constant broadcast over one axis: `[n]`, `[1, n]` or a
/// scalar; for a convolution also `[n, 1, 1]` and `[1, n, 1, 1]`.
fn per_output(t: &Tensor, n: usize, conv: bool) -> Result<Vec<f64>, String> {
    let d = &t.dims[..];
    let ok = match d {
        [] | [1] => return Ok(vec![t.data[0]; n]),
        [m] | [1, m] => *m == n && !conv,
        [m, 1, 1] | [1, m, 1, 1] => *m == n && conv,
        _ => false,
    };
    if ok {
        Ok(t.data.clone())
    } else {
        Err(format!("bias of shape {d:?} for {n} outputs"))
    }
}

fn wrap(t: Tensor, kind: Option<bool>) -> Val {
    match kind {
        None => Val::Const(t),
        Some(back) => Val::Probe { t, back },
    }
}

pub(super) fn ints(t: &Tensor) -> Result<Vec<i64>, String> {
    t.ints()
        .ok_or_else(|| "an integer constant holds a fraction".into())
}

pub(super) fn block(at: &mut Attrs) -> Result<usize, String> {
    let b = at.int("blocksize", 0)?;
    if !(1..=crate::model::frame::MAX_UNSHUFFLE as i64).contains(&b) {
        return Err(format!(
            "blocksize {b} (1 to {} supported)",
            crate::model::frame::MAX_UNSHUFFLE
        ));
    }
    Ok(b as usize)
}

pub(super) fn unsqueeze(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    if dims.len() + axes.len() > MAX_RANK {
        return Err(format!(
            "a result of rank {} (at most {MAX_RANK})",
            dims.len() + axes.len()
        ));
    }
    let r = (dims.len() + axes.len()) as i64;
    let mut ax: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + r } else { a })
        .collect();
    ax.sort_unstable();
    if ax.iter().any(|&a| !(0..r).contains(&a)) || ax.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} for rank {}", dims.len()));
    }
    let mut it = dims.iter();
    Ok((0..r)
        .map(|i| {
            if ax.contains(&i) {
                1
            } else {
                *it.next().expect("rank")
            }
        })
        .collect())
}

pub(super) fn squeeze(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let r = dims.len() as i64;
    let ax: Vec<i64> = match axes {
        Some(a) => a.iter().map(|&a| if a < 0 { a + r } else { a }).collect(),
        None => (0..r).filter(|&i| dims[i as usize] == 1).collect(),
    };
    if ax
        .iter()
        .any(|&a| !(0..r).contains(&a) || dims[a as usize] != 1)
    {
        return Err(format!(
            "axes {ax:?} of shape {dims:?} are not all of size 1"
        ));
    }
    Ok((0..r)
        .filter(|i| !ax.contains(i))
        .map(|i| dims[i as usize])
        .collect())
}

/// A `Constant` node's value.
pub(super) fn constant_node(at: &mut Attrs) -> Result<Tensor, String> {
    let mut found = Vec::new();
    if let Some(a) = at.get("value", attr_type::TENSOR)? {
        found.push(Tensor::from_proto(
            a.t.as_ref().ok_or("value has no tensor")?,
            MAX_PROBE,
        )?);
    }
    if let Some(a) = at.get("value_float", attr_type::FLOAT)? {
        found.push(Tensor::scalar(a.f as f64));
    }
    if let Some(a) = at.get("value_int", attr_type::INT)? {
        found.push(Tensor::scalar(a.i as f64));
    }
    let lists = ["value_floats", "value_ints"];
    if at
        .list
        .iter()
        .any(|a| lists.contains(&a.name.as_str()) && a.floats.is_empty() && a.ints.is_empty())
    {
        return Err("has an empty value".into());
    }
    if let Some(a) = at.get("value_floats", attr_type::FLOATS)? {
        found.push(Tensor::new(
            vec![a.floats.len()],
            a.floats.iter().map(|&v| v as f64).collect(),
        ));
    }
    if let Some(a) = at.get("value_ints", attr_type::INTS)? {
        found.push(Tensor::new(
            vec![a.ints.len()],
            a.ints.iter().map(|&v| v as f64).collect(),
        ));
    }
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => Err("has no value (value, value_float(s) or value_int(s) supported)".into()),
        _ => Err("has more than one value".into()),
    }
}

/// A frame, the graph's channel for each of its input channels, and the sub-images' size.
type Unshuffled = (Frame, Vec<usize>, (usize, usize));

/// Reads the first convolution's input, a probe of the image (position y * W + x) and the
/// noise level (`MAP`), as a pixel-unshuffle by r with an optional map channel: the frame,
/// for each of the frame's input channels the probe's channel, and the sub-image size.
fn unshuffle_order(t: &Tensor, image: &Input) -> Result<Unshuffled, String> {
    let bad = |why: String| {
        format!(
            "input X is not the image pixel-unshuffled, with a noise map as one more channel \
             ({why})"
        )
    };
    let [1, c, h, w] = t.dims[..] else {
        return Err(bad(format!("shape {:?}", t.dims)));
    };
    let (big_h, big_w) = match image.dims[..] {
        [_, Some(1), Some(a), Some(b)] => (a, b),
        _ => {
            return Err(bad(format!(
                "image input of shape {}",
                show_dims(&image.dims)
            )))
        }
    };
    // Sub-images of 1 x 1 would make any reshape look like an unshuffle.
    if h < 2 || w < 2 || big_h % h != 0 || big_h / h != big_w / w.max(1) || big_w % w != 0 {
        return Err(bad(format!("{h}x{w} maps from a {big_h}x{big_w} image")));
    }
    let r = big_h / h;
    let frame_r = Frame {
        unshuffle: r,
        noise_map: false,
    };
    frame_r.validate().map_err(bad)?;
    let mut sub = vec![None; r * r];
    let mut map = None;
    for ch in 0..c {
        let block = &t.data[ch * h * w..(ch + 1) * h * w];
        if block.iter().all(|&v| v == MAP) {
            if map.replace(ch).is_some() {
                return Err(bad("two noise-map channels".into()));
            }
            continue;
        }
        let v0 = block[0];
        if v0 < 0.0 {
            return Err(bad(format!(
                "channel {ch} mixes the image and the noise level"
            )));
        }
        let (dy, dx) = (v0 as usize / big_w, v0 as usize % big_w);
        let fits = dy < r
            && dx < r
            && (0..h).all(|y| {
                (0..w).all(|x| block[y * w + x] == ((y * r + dy) * big_w + x * r + dx) as f64)
            });
        if !fits {
            return Err(bad(format!("channel {ch} is not one sub-image")));
        }
        let q = dy + r * dx;
        if sub[q].replace(ch).is_some() {
            return Err(bad(format!("sub-image ({dy}, {dx}) appears twice")));
        }
    }
    let mut perm: Vec<usize> = sub
        .iter()
        .map(|s| s.ok_or_else(|| bad("a sub-image is missing".into())))
        .collect::<Result<_, _>>()?;
    perm.extend(map);
    let frame = Frame {
        unshuffle: r,
        noise_map: map.is_some(),
    };
    Ok((frame, perm, (h, w)))
}
