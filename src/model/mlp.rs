//! Trained MLP denoisers: `.npz` files with `W1..WL` (out x in) and `b1..bL`, plus optional
//! scalar metadata (`sigma`, `mean_shift`, `residual`, `activation`, `aggregation_sigma`), or
//! the same MLP saved by PyTorch as `.safetensors`: read and written by `crate::import::mlp`.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::image::window::DeclaredWindow;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot open model: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid .npz model file: {msg}")]
    NotNpz { path: PathBuf, msg: String },
    #[error("{path}: array {name}: {msg}")]
    Array {
        path: PathBuf,
        name: String,
        msg: String,
    },
    #[error("{path}: not a valid .safetensors model file: {msg}")]
    NotSafetensors { path: PathBuf, msg: String },
    #[error("{path}: tensor {name}: {msg}")]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    #[error("{path}: metadata {key}: {msg}")]
    Setting {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("{path}: not a valid ONNX model file: {msg}")]
    NotOnnx { path: PathBuf, msg: String },
    #[error("{path}: node {node} ({op}): {msg}")]
    OnnxNode {
        path: PathBuf,
        node: String,
        op: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Tanh,
    TanhStar,
    /// max(0, x): computed exactly by the secure protocol (no approximation).
    Relu,
}

/// Public description of how the model expects its input and forms its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The noise level the model was trained for (sigma*), on the 0..255 scale.
    pub sigma: f64,
    /// Subtract the patch mean from the input (the paper's mean shift).
    pub mean_shift: bool,
    /// The network predicts the residual: the input centre is added to its output.
    pub residual: bool,
    pub activation: Activation,
    /// Overlapping outputs are combined with Gaussian weights of this sigma (pixels);
    /// 0 = plain averaging. See [`PatchShape::window_weights`].
    pub aggregation_sigma: f64,
}

impl Default for ModelMeta {
    fn default() -> Self {
        ModelMeta {
            sigma: 25.0,
            mean_shift: false,
            residual: false,
            activation: Activation::Tanh,
            aggregation_sigma: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub w: Array2<f64>,
    pub b: Array1<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub layers: Vec<Layer>,
    pub meta: ModelMeta,
    /// The window of image values it was trained on, when its file declares one. Kept out
    /// of [`ModelMeta`], which the shares' bodies carry: it travels in the public header.
    pub window: Option<DeclaredWindow>,
}

/// Patch geometry implied by a model: a square input window and a square output centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchShape {
    pub input: usize,
    pub output: usize,
    /// Gaussian aggregation sigma in thousandths of a pixel; 0 = plain averaging.
    pub window_milli: u32,
}

/// Largest aggregation weight: 5 bits keep the canvas sums of the default plan inside the
/// ring (see `Plan::from_model`) while resolving the Gaussian well (measured: same PSNR as
/// float weights to 1e-4 dB).
pub const WINDOW_WEIGHT_MAX: f64 = 32.0;

impl PatchShape {
    pub fn margin(&self) -> usize {
        (self.input - self.output) / 2
    }

