//! The walk of an ONNX graph onto a CNN graph ([`crate::model::graph`], docs/graph.md): the
//! networks the chain walk ([`super::graph`]) refuses, with branches, strides, transposed
//! convolutions, poolings, resizes and other activations. Every value is a constant of the
//! file or a tensor of the graph (a node's output); shapes are checked as nodes are read, so
//! a refusal names the node where the network stops making sense. A batch norm, or a
//! constant `Mul`/`Add`/`Sub`/`Div`, whose input is a convolution's output read by nothing
//! else is folded into that convolution; elsewhere it is a per-channel affine node.

use std::collections::HashMap;

use super::chain::{
    block, constant_node, input_of, ints, show_dims, squeeze, unsqueeze, Attrs, Refusal,
};
use super::proto::{GraphProto, NodeProto};
use super::tensor::Tensor;
use crate::model::graph::shape::{infer, Extent};
use crate::model::graph::{
    ConvOp, Coords, Interp, Node, Op, Resize, Rounding, Shape, Window, MAX_KERNEL, MAX_NODES,
};

/// The ops a CNN graph is read from, for the message refusing any other.
pub const GRAPH_OPS: &str = "Conv, ConvTranspose, BatchNormalization, Add, Sub, Mul and Div \
     (by constants; Add and Sub also of two maps), Concat (channels), MaxPool, AveragePool, \
     Resize and Upsample (whole scales), DepthToSpace, SpaceToDepth, Relu, LeakyRelu, PRelu, \
     Clip, Identity, Dropout, Constant, and Reshape, Squeeze, Unsqueeze, Cast of constants";

#[derive(Clone, Debug)]
enum Val {
    Const(Tensor),
    /// A tensor of the graph (its node's index).
    Map(usize),
}

/// A CNN graph read from a file: its nodes and its output tensor.
pub struct Walked {
    pub nodes: Vec<Node>,
    pub output: usize,
}

struct Dag<'g> {
    vals: HashMap<&'g str, Val>,
    nodes: Vec<Node>,
    shapes: Vec<Shape>,
    /// Readers of each value of the file (the graph's output counts as one).
    uses: HashMap<&'g str, usize>,
    /// The file's name for each tensor: a fold keeps the tensor and takes the new name.
    names: Vec<&'g str>,
    opset: i64,
    /// Constant values copied so far ([`MAX_COPIED`]).
    copied: std::cell::Cell<usize>,
    /// The node being read, and the node that made each tensor (name or `#index`, op).
    label: (String, String),
    labels: Vec<(String, String)>,
}

/// Most constant values the walk may copy, in all: a network's weights are copied once each
/// into its nodes (at most `MAX_VALUES` of them), so that a file reading one large constant
/// from many nodes can neither fill memory nor keep the reader busy.
const MAX_COPIED: usize = crate::model::graph::MAX_VALUES;

type R<T> = Result<T, Refusal>;

