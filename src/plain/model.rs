//! Trained MLP denoisers: `.npz` files with `W1..WL` (out x in) and `b1..bL`, plus optional
//! scalar metadata (`sigma`, `mean_shift`, `residual`, `activation`, `aggregation_sigma`), or
//! the same MLP saved by PyTorch as `.safetensors` (`super::safetensors`).

use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::{Array0, Array1, Array2, Ix0, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};
use serde::{Deserialize, Serialize};

use super::image::window::DeclaredWindow;

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

    /// Reads a model `.npz`, a `.safetensors` as PyTorch saves one (told apart by their
    /// first bytes, whatever the name says; see [`super::safetensors`]), or an `.onnx`
    /// ([`super::onnx`]).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        if super::onnx::is_onnx(path) {
            return match super::onnx::load(path)? {
                super::onnx::Net::Mlp(m) => Ok(m),
                super::onnx::Net::Cnn(_) => Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    msg: "holds a CNN where an MLP was expected".into(),
                }),
            };
        }
        if super::safetensors::is_safetensors(path)? {
            return super::safetensors::load(path);
        }
        let file = super::npz::open_checked(path)?;
        let mut npz = NpzReader::new(file).map_err(|e| ModelError::NotNpz {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let names = npz.names().map_err(|e| ModelError::NotNpz {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let has = |n: &str| names.iter().any(|x| x == n);
        let mut layers = Vec::new();
        let mut l = 1;
        while has(&format!("W{l}")) {
            let w = read2(&mut npz, path, &format!("W{l}"))?;
            if !has(&format!("b{l}")) {
                return Err(ModelError::Array {
                    path: path.to_path_buf(),
                    name: format!("b{l}"),
                    msg: format!("missing (W{l} is present)"),
                });
            }
            let b = read1(&mut npz, path, &format!("b{l}"))?;
            layers.push(Layer { w, b });
            l += 1;
        }
        if layers.is_empty() {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                msg: format!("no array W1 found (arrays present: {})", names.join(", ")),
            });
        }
        let mut meta = ModelMeta::default();
        if has("sigma") {
            meta.sigma = read0(&mut npz, path, "sigma")?;
        }
        if has("mean_shift") {
            meta.mean_shift = read0(&mut npz, path, "mean_shift")? != 0.0;
        }
        if has("residual") {
            meta.residual = read0(&mut npz, path, "residual")? != 0.0;
        }
        if has("activation") {
            let code = read0(&mut npz, path, "activation")?;
            meta.activation = match code {
                0.0 => Activation::Tanh,
                1.0 => Activation::TanhStar,
                2.0 => Activation::Relu,
                _ => {
                    return Err(ModelError::Invalid {
                        path: path.to_path_buf(),
                        msg: format!("activation {code}: 0 (tanh), 1 (tanh*) or 2 (ReLU) expected"),
                    })
                }
            };
        }
        if has("aggregation_sigma") {
            meta.aggregation_sigma = read0(&mut npz, path, "aggregation_sigma")?;
        }
        let window = npz_window(&mut npz, path, &names)?;
        let m = Model {
            layers,
            meta,
            window,
        };
        m.validate(path)?;
        Ok(m)
    }

    /// Writes the model as `.npz` (f64 arrays), atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::formats::atomic::write_with(path, |f| {
            let mut npz = NpzWriter::new(f);
            for (i, l) in self.layers.iter().enumerate() {
                npz.add_array(format!("W{}", i + 1), &l.w)?;
                npz.add_array(format!("b{}", i + 1), &l.b)?;
            }
            let scalar = |v: f64| Array0::from_elem((), v);
            npz.add_array("sigma", &scalar(self.meta.sigma))?;
            npz.add_array("mean_shift", &scalar(self.meta.mean_shift as u8 as f64))?;
            npz.add_array("residual", &scalar(self.meta.residual as u8 as f64))?;
            let act = match self.meta.activation {
                Activation::Tanh => 0.0,
                Activation::TanhStar => 1.0,
                Activation::Relu => 2.0,
            };
            npz.add_array("activation", &scalar(act))?;
            npz.add_array("aggregation_sigma", &scalar(self.meta.aggregation_sigma))?;
            if let Some(d) = &self.window {
                npz.add_array(d.npz_key(), &Array1::from(vec![d.window.lo, d.window.hi]))?;
            }
            npz.finish()?;
            Ok(())
        })
    }
}

