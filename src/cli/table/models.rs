//! Which model each noise level of a table uses: one for every sigma (`--model`, a blind
//! denoiser such as the shipped MLP) or one per sigma (`--models 15=a.npz,25=b.npz`, as
//! sigma-specific denoisers like DnCNN-S are trained and published).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ndarray::Array2;

use super::super::inputs::{model_or_default, ModelFile};
use crate::image::window::{DeclaredWindow, WindowChoice};
use crate::image::GrayImage;
use crate::job::plain::{run_cnn, run_denoise, run_graph, Arith};
use crate::model::cnn::Cnn;
use crate::model::graph::Graph;
use crate::model::mlp::Model;
use crate::model::noise_map::NoiseLevel;
use crate::model::preprocess::Preprocess;
use crate::ring::cnn::CnnFixed;

/// A table's network: the shipped kind (an MLP), a CNN or a CNN graph.
pub(super) enum Net {
    Mlp(Model),
    Cnn(Cnn),
    Graph(Box<Graph>),
}

impl Net {
    fn load(path: &Path) -> Result<Net> {
        Ok(match ModelFile::load(path)? {
            ModelFile::Mlp(m) => Net::Mlp(*m),
            ModelFile::Cnn(c) => Net::Cnn(*c),
            ModelFile::Graph(g) => Net::Graph(g),
        })
    }

    /// Why an h x w image cannot go through it, if it cannot: smaller than an MLP's output
    /// patch, or too small for a graph's strides and unpadded convolutions.
    pub(super) fn refuses(&self, h: usize, w: usize) -> Option<String> {
        match self {
            Net::Graph(g) => g.padded_size(h, w).err(),
            net => {
                let patch = net.output_patch();
                (h < patch || w < patch)
                    .then(|| format!("{h}x{w} is smaller than the {patch}x{patch} output patch"))
            }
        }
    }

    /// Planes of the images it takes: 1 gray, 3 RGB (a colour CNN).
    pub(super) fn colours(&self) -> usize {
        match self {
            Net::Mlp(_) | Net::Graph(_) => 1,
            Net::Cnn(m) => m.colours,
        }
    }

    /// Noise-map channels it takes (0 for an MLP).
    pub(super) fn map_channels(&self) -> usize {
        match self {
            Net::Mlp(_) | Net::Graph(_) => 0,
            Net::Cnn(m) => m.map_channels(),
        }
    }

    /// The output patch: images smaller than this cannot be denoised.
    fn output_patch(&self) -> usize {
        match self {
            Net::Mlp(m) => m.patch_shape().output,
            Net::Cnn(_) | Net::Graph(_) => 1,
        }
    }

    /// (fixed-point oracle, float, float seconds) of `noisy`, as the secure run was set up.
    pub(super) fn plaintext(
        &self,
        noisy: &GrayImage,
        pre: &Preprocess,
        stride: usize,
        scale: u32,
        noise: &NoiseLevel,
    ) -> Result<(Array2<f64>, Array2<f64>, f64)> {
        Ok(match self {
            Net::Mlp(m) => {
                let (oracle, _) = run_denoise(m, noisy, pre, stride, Arith::Fixed, scale)?;
                let tf = Instant::now();
                let (float, _) = run_denoise(m, noisy, pre, stride, Arith::Float, scale)?;
                (oracle, float, tf.elapsed().as_secs_f64())
            }
            Net::Cnn(m) => {
                let params = CnnFixed {
                    s: scale,
                    ..CnnFixed::for_model(m)
                };
                let (oracle, _) = run_cnn(m, noisy, pre, Arith::Fixed, params, noise)?;
                let tf = Instant::now();
                let (float, _) = run_cnn(m, noisy, pre, Arith::Float, params, noise)?;
                (oracle, float, tf.elapsed().as_secs_f64())
            }
            // At the settings share-model shared it at (the file's, else the defaults).
            Net::Graph(g) => {
                let params = CnnFixed {
                    s: scale,
                    ..CnnFixed::for_graph(g)
                };
                let (oracle, _) = run_graph(g, noisy, pre, Arith::Fixed, params)?;
                let tf = Instant::now();
                let (float, _) = run_graph(g, noisy, pre, Arith::Float, params)?;
                (oracle, float, tf.elapsed().as_secs_f64())
            }
        })
    }
}

