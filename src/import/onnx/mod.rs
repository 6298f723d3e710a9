//! Models exported from PyTorch (or any framework) as ONNX: the graph is read with `prost`
//! over the messages of onnx.proto ([`proto`]) and mapped onto the project's two families
//! ([`chain`]): the patch MLP ([`Model`]) and the convolution stack of DnCNN and FFDNet
//! ([`Cnn`]). Batch norm is folded into its convolution and the pixel (un)shuffle's channel
//! order into the first and last convolutions' weights, all before anything is shared.
//! A network the chain walk refuses is walked as a CNN graph ([`dag`], [`Graph`]: U-Nets,
//! RED-CNN, DRUNet; docs/graph.md); when both refuse it, the refusal of the walk that read
//! further into the file is reported. Whatever else a graph holds is refused by node, op and
//! attribute. The settings a graph
//! does not carry (the MLP's mean shift, residual, aggregation; the noise level trained for)
//! are the model's `metadata_props`, with the keys of the `.safetensors` metadata.

mod chain;
mod dag;
pub mod proto;
mod tensor;

use std::collections::HashMap;
use std::io::Read;
use std::ops::RangeInclusive;
use std::path::Path;

use ndarray::{Array1, Array2};

use self::chain::{Act, Family, Refusal, Walked};
use self::tensor::Tensor;
use crate::model::cnn::{Cnn, CnnMeta, Conv};
use crate::model::graph::Graph;
use crate::model::mlp::{Activation, Layer, Model, ModelError};

pub use self::chain::SUPPORTED_OPS;
pub use self::dag::GRAPH_OPS;

/// Largest file accepted (the `.npz` reader's total).
pub const MAX_FILE: u64 = super::npz::MAX_TOTAL_BYTES;

/// What decoding may allocate beyond the file's own bytes: structs, names, shapes. DnCNN-S
/// needs about 60 KB.
const MAX_STRUCTURE: u64 = 64 << 20;

/// Versions of the standard op set whose ops the importer reads as it does (the ops'
/// attributes it checks are those of these versions; from 9 on, Reshape takes its shape as
/// an input and batch norm has no `spatial` switch left to change its meaning).
pub const OPSETS: RangeInclusive<i64> = 9..=23;

/// IR versions accepted (IR 3 brought op set imports).
const IR_VERSIONS: RangeInclusive<i64> = 3..=14;

/// A network read from an ONNX file.
#[derive(Debug)]
pub enum Net {
    Mlp(Model),
    Cnn(Cnn),
    /// A CNN graph (docs/graph.md): run in float so far.
    Graph(Graph),
}