/// Walks `g` (its initializers read into `consts`) onto a CNN graph.
pub fn walk<'g>(g: &'g GraphProto, consts: HashMap<&'g str, Tensor>, opset: i64) -> R<Walked> {
    if g.node.len() > MAX_NODES {
        return Err(Refusal::graph(format!(
            "{} nodes (at most {MAX_NODES} in a CNN graph)",
            g.node.len()
        )));
    }
    let inputs: Vec<_> = g
        .input
        .iter()
        .filter(|i| !consts.contains_key(i.name.as_str()))
        .collect();
    let [x] = inputs[..] else {
        return Err(Refusal::graph(format!(
            "the graph has {} inputs; a CNN graph takes one, the image",
            inputs.len()
        )));
    };
    let image = input_of(x)?;
    let d = &image.dims;
    if d.len() != 4 || d[1] != Some(1) || d[0].is_some_and(|n| n != 1) {
        return Err(Refusal::graph(format!(
            "graph input {:?} has shape {} (1 x 1 x H x W, one grey image, expected)",
            image.name,
            show_dims(d)
        )));
    }
    let [out] = &g.output[..] else {
        return Err(Refusal::graph(format!(
            "the graph has {} outputs (one, the denoised image, expected)",
            g.output.len()
        )));
    };
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    *uses.entry(out.name.as_str()).or_default() += 1;
    let mut w = Dag {
        vals: consts
            .into_iter()
            .map(|(k, t)| (k, Val::Const(t)))
            .collect(),
        nodes: vec![Node {
            op: Op::Input,
            inputs: Vec::new(),
        }],
        shapes: vec![Shape::image(1)],
        uses,
        names: vec![x.name.as_str()],
        opset,
        copied: Default::default(),
        label: Default::default(),
        labels: vec![Default::default()],
    };
    w.vals.insert(x.name.as_str(), Val::Map(0));
    for (i, node) in g.node.iter().enumerate() {
        let label = if node.name.is_empty() {
            format!("#{i}")
        } else {
            node.name.clone()
        };
        w.label = (label.clone(), node.op_type.clone());
        w.node(node).map_err(|msg| Refusal {
            node: Some((label, node.op_type.clone())),
            msg,
            at: i,
        })?;
    }
    // A tensor nothing reads would still cost its computation in a secure run.
    let mut read = vec![false; w.nodes.len()];
    w.nodes
        .iter()
        .flat_map(|n| &n.inputs)
        .for_each(|&t| read[t] = true);
    let whole = |msg: String| Refusal {
        at: g.node.len(),
        ..Refusal::graph(msg)
    };
    let output = match w.vals.get(out.name.as_str()) {
        Some(Val::Map(t)) if *t > 0 => *t,
        Some(_) => {
            return Err(whole(format!(
                "graph output {:?} is a constant or the image itself",
                out.name
            )))
        }
        None => {
            return Err(whole(format!(
                "graph output {:?} is not computed",
                out.name
            )))
        }
    };
    read[output] = true;
    if let Some(t) = read.iter().position(|r| !r) {
        return Err(Refusal {
            node: Some(w.labels[t].clone()),
            msg: "its output is read by nothing (a dangling branch)".into(),
            at: g.node.len(),
        });
    }
    if w.shapes[output] != Shape::image(1) {
        return Err(whole(format!(
            "the graph's output is {} (one channel at the image's resolution expected)",
            w.shapes[output].describe()
        )));
    }
    Ok(Walked {
        nodes: w.nodes,
        output,
    })
}

impl<'g> Dag<'g> {
    fn arg(&self, node: &'g NodeProto, i: usize) -> Result<Option<Val>, String> {
        let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        match self.vals.get(name.as_str()) {
            Some(Val::Const(t)) => {
                let n = self
                    .copied
                    .get()
                    .saturating_add(t.data.len() + t.dims.len());
                self.copied.set(n);
                if n > MAX_COPIED {
                    return Err(format!(
                        "the graph's constants come to more than {MAX_COPIED} values copied \
                         (a denoiser's weights are read once each)"
                    ));
                }
                Ok(Some(Val::Const(t.clone())))
            }
            Some(v) => Ok(Some(v.clone())),
            None => Err(format!(
                "input {name:?} is not defined before this node (the graph is not in \
                 topological order, or has a cycle)"
            )),
        }
    }

    fn need(&self, node: &'g NodeProto, i: usize, what: &str) -> Result<Val, String> {
        self.arg(node, i)?
            .ok_or_else(|| format!("input {i} ({what}) is missing"))
    }

    fn constant(&self, node: &'g NodeProto, i: usize, what: &str) -> Result<Tensor, String> {
        match self.need(node, i, what)? {
            Val::Const(t) => Ok(t),
            Val::Map(_) => Err(format!(
                "input {i} ({what}) must be a constant of the file, not computed from the image"
            )),
        }
    }

    fn map(&self, node: &'g NodeProto, i: usize, what: &str) -> Result<usize, String> {
        match self.need(node, i, what)? {
            Val::Map(t) => Ok(t),
            Val::Const(_) => Err(format!(
                "input {i} ({what}) is a constant where a feature map was expected"
            )),
        }
    }