/// One model file of the table, loaded.
pub(super) struct TableModel {
    pub path: PathBuf,
    pub net: Net,
    /// Path, content hash, layer sizes, settings and card ([`model_info`]).
    pub info: serde_json::Value,
    pub blake3: String,
}

impl TableModel {
    fn load(path: &Path) -> Result<TableModel> {
        let net = Net::load(path)?;
        // The hash --resume compares: an unreadable file is an error, never an empty hash.
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let blake3 = blake3::hash(&bytes).to_hex().to_string();
        let info = model_info(path, &net, &blake3);
        Ok(TableModel {
            path: path.to_path_buf(),
            net,
            info,
            blake3,
        })
    }

    /// The CNN fixed-point settings a secure run of this model uses (`None` for an MLP,
    /// whose settings are in the record's protocol tag).
    pub(super) fn cnn_settings(&self) -> Option<String> {
        match &self.net {
            Net::Mlp(_) => None,
            Net::Cnn(m) => {
                let c = CnnFixed::for_model(m);
                Some(format!("s={} ws={} k={}", c.s, c.ws, c.k))
            }
            Net::Graph(g) => {
                let c = CnnFixed::for_graph(g);
                Some(format!("s={} ws={} k={}", c.s, c.ws, c.k))
            }
        }
    }
}

/// The models of a table and which one each of its noise levels uses.
pub(super) struct Models {
    models: Vec<TableModel>,
    /// Index into `models` for each sigma of the table, in order.
    of_sigma: Vec<usize>,
    /// The `--models` list as given (normalised), or `None` for one model.
    pub spec: Option<String>,
}