/// True for a file named `.onnx` (ONNX has no magic number to tell it by).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn not_onnx(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::NotOnnx {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads the network in the ONNX file at `path`.
pub fn load(path: &Path) -> Result<Net, ModelError> {
    let bytes = read_capped(path)?;
    parse(path, &bytes)
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ModelError> {
    let open = |source| ModelError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(open)?;
    let size = file.metadata().map_err(open)?.len();
    if size > MAX_FILE {
        return Err(not_onnx(
            path,
            format!("{size} bytes; a model file may hold at most {MAX_FILE}"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(open)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(not_onnx(
            path,
            "the file grew past the size limit while being read",
        ));
    }
    Ok(bytes)
}

/// Reads a network from an ONNX file's bytes (`path` names it in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Net, ModelError> {
    let cost =
        proto::census(bytes).map_err(|e| not_onnx(path, format!("malformed protobuf: {e}")))?;
    // Weights take up to three times their bytes (a vector grown by pushes); the structure
    // around them, of a few KB in a denoiser, is what a hostile file would inflate.
    let allowed = 3 * bytes.len() as u64 + MAX_STRUCTURE;
    if cost > allowed {
        return Err(not_onnx(
            path,
            format!(
                "its structure would take {cost} bytes to read, more than {allowed} (three \
                 times its size and {MAX_STRUCTURE}; a denoiser's graph takes a few KB)"
            ),
        ));
    }
    let m = proto::decode(bytes).map_err(|e| not_onnx(path, format!("malformed protobuf: {e}")))?;
    if !IR_VERSIONS.contains(&m.ir_version) {
        return Err(not_onnx(
            path,
            format!(
                "IR version {} ({} to {} supported)",
                m.ir_version,
                IR_VERSIONS.start(),
                IR_VERSIONS.end()
            ),
        ));
    }
    let std_set: Vec<i64> = m
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .collect();
    let opset = match std_set[..] {
        [v] if OPSETS.contains(&v) => v,
        [v] => {
            return Err(not_onnx(
                path,
                format!(
                    "opset {v} of the standard domain ({} to {} supported; torch.onnx.export \
                     takes opset_version=17)",
                    OPSETS.start(),
                    OPSETS.end()
                ),
            ))
        }
        _ => {
            return Err(not_onnx(
                path,
                "no single opset of the standard domain is imported",
            ))
        }
    };
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| not_onnx(path, "the model has no graph"))?;
    let node_refusal = |r: Refusal| match r.node {
        Some((node, op)) => ModelError::OnnxNode {
            path: path.to_path_buf(),
            node,
            op,
            msg: r.msg,
        },
        None => not_onnx(path, r.msg),
    };
    let walked = match chain::walk(g, initializers(path, g)?) {
        Ok(w) => w,
        Err(chain) => {
            return match dag::walk(g, initializers(path, g)?, opset) {
                Ok(d) => Ok(Net::Graph(graph_net(path, d, &metadata(path, &m)?)?)),
                // On a tie the chain walk's reason stands for an op it reads (its messages
                // for those are the specific ones) and for a graph-wide refusal of the
                // graph walk (an MLP's input); otherwise the graph walk says why.
                Err(r)
                    if r.at > chain.at
                        || (r.at == chain.at && r.node.is_some() && !chain_reads(&chain)) =>
                {
                    Err(node_refusal(r))
                }
                Err(_) => Err(node_refusal(chain)),
            };
        }
    };
    let md = metadata(path, &m)?;
    let net = match walked.stack.family {
        Family::Mlp => Net::Mlp(mlp(path, walked, &md)?),
        Family::Cnn => Net::Cnn(cnn(path, walked, &md)?),
    };
    Ok(net)
}

/// Whether the chain walk refused a node whose op it reads.
fn chain_reads(r: &Refusal) -> bool {
    r.node.as_ref().is_some_and(|(_, op)| {
        SUPPORTED_OPS
            .split(", ")
            .any(|s| s.split(' ').next() == Some(op.as_str()))
    })
}

/// The graph's initializers, by name, checked finite (read again for a second walk).
fn initializers<'g>(
    path: &Path,
    g: &'g proto::GraphProto,
) -> Result<HashMap<&'g str, Tensor>, ModelError> {
    let mut consts: HashMap<&str, Tensor> = HashMap::new();
    for t in &g.initializer {
        let v = if no_roi(g, t) {
            Tensor::new(vec![0], Vec::new())
        } else {
            Tensor::from_proto(t, usize::MAX).map_err(|msg| ModelError::Tensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                msg,
            })?
        };
        if let Some(bad) = v.data.iter().position(|x| !x.is_finite()) {
            return Err(ModelError::Tensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                msg: format!("non-finite value at flat index {bad}"),
            });
        }
        if consts.insert(t.name.as_str(), v).is_some() {
            return Err(not_onnx(
                path,
                format!("initializer {:?} is defined twice", t.name),
            ));
        }
    }
    Ok(consts)
}

/// Whether `t` is an empty 1-D initializer read only as a `Resize`'s `roi` (input 1), as
/// exporters write "no roi" (torch's nearest up-sampling): it is taken as empty, where any
/// other empty tensor is refused. The roi is used by `tf_crop_and_resize` only, which the
/// graph walk refuses, so nothing reads its values.
fn no_roi(g: &proto::GraphProto, t: &proto::TensorProto) -> bool {
    let name = t.name.as_str();
    let plain = t.raw_data.is_empty()
        && t.float_data.is_empty()
        && t.double_data.is_empty()
        && t.int32_data.is_empty()
        && t.int64_data.is_empty()
        && t.external_data.is_empty()
        && t.data_location == 0
        && t.segment.is_none();
    let reads = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().enumerate().map(move |(i, x)| (n, i, x)))
        .filter(|(_, _, x)| x.as_str() == name);
    t.dims == [0]
        && plain
        && !name.is_empty()
        && !g.output.iter().any(|o| o.name == name)
        && reads.clone().count() > 0
        && reads
            .clone()
            .all(|(n, i, _)| n.op_type == "Resize" && i == 1)
}