    /// Adds a node reading `inputs`, its shape checked.
    fn push(&mut self, op: Op, inputs: Vec<usize>, name: &'g str) -> Result<Val, String> {
        let ins: Vec<Shape> = inputs.iter().map(|&t| self.shapes[t]).collect();
        let s = infer(&op, &ins)?;
        check_op_alone(&op)?;
        self.nodes.push(Node { op, inputs });
        self.shapes.push(s);
        self.names.push(name);
        self.labels.push(self.label.clone());
        Ok(Val::Map(self.nodes.len() - 1))
    }

    /// The convolution tensor `t` is the output of, when only `reader` reads it (so that a
    /// per-channel affine map after it can be folded into its weights).
    fn foldable(&self, t: usize, reader: &'g NodeProto) -> bool {
        let name = self.names[t];
        matches!(&self.nodes[t].op, Op::Conv(c) if !c.transposed)
            && self.uses.get(name) == Some(&1)
            && reader.input.first().is_some_and(|i| i == name)
    }

    fn node(&mut self, node: &'g NodeProto) -> Result<(), String> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(format!(
                "is in domain {:?}; only standard ONNX ops are supported ({GRAPH_OPS})",
                node.domain
            ));
        }
        let mut at = Attrs::new(node)?;
        let op = node.op_type.as_str();
        let most = match op {
            "Constant" => 0,
            "Relu" | "LeakyRelu" | "Identity" | "Cast" | "DepthToSpace" | "SpaceToDepth"
            | "MaxPool" | "AveragePool" => 1,
            "Add" | "Sub" | "Mul" | "Div" | "PRelu" | "Reshape" | "Unsqueeze" | "Squeeze"
            | "Upsample" => 2,
            "Conv" | "ConvTranspose" | "Dropout" | "Clip" => 3,
            "Resize" => 4,
            "BatchNormalization" => 5,
            _ => usize::MAX,
        };
        if node.input.len() > most {
            return Err(format!(
                "has {} inputs ({op} takes at most {most})",
                node.input.len()
            ));
        }
        let out = node
            .output
            .first()
            .filter(|n| !n.is_empty())
            .ok_or("has no output")?
            .as_str();
        if let Some(extra) = node.output[1..].iter().find(|n| !n.is_empty()) {
            return Err(format!(
                "has a second output {extra:?} (training outputs and pooling indices are not \
                 supported)"
            ));
        }
        let v = match op {
            "Identity" => self.need(node, 0, "input")?,
            "Dropout" => {
                at.int("seed", 0)?;
                at.float("ratio", 0.5)?;
                if node.input.get(2).is_some_and(|n| !n.is_empty()) {
                    let on = self.constant(node, 2, "training_mode")?;
                    if on.data.iter().any(|&v| v != 0.0) {
                        return Err("training_mode is on".into());
                    }
                }
                self.need(node, 0, "data")?
            }
            "Constant" => Val::Const(constant_node(&mut at)?),
            "Cast" => {
                let to = at.int("to", 1)?;
                at.int("saturate", 1)?;
                match (self.need(node, 0, "input")?, to) {
                    (v, 1 | 11) => v,
                    (Val::Const(t), 6 | 7) => Val::Const(Tensor::new(
                        t.dims,
                        t.data.iter().map(|v| v.trunc()).collect(),
                    )),
                    _ => return Err(format!("casts a feature map to type {to}")),
                }
            }
            "Reshape" | "Unsqueeze" | "Squeeze" => {
                let Val::Const(t) = self.need(node, 0, "data")? else {
                    return Err(format!(
                        "{op} of a feature map (a CNN graph keeps its maps' shapes; only \
                         constants may be reshaped)"
                    ));
                };
                let (dims, allow): (Vec<i64>, bool) = match op {
                    "Reshape" => {
                        let allow = at.int("allowzero", 0)? != 0;
                        (ints(&self.constant(node, 1, "shape")?)?, allow)
                    }
                    _ => {
                        let from_input = node.input.get(1).is_some_and(|n| !n.is_empty());
                        let axes = match at.ints("axes")? {
                            Some(_) if from_input => {
                                return Err("has axes both as an attribute and as an input".into())
                            }
                            Some(a) => Some(a),
                            None if node.input.len() > 1 => {
                                Some(ints(&self.constant(node, 1, "axes")?)?)
                            }
                            None => None,
                        };
                        let d = if op == "Unsqueeze" {
                            unsqueeze(&t.dims, &axes.ok_or("has no axes")?)?
                        } else {
                            squeeze(&t.dims, axes.as_deref())?
                        };
                        (d.iter().map(|&v| v as i64).collect(), true)
                    }
                };
                Val::Const(t.reshape(&dims, allow)?)
            }
            "Conv" | "ConvTranspose" => self.conv(node, &mut at, op == "ConvTranspose", out)?,
            "BatchNormalization" => {
                let eps = at.float("epsilon", 1e-5)? as f64;
                at.float("momentum", 0.9)?;
                if at.int("training_mode", 0)? != 0 {
                    return Err(
                        "attribute training_mode = 1 (export the model in eval mode)".into(),
                    );
                }
                let x = self.map(node, 0, "X")?;
                let c = self.shapes[x].c;
                let mut p = Vec::new();
                for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
                    let t = self.constant(node, i, what)?;
                    if t.data.len() != c {
                        return Err(format!(
                            "input {i} ({what}) has {} values for {c} channels",
                            t.data.len()
                        ));
                    }
                    p.push(t.data);
                }
                let mut scale = Vec::with_capacity(c);
                for (o, (&gamma, &var)) in p[0].iter().zip(&p[3]).enumerate() {
                    let v = var + eps;
                    let g = gamma / v.sqrt();
                    if v <= 0.0 || !g.is_finite() {
                        return Err(format!(
                            "channel {o}: variance + epsilon = {v} is not positive"
                        ));
                    }
                    scale.push(g);
                }
                let shift = (0..c).map(|o| p[1][o] - p[2][o] * scale[o]).collect();
                self.affine(node, x, scale, shift, out)?
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let a = self.need(node, 0, "A")?;
                let b = self.need(node, 1, "B")?;
                match (a, b) {
                    (Val::Map(x), Val::Map(y)) => match op {
                        "Add" => self.push(Op::Add, vec![x, y], out)?,
                        "Sub" => self.push(Op::Sub, vec![x, y], out)?,
                        _ => {
                            return Err(format!(
                                "{op} of two feature maps (a product of secret values; only \
                                 constant factors are supported)"
                            ))
                        }
                    },
                    (Val::Map(x), Val::Const(t)) => {
                        let k = per_channel(&t, self.shapes[x].c)?;
                        let ones = vec![1.0];
                        let (scale, shift) = match op {
                            "Add" => (ones, k),
                            "Sub" => (ones, k.iter().map(|v| -v).collect()),
                            "Mul" => (k, vec![0.0]),
                            _ => {
                                if k.contains(&0.0) {
                                    return Err("divides by zero".into());
                                }
                                (k.iter().map(|v| 1.0 / v).collect(), vec![0.0])
                            }
                        };
                        self.affine(node, x, scale, shift, out)?
                    }
                    (Val::Const(t), Val::Map(x)) => {
                        let k = per_channel(&t, self.shapes[x].c)?;
                        let (scale, shift) = match op {
                            "Add" => (vec![1.0], k),
                            "Sub" => (vec![-1.0], k),
                            "Mul" => (k, vec![0.0]),
                            _ => return Err("divides a constant by a feature map".into()),
                        };
                        self.affine(node, x, scale, shift, out)?
                    }
                    (Val::Const(_), Val::Const(_)) => {
                        return Err(format!(
                            "{op} of two constants (export with constant folding on)"
                        ))
                    }
                }
            }
            "Concat" => {
                if node.input.is_empty() {
                    return Err("has no inputs".into());
                }
                let axis = at.int("axis", i64::MIN)?;
                if axis != 1 && axis != -3 {
                    return Err(format!(
                        "attribute axis = {axis}: only channels (1) are concatenated"
                    ));
                }
                let ts = (0..node.input.len())
                    .map(|i| self.map(node, i, "input"))
                    .collect::<Result<Vec<_>, _>>()?;
                self.push(Op::Concat, ts, out)?
            }
            "MaxPool" | "AveragePool" => {
                let x = self.map(node, 0, "X")?;
                let kernel = kernel_of(&mut at, None)?;
                if at.int("ceil_mode", 0)? != 0 {
                    return Err("attribute ceil_mode = 1 (export with ceil_mode=False)".into());
                }
                let window = self.window(&mut at, x, kernel, false)?;
                let p = if op == "MaxPool" {
                    if at.int("storage_order", 0)? != 0 {
                        return Err("attribute storage_order = 1".into());
                    }
                    Op::MaxPool { window }
                } else {
                    let count_pad = at.int("count_include_pad", 0)? != 0;
                    Op::AvgPool { window, count_pad }
                };
                self.push(p, vec![x], out)?
            }
            "Resize" | "Upsample" => self.resize(node, &mut at, out)?,
            "DepthToSpace" => {
                let x = self.map(node, 0, "input")?;
                let b = block(&mut at)?;
                let crd = match at.string("mode", "DCR")?.as_str() {
                    "DCR" => false,
                    "CRD" => true,
                    m => return Err(format!("mode {m} (DCR or CRD)")),
                };
                self.push(Op::DepthToSpace { block: b, crd }, vec![x], out)?
            }
            "SpaceToDepth" => {
                let x = self.map(node, 0, "input")?;
                let b = block(&mut at)?;
                self.push(Op::SpaceToDepth { block: b }, vec![x], out)?
            }
            "Relu" => {
                let x = self.map(node, 0, "X")?;
                self.push(Op::Relu, vec![x], out)?
            }
            "LeakyRelu" => {
                let alpha = at.float("alpha", 0.01)? as f64;
                let x = self.map(node, 0, "X")?;
                self.push(Op::LeakyRelu { alpha }, vec![x], out)?
            }
            "PRelu" => {
                let x = self.map(node, 0, "X")?;
                let slope = per_channel(&self.constant(node, 1, "slope")?, self.shapes[x].c)?;
                self.push(Op::PRelu { slope }, vec![x], out)?
            }
            "Clip" => {
                let x = self.map(node, 0, "input")?;
                let (lo, hi) = if self.opset < 11 {
                    let f = |v: f32| (v.is_finite() && v.abs() < f32::MAX).then_some(v as f64);
                    (f(at.float("min", f32::MIN)?), f(at.float("max", f32::MAX)?))
                } else {
                    let bound = |i: usize, what| -> Result<Option<f64>, String> {
                        match self.arg(node, i)? {
                            None => Ok(None),
                            Some(Val::Const(t)) if t.data.len() == 1 => Ok(Some(t.data[0])),
                            Some(_) => Err(format!("input {i} ({what}) is not a constant scalar")),
                        }
                    };
                    (bound(1, "min")?, bound(2, "max")?)
                };
                self.push(Op::Clip { lo, hi }, vec![x], out)?
            }
            other => return Err(refusal_of(other)),
        };
        at.done(op)?;
        if self.vals.contains_key(out) {
            return Err(format!("redefines {out:?}"));
        }
        self.vals.insert(out, v);
        Ok(())
    }

    /// A per-channel `x * scale + shift`: folded into the convolution that makes `x` when
    /// nothing else reads it, else a node.
    fn affine(
        &mut self,
        node: &'g NodeProto,
        x: usize,
        scale: Vec<f64>,
        shift: Vec<f64>,
        out: &'g str,
    ) -> Result<Val, String> {
        if self.foldable(x, node) {
            let Op::Conv(c) = &mut self.nodes[x].op else {
                unreachable!("foldable checks the op")
            };
            let at = |v: &[f64], o: usize| v[if v.len() == 1 { 0 } else { o }];
            let row = c.row_len();
            for o in 0..c.cout {
                let g = at(&scale[..], o);
                c.w[o * row..(o + 1) * row].iter_mut().for_each(|w| *w *= g);
                c.b[o] = c.b[o] * g + at(&shift[..], o);
            }
            self.names[x] = out;
            return Ok(Val::Map(x));
        }
        self.push(Op::Affine { scale, shift }, vec![x], out)
    }

    /// A window's strides, dilations and pads (`auto_pad` resolved on `x`'s extents).
    fn window(
        &self,
        at: &mut Attrs<'g>,
        x: usize,
        kernel: [usize; 2],
        transposed: bool,
    ) -> Result<Window, String> {
        let pair = |v: Option<Vec<i64>>, what: &str| -> Result<[usize; 2], String> {
            match v.as_deref() {
                None => Ok([1, 1]),
                Some(&[a, b]) if a >= 1 && b >= 1 && a <= 64 && b <= 64 => {
                    Ok([a as usize, b as usize])
                }
                Some(v) => Err(format!("attribute {what} = {v:?} (two positive values)")),
            }
        };
        let stride = pair(at.ints("strides")?, "strides")?;
        let dilation = pair(at.ints("dilations")?, "dilations")?;
        let auto = at.string("auto_pad", "NOTSET")?;
        let given = at.ints("pads")?;
        let pads = match auto.as_str() {
            "NOTSET" => match given.as_deref() {
                None => [0; 4],
                Some(&[a, b, c, d]) if [a, b, c, d].iter().all(|&p| (0..=64).contains(&p)) => {
                    [a as usize, b as usize, c as usize, d as usize]
                }
                Some(p) => return Err(format!("attribute pads = {p:?} (four values, 0 to 64)")),
            },
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" if !transposed => {
                let axes = self.shapes[x].axes();
                let mut p = [0; 4];
                for a in 0..2 {
                    let (p0, p1) = same_pads(
                        axes[a],
                        kernel[a],
                        stride[a],
                        dilation[a],
                        auto == "SAME_UPPER",
                    );
                    p[a] = p0;
                    p[a + 2] = p1;
                }
                p
            }
            other => {
                return Err(format!(
                    "attribute auto_pad = {other} is not supported here"
                ))
            }
        };
        Ok(Window {
            kernel,
            stride,
            dilation,
            pads,
        })
    }

    fn conv(
        &mut self,
        node: &'g NodeProto,
        at: &mut Attrs<'g>,
        transposed: bool,
        out: &'g str,
    ) -> Result<Val, String> {
        let x = self.map(node, 0, "X")?;
        let wt = self.constant(node, 1, "W")?;
        let [d0, d1, kh, kw] = wt.dims[..] else {
            return Err(format!(
                "weights of shape {:?} (a 2-D convolution expected)",
                wt.dims
            ));
        };
        let kernel = kernel_of(at, Some([kh, kw]))?;
        let groups = at.int("group", 1)?;
        if !(1..=crate::model::cnn::MAX_CHANNELS as i64).contains(&groups) {
            return Err(format!("attribute group = {groups}"));
        }
        let groups = groups as usize;
        let (cin, cout) = if transposed {
            (d0, d1 * groups)
        } else {
            (d1 * groups, d0)
        };
        let mut output_padding = [0, 0];
        if transposed {
            if at.ints("output_shape")?.is_some() {
                return Err(
                    "attribute output_shape (it fixes the example's size; give output_padding)"
                        .into(),
                );
            }
            if let Some(v) = at.ints("output_padding")? {
                match v[..] {
                    [a, b] if (0..64).contains(&a) && (0..64).contains(&b) => {
                        output_padding = [a as usize, b as usize]
                    }
                    _ => return Err(format!("attribute output_padding = {v:?}")),
                }
            }
        }
        let window = self.window(at, x, kernel, transposed)?;
        let b = match self.arg(node, 2)? {
            None => vec![0.0; cout],
            Some(Val::Const(t)) if t.data.len() == cout && t.dims.len() == 1 => t.data,
            Some(_) => return Err(format!("input 2 (B) is not a constant of {cout} values")),
        };
        let op = Op::Conv(ConvOp {
            cin,
            cout,
            groups,
            window,
            output_padding,
            transposed,
            w: wt.data,
            b,
        });
        self.push(op, vec![x], out)
    }

    fn resize(
        &mut self,
        node: &'g NodeProto,
        at: &mut Attrs<'g>,
        out: &'g str,
    ) -> Result<Val, String> {
        let x = self.map(node, 0, "X")?;
        let upsample = node.op_type == "Upsample";
        if !upsample && self.opset < 11 {
            return Err("Resize of opset 10 (export with opset 11 or later)".into());
        }
        if upsample && self.opset > 9 {
            return Err("Upsample after opset 9, where Resize replaced it".into());
        }
        let mode = at.string("mode", "nearest")?;
        let (coords, rounding, scales_at) = if upsample {
            // Opset 9's Upsample: source position i / r, rounded down.
            (Coords::Asymmetric, Rounding::Floor, 1)
        } else {
            if at.int("antialias", 0)? != 0 {
                return Err("attribute antialias = 1".into());
            }
            if at.ints("axes")?.is_some() {
                return Err("attribute axes (scales for every axis expected)".into());
            }
            at.float("cubic_coeff_a", -0.75)?;
            if at.int("exclude_outside", 0)? != 0 {
                return Err("attribute exclude_outside = 1".into());
            }
            at.float("extrapolation_value", 0.0)?;
            at.string("keep_aspect_ratio_policy", "stretch")?;
            let coords = match at
                .string("coordinate_transformation_mode", "half_pixel")?
                .as_str()
            {
                "half_pixel" => Coords::HalfPixel,
                "pytorch_half_pixel" => Coords::PytorchHalfPixel,
                "asymmetric" => Coords::Asymmetric,
                m => {
                    return Err(format!(
                        "coordinate_transformation_mode {m} (half_pixel, pytorch_half_pixel or \
                         asymmetric; align_corners=True depends on the image's size)"
                    ))
                }
            };
            let rounding = match at.string("nearest_mode", "round_prefer_floor")?.as_str() {
                "round_prefer_floor" => Rounding::RoundPreferFloor,
                "round_prefer_ceil" => Rounding::RoundPreferCeil,
                "floor" => Rounding::Floor,
                "ceil" => Rounding::Ceil,
                m => return Err(format!("nearest_mode {m}")),
            };
            if node.input.get(3).is_some_and(|n| !n.is_empty()) {
                return Err(
                    "input 3 (sizes) gives the output's size, which depends on the \
                            example; export with scale_factor"
                        .into(),
                );
            }
            (coords, rounding, 2)
        };
        let interp = match mode.as_str() {
            "nearest" => Interp::Nearest(rounding),
            "linear" | "bilinear" => Interp::Linear,
            m => return Err(format!("mode {m} (nearest or linear)")),
        };
        let s = self.constant(node, scales_at, "scales")?;
        let whole = |v: f64| (v.fract() == 0.0 && (1.0..=64.0).contains(&v)).then_some(v as usize);
        let scale = match s.data[..] {
            [n, c, h, w] if n == 1.0 && c == 1.0 => whole(h).zip(whole(w)).map(|(h, w)| [h, w]),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "scales {:?} (1, 1 and whole factors for height and width expected)",
                s.data
            )
        })?;
        self.push(
            Op::Resize(Resize {
                scale,
                interp,
                coords,
            }),
            vec![x],
            out,
        )
    }
}