impl Models {
    /// `--model` (or the shipped model) for every sigma, or the `--models` list, which must
    /// name a model for each of `sigmas` (entries for other sigmas are allowed and unused,
    /// so one list serves any subset). Every file is loaded and checked here, before a run.
    pub(super) fn load(
        model: &Option<PathBuf>,
        models: Option<&str>,
        sigmas: &[f64],
    ) -> Result<Models> {
        let Some(spec) = models else {
            return Ok(Models {
                models: vec![TableModel::load(&model_or_default(model))?],
                of_sigma: vec![0; sigmas.len()],
                spec: None,
            });
        };
        if model.is_some() {
            bail!("give either --model (one model for every sigma) or --models, not both");
        }
        let entries = parse_models(spec)?;
        let mut loaded: Vec<TableModel> = Vec::new();
        let mut of_sigma = Vec::with_capacity(sigmas.len());
        for &sg in sigmas {
            let Some((_, path)) = entries.iter().find(|(s, _)| *s == sg) else {
                bail!(
                    "--models names no model for sigma {sg} (it has {})",
                    entries
                        .iter()
                        .map(|(s, _)| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let at = match loaded.iter().position(|m| &m.path == path) {
                Some(i) => i,
                None => {
                    loaded.push(
                        TableModel::load(path).with_context(|| format!("--models, sigma {sg}"))?,
                    );
                    loaded.len() - 1
                }
            };
            of_sigma.push(at);
        }
        let used: Vec<String> = sigmas
            .iter()
            .zip(&of_sigma)
            .map(|(s, &i)| format!("{s}={}", loaded[i].path.display()))
            .collect();
        Ok(Models {
            models: loaded,
            of_sigma,
            spec: Some(used.join(",")),
        })
    }

    /// The model of the `j`-th sigma of the table.
    pub(super) fn of(&self, j: usize) -> &TableModel {
        &self.models[self.of_sigma[j]]
    }

    pub(super) fn all(&self) -> &[TableModel] {
        &self.models
    }

    /// `--window` resolved against the window the table's models declare (one table, one
    /// scale: models declaring different windows are refused together).
    pub(super) fn window(&self, choice: &WindowChoice, overridden: bool) -> Result<WindowChoice> {
        let mut declared: Option<(&TableModel, DeclaredWindow)> = None;
        for m in &self.models {
            let Some(d) = (match &m.net {
                Net::Mlp(x) => x.window,
                Net::Cnn(x) => x.window,
                Net::Graph(x) => x.window,
            }) else {
                continue;
            };
            match declared {
                Some((first, w)) if w != d => bail!(
                    "{} declares the window {w} and {} the window {d}: a table maps its \
                     images one way, so its models must agree",
                    first.path.display(),
                    m.path.display()
                ),
                Some(_) => {}
                None => declared = Some((m, d)),
            }
        }
        if overridden && declared.is_none() {
            bail!("--override-model-window: no model of the table declares a window");
        }
        let name = declared.map(|(m, _)| m.path.display().to_string());
        DeclaredWindow::resolve(
            declared.as_ref().map(|(_, d)| d),
            choice,
            overridden,
            name.as_deref().unwrap_or_default(),
        )
        .map_err(anyhow::Error::msg)
    }

    /// Planes of the table's images: its models' (1 gray, 3 RGB), which must agree, since
    /// every image goes through every model.
    pub(super) fn colours(&self) -> Result<usize> {
        let first = &self.models[0];
        for m in &self.models[1..] {
            if m.net.colours() != first.net.colours() {
                bail!(
                    "{} takes {} plane(s) and {} {}: a table's models must all be gray or all \
                     colour",
                    first.path.display(),
                    first.net.colours(),
                    m.path.display(),
                    m.net.colours()
                );
            }
        }
        Ok(first.net.colours())
    }

    /// Whether the table names a model per sigma (`--models`).
    pub(super) fn per_sigma(&self) -> bool {
        self.spec.is_some()
    }
}

/// `SIGMA=PATH` entries separated by commas (or whitespace); a sigma given twice is an error.
fn parse_models(spec: &str) -> Result<Vec<(f64, PathBuf)>> {
    let mut out: Vec<(f64, PathBuf)> = Vec::new();
    for item in spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        let Some((s, p)) = item.split_once('=') else {
            bail!("--models: {item:?} is not SIGMA=PATH (e.g. 25=out/dncnn-s25.npz)");
        };
        let sigma = s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x > 0.0)
            .with_context(|| format!("--models: {s:?} (in {item:?}) is not a positive sigma"))?;
        if p.trim().is_empty() {
            bail!("--models: no path after {s:?}=");
        }
        if out.iter().any(|(x, _)| *x == sigma) {
            bail!("--models: sigma {sigma} is given twice");
        }
        out.push((sigma, PathBuf::from(p.trim())));
    }
    if out.is_empty() {
        bail!("--models: no SIGMA=PATH entry given");
    }
    Ok(out)
}

/// Describes a model: its path, content hash and (when present) its JSON card.
fn model_info(path: &Path, model: &Net, hash: &str) -> serde_json::Value {
    let card_path = path.with_extension("json");
    let card: serde_json::Value = std::fs::read_to_string(&card_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let (widths, meta) = match model {
        Net::Mlp(m) => (serde_json::json!(m.widths()), serde_json::json!(m.meta)),
        // A CNN's channels stand where an MLP's widths do; its activation is ReLU.
        Net::Cnn(m) => (
            serde_json::json!(m.channels()),
            serde_json::json!({"sigma": m.meta.sigma, "residual": m.meta.residual, "activation": "ReLU"}),
        ),
        // A graph's: its node count (`inspect` lists its ops).
        Net::Graph(g) => (
            serde_json::json!(format!("{} nodes (a CNN graph)", g.nodes.len())),
            serde_json::json!({"sigma": g.sigma, "activation": "per node (docs/graph.md)"}),
        ),
    };
    serde_json::json!({
        "path": path, "blake3": hash, "widths": widths, "meta": meta,
        "card_path": if card.is_null() { serde_json::Value::Null } else { serde_json::json!(card_path) },
        "card": card,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_parse() {
        let m = parse_models("15=a.npz, 25=b.npz 50=dir/c.npz").unwrap();
        assert_eq!(
            m,
            vec![
                (15.0, PathBuf::from("a.npz")),
                (25.0, PathBuf::from("b.npz")),
                (50.0, PathBuf::from("dir/c.npz"))
            ]
        );
        for bad in ["", "a.npz", "x=a.npz", "-5=a.npz", "15=", "15=a,15=b"] {
            assert!(parse_models(bad).is_err(), "{bad:?} accepted");
        }
    }
}