    /// Integer weight of each output position (row-major, output x output) when overlapping
    /// outputs are combined: `max(1, round(32 exp(-r^2 / (2 s^2))))`, r = distance from the
    /// window centre, s = the aggregation sigma; all 1 for plain averaging. Integers, so the
    /// servers apply them to their shares exactly and the receiver divides by their sum.
    pub fn window_weights(&self) -> Vec<u64> {
        let n = self.output;
        if self.window_milli == 0 {
            return vec![1; n * n];
        }
        let s = self.window_milli as f64 / 1000.0;
        let c = (n as f64 - 1.0) / 2.0;
        (0..n * n)
            .map(|k| {
                let (dy, dx) = ((k / n) as f64 - c, (k % n) as f64 - c);
                let g = (-(dy * dy + dx * dx) / (2.0 * s * s)).exp();
                (WINDOW_WEIGHT_MAX * g).round().max(1.0) as u64
            })
            .collect()
    }
}

fn isqrt(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

impl Model {
    /// Layer widths: input, hidden..., output.
    pub fn widths(&self) -> Vec<usize> {
        let mut v = vec![self.layers[0].w.ncols()];
        v.extend(self.layers.iter().map(|l| l.w.nrows()));
        v
    }

    pub fn patch_shape(&self) -> PatchShape {
        let w = self.widths();
        PatchShape {
            input: isqrt(w[0]).unwrap_or(0),
            output: isqrt(*w.last().unwrap()).unwrap_or(0),
            window_milli: (self.meta.aggregation_sigma * 1000.0).round() as u32,
        }
    }

    /// Checks the structural rules every consumer relies on.
    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let inv = |msg: String| ModelError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        if self.layers.is_empty() {
            return Err(inv("model has no layers (expected W1, b1, ...)".into()));
        }
        let agg = self.meta.aggregation_sigma;
        if !(agg == 0.0 || (0.25..=1000.0).contains(&agg)) {
            return Err(ModelError::Array {
                path: path.to_path_buf(),
                name: "aggregation_sigma".into(),
                msg: format!("is {agg}; expected 0 (plain averaging) or a Gaussian sigma in 0.25..1000 pixels"),
            });
        }
        for (i, l) in self.layers.iter().enumerate() {
            let n = i + 1;
            let arr = |name: String, msg: String| ModelError::Array {
                path: path.to_path_buf(),
                name,
                msg,
            };
            if l.w.nrows() == 0 || l.w.ncols() == 0 {
                return Err(arr(format!("W{n}"), "is empty".into()));
            }
            if l.b.len() != l.w.nrows() {
                return Err(arr(
                    format!("b{n}"),
                    format!(
                        "has {} entries but W{n} has {} rows",
                        l.b.len(),
                        l.w.nrows()
                    ),
                ));
            }
            if i > 0 && l.w.ncols() != self.layers[i - 1].w.nrows() {
                return Err(arr(
                    format!("W{n}"),
                    format!(
                        "has {} columns but layer {} outputs {} values (layers do not chain)",
                        l.w.ncols(),
                        i,
                        self.layers[i - 1].w.nrows()
                    ),
                ));
            }
            if let Some(bad) = l.w.iter().position(|v| !v.is_finite()) {
                return Err(arr(
                    format!("W{n}"),
                    format!("non-finite value at flat index {bad}"),
                ));
            }
            if let Some(bad) = l.b.iter().position(|v| !v.is_finite()) {
                return Err(arr(
                    format!("b{n}"),
                    format!("non-finite value at index {bad}"),
                ));
            }
        }
        let w = self.widths();
        let (i, o) = (w[0], *w.last().unwrap());
        let (Some(si), Some(so)) = (isqrt(i), isqrt(o)) else {
            return Err(inv(format!(
                "input ({i}) and output ({o}) sizes must both be square patches"
            )));
        };
        if so > si || (si - so) % 2 != 0 {
            return Err(inv(format!(
                "output patch {so}x{so} must be centred in input patch {si}x{si} \
                 (same parity, not larger)"
            )));
        }
        if !(self.meta.sigma.is_finite() && self.meta.sigma > 0.0) {
            return Err(inv(format!(
                "sigma must be positive, got {}",
                self.meta.sigma
            )));
        }
        Ok(())
    }
}

/// A random model of realistic scale (for tests and benchmarks): weights ~ U(-r, r) with
/// r = sqrt(3 / fan_in), so pre-activations stay in tanh's useful range.
pub fn random_model(widths: &[usize], seed: u64, meta: ModelMeta) -> Model {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let layers = widths
        .windows(2)
        .map(|p| {
            let r = (3.0 / p[0] as f64).sqrt();
            Layer {
                w: Array2::from_shape_fn((p[1], p[0]), |_| rng.gen_range(-r..r)),
                b: Array1::from_shape_fn(p[1], |_| rng.gen_range(-0.1..0.1)),
            }
        })
        .collect();
    Model {
        layers,
        meta,
        window: None,
    }
}