/// The op's parameters as [`crate::model::graph::Graph::validate`] checks them, so that a
/// refusal names the node.
fn check_op_alone(op: &Op) -> Result<(), String> {
    crate::model::graph::check_op(op)
}

/// `kernel_shape`, checked against the weights' when there are any.
fn kernel_of(at: &mut Attrs, weights: Option<[usize; 2]>) -> Result<[usize; 2], String> {
    let given = at.ints("kernel_shape")?;
    let k = match (given.as_deref(), weights) {
        (Some(&[a, b]), Some(w)) if [a as usize, b as usize] == w => w,
        (None, Some(w)) => w,
        (Some(&[a, b]), None) if a >= 1 && b >= 1 => [a as usize, b as usize],
        (Some(v), Some(w)) => {
            return Err(format!(
                "attribute kernel_shape = {v:?} but W is {}x{}",
                w[0], w[1]
            ))
        }
        (v, None) => return Err(format!("attribute kernel_shape = {v:?} (two sizes)")),
    };
    // Checked here, where the file gives it, before SAME padding or a shape is computed
    // from it; the graph's own check (model::graph) stands for descriptions read elsewhere.
    if k.iter().any(|&s| s == 0 || s > MAX_KERNEL) {
        let from = if weights.is_some() {
            "W's shape"
        } else {
            "attribute kernel_shape"
        };
        return Err(format!(
            "{from} gives a {}x{} kernel (a CNN graph's are 1 to {MAX_KERNEL} a side)",
            k[0], k[1]
        ));
    }
    Ok(k)
}

