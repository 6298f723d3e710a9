//! The model owner's step: `share-model`.

use crate::ring::Party;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::inputs::model_or_default;
use super::Summary;
use crate::fileio::atomic::Staged;
use crate::formats::bodies::{valid_model_name, ModelShare, MAX_NAME, NAME};
use crate::formats::checks::circuit_entries;
use crate::formats::container::{self, fresh_id, id_hex, Header, Kind};
use crate::job::owner::{window_entry, window_line, NoiseFacts};
use crate::model::cnn::Cnn;
use crate::model::mlp::{Activation, Model};
use crate::model::noise_map::NoiseLevel;
use crate::model::preprocess::Preprocess;
use crate::ring::cnn::{CnnFixed, CnnPlan};
use crate::ring::graph::GraphPlan;
use crate::ring::plan::{FixedParams, Plan};
use crate::ring::share::fresh_seed;
use crate::ring::sweep::{format_ranges, ranges, sweep_all, Level, CONTRASTS, LEVELS, SIGMA_RANGE};
use ndarray::Array2;

/// Split a trained model into fixed-point additive shares for S0 and S1.
///
/// Writes `<out>.p0` (explicit share) and `<out>.p1` (a PRG seed). Either file alone is
/// uniformly random and reveals nothing about the weights. The per-patch mean shift of the
/// model's preprocessing is folded into its first layer here, by the owner, in the clear.
#[derive(Args)]
pub struct ShareModelArgs {
    /// Trained model (.npz: an MLP with W1..WL, b1..bL, or a CNN with K1..KL, b1..bL; a
    /// PyTorch state dict as .safetensors; or an .onnx export, see docs/model.md); default:
    /// the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output prefix: writes <out>.p0 and <out>.p1 (one per server) and <out>.pub (the public
    /// model header, all the dealer needs).
    #[arg(long, default_value = "model")]
    pub out: PathBuf,
    /// A short name for the model (at most 48 characters), public: recorded in the shares'
    /// headers and carried by the servers into the output, where a derived DICOM series'
    /// description names it. Default: the model file's name without its extension.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub fixed: FixedArgs,
    #[command(flatten)]
    pub cnn_fixed: CnnFixedArgs,
    #[command(flatten)]
    pub seal: super::keys::SealArgs,
}

/// The fixed-point parameters, as flags (share-model, denoise --arith fixed).
#[derive(Args)]
pub struct FixedArgs {
    /// Fixed-point fractional bits of weights and inputs (the paper's s).
    #[arg(long, default_value_t = FixedParams::default().s)]
    pub scale: u32,
    /// Fractional bits of a pre-activation kept inside the activation circuit (q).
    #[arg(long, default_value_t = FixedParams::default().q)]
    pub act_bits: u32,
    /// Fractional bits of the tanh* coefficients (cs).
    #[arg(long, default_value_t = FixedParams::default().cs)]
    pub coef_bits: u32,
    /// tanh* constants as JSON {"n1":..,"c1":..,"d1":..,"n2":..,"c2":..,"d2":..,"a":..,"b":..};
    /// default: the paper's.
    #[arg(long)]
    pub tanh_constants: Option<PathBuf>,
}

impl FixedArgs {
    pub fn params(&self) -> Result<FixedParams> {
        Ok(FixedParams {
            s: self.scale,
            q: self.act_bits,
            cs: self.coef_bits,
            tanh: load_tanh(&self.tanh_constants)?,
            ..FixedParams::default()
        })
    }
}

/// Fixed-point parameters of a CNN (used when the model is a CNN). Each one not given is
/// the model file's own (`fixed_point`, measured for it), else the project's default
/// (s 10, ws 13, k 18: measured for DnCNN-S).
#[derive(Args, Clone)]
pub struct CnnFixedArgs {
    /// CNN: fractional bits of the input and hidden activations.
    #[arg(long)]
    pub cnn_scale: Option<u32>,
    /// CNN: fractional bits of the weights (dropped by each ReLU's exact truncation).
    #[arg(long)]
    pub cnn_weight_scale: Option<u32>,
    /// CNN: signed bits of a hidden activation at its scale (range 2^(bits - 1 - scale)).
    #[arg(long)]
    pub cnn_act_bits: Option<u32>,
}