/// The model's `metadata_props`, each key once.
fn metadata(path: &Path, m: &proto::ModelProto) -> Result<HashMap<String, String>, ModelError> {
    let mut md: HashMap<String, String> = HashMap::new();
    for e in &m.metadata_props {
        if md.insert(e.key.clone(), e.value.clone()).is_some() {
            return Err(ModelError::Setting {
                path: path.to_path_buf(),
                key: e.key.clone(),
                msg: "is given twice".into(),
            });
        }
    }
    Ok(md)
}

/// A CNN graph with the settings of its metadata (those of a CNN), checked.
fn graph_net(
    path: &Path,
    d: dag::Walked,
    md: &HashMap<String, String>,
) -> Result<Graph, ModelError> {
    let (sigma, fixed_point) = cnn_settings(path, md)?;
    let g = Graph {
        nodes: d.nodes,
        output: d.output,
        colours: 1,
        sigma,
        fixed_point,
        window: super::safetensors::declared_window(path, Some(md))?,
    };
    g.validate(path)?;
    Ok(g)
}

fn mlp(path: &Path, w: Walked, md: &HashMap<String, String>) -> Result<Model, ModelError> {
    if md.contains_key("activation") {
        return Err(ModelError::Setting {
            path: path.to_path_buf(),
            key: "activation".into(),
            msg: "is not read from an ONNX file: its Tanh (run as tanh*) or Relu nodes say what \
                  it computes"
                .into(),
        });
    }
    let mut meta = super::safetensors::settings(path, (!md.is_empty()).then_some(md))?;
    if w.stack.act == Some(Act::Relu) {
        meta.activation = Activation::Relu;
    }
    let layers = w
        .stack
        .layers
        .into_iter()
        .map(|l| Layer {
            w: Array2::from_shape_vec((l.cout, l.cin), l.w).expect("out x in"),
            b: Array1::from(l.b),
        })
        .collect();
    let window = super::safetensors::declared_window(path, Some(md))?;
    let m = Model {
        layers,
        meta,
        window,
    };
    m.validate(path)?;
    Ok(m)
}

/// A CNN's settings from the model's metadata: the noise level it was trained for (25 when
/// not given) and its fixed-point settings.
fn cnn_settings(
    path: &Path,
    md: &HashMap<String, String>,
) -> Result<(f64, Option<[u32; 3]>), ModelError> {
    let mut sigma = 25.0;
    let mut fixed_point = None;
    let mut keys: Vec<&String> = md.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let value = &md[key];
        match key.as_str() {
            "sigma" => match value.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 => sigma = s,
                _ => {
                    return Err(ModelError::Setting {
                        path: path.to_path_buf(),
                        key: key.clone(),
                        msg: format!("is {value:?}; expected a positive number"),
                    })
                }
            },
            "fixed_point" => {
                fixed_point = Some(crate::model::cnn::fixed_point_text(value).map_err(|msg| {
                    ModelError::Setting {
                        path: path.to_path_buf(),
                        key: key.clone(),
                        msg,
                    }
                })?)
            }
            // Parsed below, as every reader parses it.
            crate::image::window::MODEL_WINDOW => {}
            _ => {
                return Err(ModelError::Setting {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    msg: "is not a setting of a ppdenoise CNN (known: sigma, the noise level \
                          it was trained for; fixed_point, \"s,ws,k\"; window, the window \
                          of image values it was trained on, \"LO:HI UNITS\")"
                        .into(),
                })
            }
        }
    }
    Ok((sigma, fixed_point))
}

fn cnn(path: &Path, w: Walked, md: &HashMap<String, String>) -> Result<Cnn, ModelError> {
    let (sigma, fixed_point) = cnn_settings(path, md)?;
    let meta = CnnMeta {
        sigma,
        residual: w.residual,
    };
    let frame = w.stack.frame;
    let mut convs: Vec<Conv> = w
        .stack
        .layers
        .into_iter()
        .map(|l| Conv {
            cin: l.cin,
            cout: l.cout,
            k: l.k,
            w: l.w,
            b: l.b,
        })
        .collect();
    crate::model::cnn::reorder_channels(&mut convs, &w.stack.in_perm, &w.out_perm);
    let window = super::safetensors::declared_window(path, Some(md))?;
    Cnn::checked(convs, meta, frame, fixed_point, window, path)
}