fn arr_err(path: &Path, name: &str, e: ReadNpzError) -> ModelError {
    ModelError::Array {
        path: path.to_path_buf(),
        name: name.to_string(),
        msg: e.to_string(),
    }
}

// Models may be stored as f32 or f64; try f64 first, then widen f32.
fn read2(npz: &mut NpzReader<File>, path: &Path, name: &str) -> Result<Array2<f64>, ModelError> {
    match npz.by_name::<ndarray::OwnedRepr<f64>, Ix2>(name) {
        Ok(a) => Ok(a),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f32>, Ix2>(name)
            .map(|a| a.mapv(f64::from))
            .map_err(|e| arr_err(path, name, e)),
    }
}

/// The window a model `.npz` declares: at most one of [`DeclaredWindow::NPZ_KEYS`], an
/// array `[lo, hi]`.
pub(crate) fn npz_window(
    npz: &mut NpzReader<File>,
    path: &Path,
    names: &[String],
) -> Result<Option<DeclaredWindow>, ModelError> {
    let present: Vec<_> = DeclaredWindow::NPZ_KEYS
        .iter()
        .filter(|(k, _)| names.iter().any(|n| n == k))
        .collect();
    let &[&(key, units)] = present.as_slice() else {
        if present.is_empty() {
            return Ok(None);
        }
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            msg: format!(
                "declares {} windows ({}); a model is trained on one",
                present.len(),
                present
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let v = read1(npz, path, key)?;
    DeclaredWindow::from_pair(&v.to_vec(), units)
        .map(Some)
        .map_err(|msg| ModelError::Array {
            path: path.to_path_buf(),
            name: key.into(),
            msg,
        })
}

fn read1(npz: &mut NpzReader<File>, path: &Path, name: &str) -> Result<Array1<f64>, ModelError> {
    match npz.by_name::<ndarray::OwnedRepr<f64>, Ix1>(name) {
        Ok(a) => Ok(a),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f32>, Ix1>(name)
            .map(|a| a.mapv(f64::from))
            .map_err(|e| arr_err(path, name, e)),
    }
}

fn read0(npz: &mut NpzReader<File>, path: &Path, name: &str) -> Result<f64, ModelError> {
    let v = match npz.by_name::<ndarray::OwnedRepr<f64>, Ix0>(name) {
        Ok(a) => a.into_scalar(),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f32>, Ix0>(name)
            .map(|a| a.into_scalar() as f64)
            .map_err(|e| arr_err(path, name, e))?,
    };
    if !v.is_finite() {
        return Err(ModelError::Array {
            path: path.to_path_buf(),
            name: name.into(),
            msg: "is not finite".into(),
        });
    }
    Ok(v)
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

#[cfg(test)]
mod tests {
    //! A declared window is read by all five readers (`.npz` MLP and CNN, `.safetensors` MLP
    //! and CNN, ONNX MLP and CNN share the metadata parser) and written back by `save`.

    use std::collections::HashMap;

    use super::*;
    use crate::plain::cnn::{random_cnn, Cnn, CnnMeta};

    fn soft() -> DeclaredWindow {
        "-160:240 HU".parse().unwrap()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/onnx")
            .join(name)
    }

    #[test]
    fn npz_models_keep_their_declared_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = random_model(&[9, 4, 1], 1, ModelMeta::default());
        m.window = Some(soft());
        let p = dir.path().join("m.npz");
        m.save(&p).unwrap();
        assert_eq!(Model::load(&p).unwrap().window, Some(soft()));
        let meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        let mut c = random_cnn(&[1, 4, 1], 3, 1, meta);
        c.window = Some("0:4000 stored".parse().unwrap());
        let p = dir.path().join("c.npz");
        c.save(&p).unwrap();
        assert_eq!(Cnn::load(&p).unwrap().window, c.window);
        c.window = None;
        c.save(&p).unwrap();
        assert_eq!(Cnn::load(&p).unwrap().window, None);
    }

    #[test]
    fn npz_windows_that_are_not_one_range_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npz");
        let write = |extra: &[(&str, Vec<f64>)]| {
            let f = std::fs::File::create(&p).unwrap();
            let mut npz = NpzWriter::new(f);
            let m = random_model(&[9, 4, 1], 1, ModelMeta::default());
            for (i, l) in m.layers.iter().enumerate() {
                npz.add_array(format!("W{}", i + 1), &l.w).unwrap();
                npz.add_array(format!("b{}", i + 1), &l.b).unwrap();
            }
            for (k, v) in extra {
                npz.add_array(*k, &Array1::from(v.clone())).unwrap();
            }
            npz.finish().unwrap();
            Model::load(&p).unwrap_err().to_string()
        };
        let e = write(&[("window_hu", vec![-160.0])]);
        assert!(e.contains("window_hu") && e.contains("two"), "{e}");
        let e = write(&[("window_hu", vec![240.0, -160.0])]);
        assert!(e.contains("window_hu") && e.contains("LO below HI"), "{e}");
        let e = write(&[
            ("window_hu", vec![-160.0, 240.0]),
            ("window_stored", vec![0.0, 4000.0]),
        ]);
        assert!(e.contains("declares 2 windows"), "{e}");
    }

    /// `path`'s safetensors with `extra` added to its metadata, written to `out`.
    fn with_metadata(path: &Path, extra: &[(&str, &str)], out: &Path) {
        let bytes = std::fs::read(path).unwrap();
        let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = ::safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut md: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
        md.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let views: Vec<_> = st.tensors();
        std::fs::write(out, ::safetensors::serialize(views, Some(md)).unwrap()).unwrap();
    }

    #[test]
    fn safetensors_cnns_read_a_declared_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        with_metadata(
            &fixture("tiny-dncnn.safetensors"),
            &[("window", "-160:240 HU")],
            &p,
        );
        assert_eq!(Cnn::load(&p).unwrap().window, Some(soft()));
        with_metadata(
            &fixture("tiny-dncnn.safetensors"),
            &[("window", "lung")],
            &p,
        );
        let e = Cnn::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("metadata window") && e.contains("LO:HI UNITS"),
            "{e}"
        );
    }

    /// `path`'s ONNX model with one more `metadata_props` entry: field 14 of ModelProto,
    /// appended (a repeated field's entries may come anywhere in the message).
    fn with_prop(path: &Path, key: &str, value: &str, out: &Path) {
        use prost::Message;
        let entry = crate::plain::onnx::proto::StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        };
        let mut bytes = std::fs::read(path).unwrap();
        bytes.push((14 << 3) | 2);
        entry.encode_length_delimited(&mut bytes).unwrap();
        std::fs::write(out, bytes).unwrap();
    }

    #[test]
    fn onnx_models_read_a_declared_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.onnx");
        with_prop(&fixture("tiny-mlp.onnx"), "window", "-160:240 HU", &p);
        assert_eq!(Model::load(&p).unwrap().window, Some(soft()));
        with_prop(&fixture("tiny-dncnn.onnx"), "window", "-160:240 HU", &p);
        assert_eq!(Cnn::load(&p).unwrap().window, Some(soft()));
        assert_eq!(Cnn::load(&fixture("tiny-dncnn.onnx")).unwrap().window, None);
        with_prop(&fixture("tiny-dncnn.onnx"), "window", "-160:240 lumens", &p);
        let e = Cnn::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("metadata window") && e.contains("unknown units"),
            "{e}"
        );
    }
}