impl CnnFixedArgs {
    /// The settings for `model`: those given, the rest from the model or the defaults.
    pub fn params(&self, model: &crate::model::cnn::Cnn) -> Result<CnnFixed> {
        self.params_over(CnnFixed::for_model(model))
    }

    /// The settings for a CNN graph: those given, the rest from its file or the defaults.
    pub fn graph_params(&self, g: &crate::model::graph::Graph) -> Result<CnnFixed> {
        self.params_over(CnnFixed::for_graph(g))
    }

    fn params_over(&self, d: CnnFixed) -> Result<CnnFixed> {
        let p = CnnFixed {
            s: self.cnn_scale.unwrap_or(d.s),
            ws: self.cnn_weight_scale.unwrap_or(d.ws),
            k: self.cnn_act_bits.unwrap_or(d.k),
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

/// Reads tanh* constants from a JSON file (the paper's when no file is given).
pub fn load_tanh(path: &Option<PathBuf>) -> Result<crate::model::tanhstar::TanhStar> {
    let Some(p) = path else {
        return Ok(crate::model::tanhstar::TanhStar::PAPER);
    };
    let text =
        std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
    let t: crate::model::tanhstar::TanhStar = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a tanh* constants file", p.display()))?;
    t.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    Ok(t)
}

pub use crate::job::{public_file, with_ext, with_suffix};

/// The model's public name: `--name`, else the file's stem ([`valid_model_name`]).
fn model_name(a: &ShareModelArgs, path: &std::path::Path) -> Result<String> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let name = name.trim().to_string();
    if !valid_model_name(&name) {
        bail!(
            "--name {name:?}: a model name is 1 to {MAX_NAME} printable ASCII characters, no \
             backslash (public: it names the model in derived DICOM series; the default is \
             the model file's name, which does not fit: give --name)"
        );
    }
    Ok(name)
}

/// The sweep's ranges as public header entries (none when the model denoised at no level
/// of any span), and a line saying what was measured.
fn sigma_range_entries(all: &[(f64, Vec<Level>)]) -> (Vec<(String, String)>, String) {
    let r = ranges(all);
    if r.iter().all(|(_, x)| x.is_none()) {
        return (
            Vec::new(),
            "note: the model's fixed point held at no noise level of the sweep (oracle on the \
             phantom); no noise range is recorded, so share-image checks none"
                .into(),
        );
    }
    let words: Vec<String> = r
        .iter()
        .map(|(c, x)| match x {
            Some((lo, hi)) if hi.is_finite() => format!("{lo} to {hi} at a span of {c}"),
            Some((lo, _)) => format!("{lo} and above at a span of {c}"),
            None => format!("none at a span of {c}"),
        })
        .collect();
    (
        vec![(SIGMA_RANGE.into(), format_ranges(&r))],
        format!(
            "noise levels its fixed point holds for (oracle on the phantom, 0..255 scale): \
             {}; share-image refuses others",
            words.join(", ")
        ),
    )
}

fn range_json(all: &[(f64, Vec<Level>)]) -> serde_json::Value {
    ranges(all)
        .iter()
        .map(|(c, x)| {
            serde_json::json!({"span": c, "range": x.map(|(lo, hi)|
                serde_json::json!([lo, if hi.is_finite() { Some(hi) } else { None }]))})
        })
        .collect()
}

fn sweep_json(all: &[(f64, Vec<Level>)]) -> serde_json::Value {
    all.iter()
        .flat_map(|(c, levels)| {
            levels.iter().map(move |l| {
                serde_json::json!({"span": c, "sigma": l.sigma, "noisy_rmse": l.noisy_rmse,
                    "rmse": l.rmse, "out_of_range": l.out_of_range})
            })
        })
        .collect()
}

/// The output's bits and the out-of-range count of `denoise` at one point of the owner's
/// sweep (the phantom spread over `span` levels, noise `sigma`).
fn probe_bits(
    span: f64,
    sigma: f64,
    denoise: &impl Fn(&Array2<f64>, f64) -> (Array2<f64>, u64),
) -> (Vec<u64>, u64) {
    let out = std::cell::RefCell::new(None);
    crate::ring::sweep::probe(span, sigma, |noisy, sigma| {
        let r = denoise(noisy, sigma);
        *out.borrow_mut() = Some((r.0.iter().map(|v| v.to_bits()).collect(), r.1));
        r
    });
    out.into_inner()
        .expect("the sweep's probe runs the denoiser once")
}

/// A chain CNN (DnCNN, FFDNet) is shared as the graph of its layers (`Graph::from_cnn`,
/// the same fixed-point values), with the noise levels its owner's sweep found it holds.
fn share_cnn_model(
    a: &ShareModelArgs,
    path: &std::path::Path,
    to: &super::keys::Outputs,
) -> Result<Summary> {
    let name = model_name(a, path)?;
    let model = Cnn::load(path)?;
    // The noise-range sweep below runs on gray images, which a colour model has no need of
    // with a noise map.
    if model.is_colour() && !model.frame.noise_map {
        bail!(
            "{}: a colour model without a noise map: share-model shares colour models that \
             take one (the colour FFDNet)",
            path.display()
        );
    }
    let params = a.cnn_fixed.params(&model)?;
    let g = crate::model::graph::Graph::from_cnn(&model)
        .map_err(|e| anyhow::anyhow!("{}: as a graph: {e}", path.display()))?;
    // A model with a noise map scales nothing by sigma*/sigma: the level is an input, and
    // its fixed point was measured up to model::noise_map::MAX_SIGMA, which the gateway
    // enforces. Its activations at a high level run past the sweep's strict bound while its
    // results stay those of the float model (docs/results-ffdnet.md): no range is recorded.
    let noise = |graph: &GraphPlan| -> Result<NoiseFacts> {
        Ok(if model.frame.noise_map {
            NoiseFacts {
                entries: Vec::new(),
                line: format!(
                    "noise levels: a model with a noise map takes 0 to {} (share-image checks it)",
                    crate::model::noise_map::MAX_SIGMA
                ),
                json: Vec::new(),
            }
        } else {
            // On the chain's own plan: the graph's gives the same bits (ring::graph's tests hold
            // the two to it) and the chain's oracle runs its row blocks in parallel, about ten
            // times faster than the graph's on DnCNN-S, over the sweep's many images.
            let plan = CnnPlan::from_cnn(&model, params).map_err(|e| {
                anyhow::anyhow!("{}: cannot build the fixed-point plan: {e}", path.display())
            })?;
            let chain = |noisy: &Array2<f64>, sigma: f64| {
                let (h, w) = noisy.dim();
                let map = model.noise_map(&NoiseLevel::Uniform(sigma), h, w);
                crate::ring::cnn::denoise(&plan, noisy, &map, &model.preprocess(sigma, true))
            };
            // What the header records must be what the servers will compute: the sweep's
            // phantom (at the probe's seed) on both plans, bit for bit, before the sweep runs
            // on the chain's. Where the range's edges fall (the lowest level scales the input
            // most, at the widest and the narrowest span; the highest level) and at the
            // model's own level.
            let on_graph = |noisy: &Array2<f64>, sigma: f64| {
                crate::ring::graph::denoise(graph, noisy, &[], &model.preprocess(sigma, true))
            };
            let (lowest, highest) = (LEVELS[0], LEVELS[LEVELS.len() - 1]);
            let narrowest = CONTRASTS[CONTRASTS.len() - 1];
            let points = [
                (255.0, lowest),
                (narrowest, lowest),
                (255.0, highest),
                (255.0, model.meta.sigma),
            ];
            for (span, sigma) in points {
                if probe_bits(span, sigma, &chain) != probe_bits(span, sigma, &on_graph) {
                    bail!(
                        "{}: the chain's and the graph's fixed-point oracles differ on the \
                         sweep's phantom at span {span}, sigma {sigma} (a bug: please report \
                         it); nothing was written",
                        path.display()
                    );
                }
            }
            let levels = sweep_all(chain);
            let (entries, line) = sigma_range_entries(&levels);
            NoiseFacts {
                entries,
                line,
                json: vec![
                    ("sigma_range", range_json(&levels)),
                    ("sweep", sweep_json(&levels)),
                ],
            }
        })
    };
    crate::job::owner::share_graph_model(&a.out, path, name, g, params, to, noise)
}

pub fn share_model(a: ShareModelArgs) -> Result<Summary> {
    let to = a.seal.outputs(crate::formats::signing::Role::Owner)?;
    let path = model_or_default(&a.model);
    if crate::import::onnx::is_onnx(&path) {
        if let crate::import::onnx::Net::Graph(g) = crate::import::onnx::load(&path)? {
            let name = model_name(&a, &path)?;
            let params = a.cnn_fixed.graph_params(&g)?;
            return crate::job::owner::share_graph_model(
                &a.out,
                &path,
                name,
                g,
                params,
                &to,
                |_| Ok(NoiseFacts::not_swept()),
            );
        }
    }
    if Cnn::is_cnn_file(&path)? {
        return share_cnn_model(&a, &path, &to);
    }
    let name = model_name(&a, &path)?;
    let model = Model::load(&path)?;
    let params = a.fixed.params()?;
    let plan = Plan::from_model(&model, params).map_err(|e| {
        anyhow::anyhow!("{}: cannot build the fixed-point plan: {e}", path.display())
    })?;
    let levels = sweep_all(|noisy, sigma| {
        let pre = Preprocess::new(sigma, model.meta.sigma, true);
        crate::ring::oracle::denoise(&plan, noisy, &pre, 3)
    });
    let (range_info, range_line) = sigma_range_entries(&levels);
    let bodies = ModelShare::split(&plan, &model.meta, &fresh_seed());
    let model_id = fresh_id();
    let widths: Vec<u64> = plan.widths().iter().map(|&w| w as u64).collect();
    let mut written = Vec::new();
    // The three files appear together or not at all.
    let mut set = Staged::default();
    for (party, body) in Party::BOTH.into_iter().zip(&bodies) {
        let mut h = Header::new(Kind::ModelShare, party, params.s);
        h.model_id = Some(model_id);
        h.shapes.push(("layers".into(), widths.clone()));
        h.info.push((NAME.into(), name.clone()));
        h.info.push((
            crate::formats::facts::SIGMA.into(),
            model.meta.sigma.to_string(),
        ));
        h.info.extend(circuit_entries(&plan));
        h.info.extend(range_info.clone());
        h.info.extend(window_entry(model.window.as_ref()));
        let out = with_ext(&a.out, party);
        container::stage(&mut set, &out, &h, body, to.party(party))
            .with_context(|| format!("writing {}", out.display()))?;
        written.push(out.display().to_string());
        if party.is_s1() {
            // The dealer's copy: the public header alone (shapes, ids, constants).
            let mut hp = h.clone();
            hp.kind = Kind::PublicModel;
            hp.party = 0;
            let out = public_file(&a.out);
            container::stage(&mut set, &out, &hp, &(), to.public())
                .with_context(|| format!("writing {}", out.display()))?;
            written.push(out.display().to_string());
        }
    }
    set.commit()?;
    let mut lines = vec![format!(
        "model {} ({}) shared as {} and {} (public header for the dealer: {}); model id {}",
        path.display(),
        plan.widths()
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        written[0],
        written[1],
        written[2],
        id_hex(&model_id)
    )];
    let mut notes = Vec::new();
    if model.meta.activation == Activation::Tanh {
        notes.push(
            "this model was trained with tanh; the secure protocol computes the paper's tanh*",
        );
    }
    lines.extend(notes.iter().map(|n| format!("note: {n}")));
    lines.push(range_line);
    lines.extend(window_line(model.window.as_ref()));
    Ok(Summary {
        lines,
        json: serde_json::json!({
            "ok": true, "command": "share-model", "model": path, "model_id": id_hex(&model_id),
            "window": model.window.map(|d| d.to_string()),
            "widths": plan.widths(), "outputs": written, "notes": notes,
            "sigma_range": range_json(&levels), "sweep": sweep_json(&levels),
        }),
    })
}
