//! A graph's public description (docs/graph.md, milestone 5): every op with its attributes
//! and wiring, none of its weights or constants. Model shares, their public headers and
//! triplet files carry it; every party rebuilds the fixed-point plan from it
//! (`GraphPlan::from_graph`), so no file can hand a server scales or rescalings that
//! disagree with the structure.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Graph, Node, Op, MAX_NODES};
use crate::model::mlp::ModelError;

/// What a header says of a graph: its nodes with their secret values removed (a
/// convolution's weights and biases, an affine map's scales and shifts, a PReLU's slopes;
/// a leaky ReLU's alpha and a clip's bounds are attributes, public), its output and the
/// noise level it was trained for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicGraph {
    pub nodes: Vec<Node>,
    pub output: usize,
    pub sigma: f64,
    /// The image's planes (absent in a gray graph's description written before colour).
    #[serde(default = "gray")]
    pub colours: usize,
}

fn gray() -> usize {
    1
}

impl Graph {
    /// The graph without its secret values.
    pub fn public(&self) -> PublicGraph {
        let mut nodes = self.nodes.clone();
        for n in &mut nodes {
            for v in values_mut(&mut n.op) {
                v.clear();
            }
        }
        PublicGraph {
            nodes,
            output: self.output,
            sigma: self.sigma,
            colours: self.colours,
        }
    }
}

impl PublicGraph {
    /// The graph to rebuild the plan from, checked whole ([`Graph::validate`], its
    /// convolutions' counts from their shapes): no convolution weight is made (a header is not
    /// trusted to size an allocation), an affine map's and a PReLU's values are one zero for
    /// every channel (the plan repeats it per channel, so the counts follow from the structure
    /// either way). A description that carries any value is refused: it is not a public one.
    pub fn graph(&self, path: &Path) -> Result<Graph, ModelError> {
        let inv = |msg: String| ModelError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let n = self.nodes.len();
        if !(2..=MAX_NODES).contains(&n) {
            return Err(inv(format!("a graph of {n} nodes (2 to {MAX_NODES})")));
        }
        let mut nodes = self.nodes.clone();
        for (i, node) in nodes.iter_mut().enumerate() {
            let name = node.op.name();
            if values_mut(&mut node.op).iter().any(|v| !v.is_empty()) {
                return Err(inv(format!(
                    "node {i} ({name}) carries weights or constants in a public graph \
                     description"
                )));
            }
            match &mut node.op {
                Op::Affine { scale, shift } => {
                    *scale = vec![0.0];
                    *shift = vec![0.0];
                }
                Op::PRelu { slope } => *slope = vec![0.0],
                _ => {}
            }
        }
        let g = Graph {
            nodes,
            output: self.output,
            colours: self.colours,
            sigma: self.sigma,
            fixed_point: None,
            window: None,
        };
        g.check(path, true)?;
        Ok(g)
    }
}

/// An op's secret values.
fn values_mut(op: &mut Op) -> Vec<&mut Vec<f64>> {
    match op {
        Op::Conv(c) => vec![&mut c.w, &mut c.b],
        Op::Affine { scale, shift } => vec![scale, shift],
        Op::PRelu { slope } => vec![slope],
        _ => Vec::new(),
    }
}