/// ONNX's SAME padding on an axis of `H / stride + delta` positions: the total that makes
/// ceil(n / s) outputs, which depends on n mod s = delta mod s only.
fn same_pads(e: Extent, k: usize, s: usize, d: usize, upper: bool) -> (usize, usize) {
    let span = (d * (k - 1) + 1) as i64;
    let r = e.delta.rem_euclid(s as i64);
    let total = if r == 0 { span - s as i64 } else { span - r }.max(0) as usize;
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

/// A constant that is one value or one per channel of a map of `c` channels (shapes that
/// broadcast so: [], [1], [C, 1, 1], [1, C, 1, 1]).
fn per_channel(t: &Tensor, c: usize) -> Result<Vec<f64>, String> {
    let r = t.dims.len();
    let mut d = vec![1; 4usize.saturating_sub(r)];
    d.extend(&t.dims);
    if r > 4 || d[0] != 1 || d[2] != 1 || d[3] != 1 || (d[1] != 1 && d[1] != c) {
        return Err(format!(
            "a constant of shape {:?} for {c} channels (one value, or one per channel)",
            t.dims
        ));
    }
    Ok(t.data.clone())
}

/// Why an op outside [`GRAPH_OPS`] is refused.
fn refusal_of(op: &str) -> String {
    let why = match op {
        "InstanceNormalization"
        | "GroupNormalization"
        | "LayerNormalization"
        | "LpNormalization"
        | "MeanVarianceNormalization" => {
            "normalises by statistics of the image (a secret division and square root)"
        }
        "Softmax" | "LogSoftmax" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Pow" | "Erf"
        | "Gelu" | "HardSigmoid" | "HardSwish" | "Elu" | "Selu" | "Celu" | "Mish" | "Softplus"
        | "Softsign" => {
            "has no circuit inside a CNN graph (Relu, LeakyRelu, PRelu, Clip and max pooling \
             are the nonlinearities supported)"
        }
        "MatMul" | "Gemm" | "Einsum" | "Attention" | "MultiHeadAttention" => {
            "multiplies maps or flattens them (attention and dense layers are not CNN ops)"
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "ReduceMean" | "ReduceMax" | "ReduceSum" => {
            "pools over the whole image (its window depends on the image's size)"
        }
        "Pad" => "pads a map; give the padding to the convolution (padding=... in PyTorch)",
        "Slice" | "Crop" => "crops a map (the sizes of a CNN graph's maps follow its convolutions)",
        "Shape" | "ConstantOfShape" | "Expand" | "Tile" | "Gather" => {
            "computes sizes from a map's shape (export with constant scale factors, not sizes)"
        }
        _ => "is not supported in a CNN graph",
    };
    format!("op {op} {why}; CNN graphs read {GRAPH_OPS} (docs/graph.md)")
}
