//! MLP denoisers as PyTorch saves them: a `.safetensors` file holding the state dict of an
//! `nn.Sequential` of `nn.Linear` layers (activations have no parameters, so they leave no
//! tensors), read with the `safetensors` crate into the same [`Model`] as a `.npz`.
//!
//! Tensors are `<prefix><index>.weight` (out x in, PyTorch's layout and ours) and
//! `<prefix><index>.bias`, one prefix for the whole file (`""`, `net.`, `model.layers.`, ...),
//! layers ordered by index. The settings a `.npz` carries as scalars are strings in the
//! header's `__metadata__` map. Anything else (another tensor, a missing bias, a tensor of
//! another rank or type, a conv kernel) is refused by name, so a file that is not such an MLP
//! never becomes a silently wrong denoiser.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use ::safetensors::tensor::TensorInfo;
use ::safetensors::{Dtype, SafeTensors};
use ndarray::{Array1, Array2};

use crate::image::window::{DeclaredWindow, MODEL_WINDOW};
use crate::model::mlp::{Activation, Layer, Model, ModelError, ModelMeta};

pub mod cnn;

/// Longest JSON header accepted: an MLP's lists a few tensors in a few hundred bytes; a MiB
/// holds thousands. (The crate's own cap is 100 MB.)
const MAX_HEADER: u64 = 1 << 20;

/// Largest file accepted: the header and as much data as a `.npz` model may hold.
const MAX_FILE: u64 = 8 + MAX_HEADER + super::npz::MAX_TOTAL_BYTES;

/// Settings read from `__metadata__`; `format` is what PyTorch tooling often adds ("pt").
const KEYS: [&str; 6] = [
    "sigma",
    "mean_shift",
    "residual",
    "activation",
    "aggregation_sigma",
    MODEL_WINDOW,
];
const IGNORED_KEYS: [&str; 1] = ["format"];

/// True when the file starts like a safetensors file (an 8-byte header length, then the
/// JSON header's `{`), or is named `.safetensors` and is not a zip (so that a damaged one is
/// reported as such, not as a bad `.npz`). A zip (`PK`, as `np.savez` writes) is a `.npz`,
/// whatever its name.
pub fn is_safetensors(path: &Path) -> Result<bool, ModelError> {
    let file = File::open(path).map_err(|source| ModelError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut head = Vec::with_capacity(9);
    file.take(9)
        .read_to_end(&mut head)
        .map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if head.starts_with(b"PK") {
        return Ok(false);
    }
    let named = path.extension().is_some_and(|e| e == "safetensors");
    Ok(named || (head.len() == 9 && head[8] == b'{'))
}

/// Reads the MLP in the `.safetensors` file at `path`.
pub fn load(path: &Path) -> Result<Model, ModelError> {
    let bytes = read_checked(path)?;
    parse(path, &bytes)
}

pub(super) fn not_st(path: &Path, msg: String) -> ModelError {
    ModelError::NotSafetensors {
        path: path.to_path_buf(),
        msg,
    }
}

/// The whole file, after checking that its header length fits the caps and the file: the
/// crate then checks that the tensors cover exactly the bytes after the header, so nothing
/// later allocates more than twice the file's size (f32 widened to f64).
pub(super) fn read_checked(path: &Path) -> Result<Vec<u8>, ModelError> {
    let open = |source| ModelError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open)?;
    let size = file.metadata().map_err(open)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| not_st(path, "shorter than the 8-byte header length".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(not_st(
            path,
            format!("header of {n} bytes (at most {MAX_HEADER})"),
        ));
    }
    if 8 + n > size {
        return Err(not_st(
            path,
            format!("header of {n} bytes, but the file holds {size} bytes"),
        ));
    }
    if size > MAX_FILE {
        return Err(not_st(
            path,
            format!("{size} bytes; a model file may hold at most {MAX_FILE}"),
        ));
    }
    file.rewind().map_err(open)?;
    let mut bytes = Vec::with_capacity(size as usize);
    // Capped again: the file may have grown since its size was read.
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(open)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(not_st(
            path,
            format!("more than {MAX_FILE} bytes (the file grew while being read)"),
        ));
    }
    Ok(bytes)
}

/// One layer's tensor names, as found.
#[derive(Default)]
struct Pair<'a> {
    weight: Option<&'a str>,
    bias: Option<&'a str>,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Model, ModelError> {
    // The crate checks the offsets: each tensor's bytes match its shape and type, and the
    // tensors tile the data after the header exactly.
    let (n, header) = SafeTensors::read_metadata(bytes).map_err(|e| not_st(path, e.to_string()))?;
    let data = &bytes[8 + n..];
    let tensor_err = |name: &str, msg: String| ModelError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        msg,
    };
    let all = header.tensors();
    let mut names: Vec<&str> = all.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.is_empty() {
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            msg: "holds no tensors (expected 0.weight, 0.bias, ...)".into(),
        });
    }
    let mut prefix: Option<(&str, &str)> = None;
    let mut layers: BTreeMap<usize, Pair> = BTreeMap::new();
    for &name in &names {
        let (p, index, kind) = split_name(name).ok_or_else(|| {
            tensor_err(
                name,
                "is not a Linear layer's weight or bias (expected <prefix><index>.weight and \
                 .bias: the state dict of an nn.Sequential of nn.Linear layers and activations)"
                    .into(),
            )
        })?;
        match prefix {
            None => prefix = Some((p, name)),
            Some((q, first)) if q != p => {
                return Err(tensor_err(
                    name,
                    format!(
                        "has prefix {p:?} but {first} has {q:?}: a file must hold one MLP, \
                         its tensors all <prefix><index>.weight/.bias with one prefix"
                    ),
                ))
            }
            Some(_) => {}
        }
        let pair = layers.entry(index).or_default();
        match kind {
            Kind::Weight => pair.weight = Some(name),
            Kind::Bias => pair.bias = Some(name),
        }
    }
    let prefix = prefix.map_or("", |(p, _)| p);
    let mut out: Vec<Layer> = Vec::with_capacity(layers.len());
    let mut previous: Option<&str> = None;
    let mut previous_index: Option<usize> = None;
    for (index, pair) in &layers {
        let (wname, bname) = (
            format!("{prefix}{index}.weight"),
            format!("{prefix}{index}.bias"),
        );
        // Sequential indices one apart are two Linear layers with no activation between
        // them, which this network (an activation after every hidden layer) cannot be.
        if let Some(p) = previous_index {
            if *index == p + 1 {
                return Err(tensor_err(
                    &wname,
                    format!(
                        "follows {prefix}{p}.weight directly: two Linear layers with no \
                         activation between them are not an MLP of this kind"
                    ),
                ));
            }
        }
        previous_index = Some(*index);
        let Some(wn) = pair.weight else {
            return Err(tensor_err(&wname, format!("missing ({bname} is present)")));
        };
        let Some(bn) = pair.bias else {
            return Err(tensor_err(
                &bname,
                format!(
                    "missing ({wname} is present; a Linear layer without a bias is not \
                     supported: save one of zeros)"
                ),
            ));
        };
        let (wi, bi) = (all[wn], all[bn]);
        let (rows, cols) = match wi.shape[..] {
            [r, c] => (r, c),
            _ => {
                let hint = if wi.shape.len() == 4 {
                    " (a convolution kernel?)"
                } else {
                    ""
                };
                return Err(tensor_err(
                    wn,
                    format!(
                        "has shape {:?}{hint}: not an MLP; a Linear weight is 2-D \
                         (out_features x in_features)",
                        wi.shape
                    ),
                ));
            }
        };
        if rows == 0 || cols == 0 {
            return Err(tensor_err(wn, format!("is empty (shape {:?})", wi.shape)));
        }
        if bi.shape != [rows] {
            return Err(tensor_err(
                bn,
                format!(
                    "has shape {:?} but {wn} has {rows} rows (expected [{rows}])",
                    bi.shape
                ),
            ));
        }
        if let (Some(prev), Some(l)) = (previous, out.last()) {
            if cols != l.w.nrows() {
                return Err(tensor_err(
                    wn,
                    format!(
                        "takes {cols} inputs but {prev} outputs {} values (layers do not \
                         chain)",
                        l.w.nrows()
                    ),
                ));
            }
        }
        let w = values(path, wn, wi, data)?;
        let b = values(path, bn, bi, data)?;
        out.push(Layer {
            w: Array2::from_shape_vec((rows, cols), w).expect("shape checked"),
            b: Array1::from(b),
        });
        previous = Some(wn);
    }
    let meta = settings(path, header.metadata().as_ref())?;
    let window = declared_window(path, header.metadata().as_ref())?;
    let m = Model {
        layers: out,
        meta,
        window,
    };
    m.validate(path)?;
    Ok(m)
}

enum Kind {
    Weight,
    Bias,
}

/// `<prefix><index>.weight|bias` -> (prefix, index, kind).
fn split_name(name: &str) -> Option<(&str, usize, Kind)> {
    let (stem, kind) = name.rsplit_once('.')?;
    let kind = match kind {
        "weight" => Kind::Weight,
        "bias" => Kind::Bias,
        _ => return None,
    };
    let (prefix, index) = split_index(stem)?;
    Some((prefix, index, kind))
}

/// `<prefix><index>` -> (prefix, index); the prefix is empty or ends in a dot, the index is
/// written as PyTorch writes it (no sign, no leading zero).
pub(super) fn split_index(stem: &str) -> Option<(&str, usize)> {
    let at = stem.rfind('.').map_or(0, |i| i + 1);
    let digits = &stem[at..];
    let canonical = !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| (&stem[..at], digits.parse().expect("checked digits")))
}

/// A tensor's values as f64 (F32 widened exactly, F64 as is), refusing other types and
/// non-finite values by name.
pub(super) fn values(
    path: &Path,
    name: &str,
    info: &TensorInfo,
    data: &[u8],
) -> Result<Vec<f64>, ModelError> {
    let err = |msg: String| ModelError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        msg,
    };
    let (start, end) = info.data_offsets;
    let data = &data[start..end];
    // Safetensors data is little-endian, row-major (C order), as PyTorch's contiguous tensors.
    let v: Vec<f64> = match info.dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        other => {
            return Err(err(format!(
                "has dtype {other}; F32 or F64 expected (in PyTorch, save model.float() or \
                 model.double())"
            )))
        }
    };
    if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
        return Err(err(format!("non-finite value at flat index {bad}")));
    }
    Ok(v)
}

/// The window a model's metadata declares (`window`: "LO:HI UNITS"), shared by the
/// `.safetensors` and ONNX readers.
pub(crate) fn declared_window(
    path: &Path,
    md: Option<&HashMap<String, String>>,
) -> Result<Option<DeclaredWindow>, ModelError> {
    md.and_then(|m| m.get(MODEL_WINDOW))
        .map(|v| {
            v.parse().map_err(|msg| ModelError::Setting {
                path: path.to_path_buf(),
                key: MODEL_WINDOW.into(),
                msg,
            })
        })
        .transpose()
}

/// The model's settings from the header's `__metadata__`; absent keys keep the `.npz`
/// defaults ([`ModelMeta::default`]).
pub(crate) fn settings(
    path: &Path,
    md: Option<&HashMap<String, String>>,
) -> Result<ModelMeta, ModelError> {
    let mut meta = ModelMeta::default();
    let Some(md) = md else {
        return Ok(meta);
    };
    let err = |key: &str, value: &str, expected: &str| ModelError::Setting {
        path: path.to_path_buf(),
        key: key.to_string(),
        msg: format!("is {value:?}; expected {expected}"),
    };
    let mut keys: Vec<&String> = md.keys().collect();
    keys.sort_unstable();
    for key in keys {
        if !KEYS.contains(&key.as_str()) && !IGNORED_KEYS.contains(&key.as_str()) {
            return Err(ModelError::Setting {
                path: path.to_path_buf(),
                key: key.clone(),
                msg: format!("is not a setting of ppdenoise (known: {})", KEYS.join(", ")),
            });
        }
    }
    let number = |key: &str| -> Result<Option<f64>, ModelError> {
        md.get(key)
            .map(|v| match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(err(key, v, "a finite number")),
            })
            .transpose()
    };
    let flag = |key: &str| -> Result<Option<bool>, ModelError> {
        md.get(key)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(err(key, v, "true or false (or 1 or 0)")),
            })
            .transpose()
    };
    if let Some(s) = number("sigma")? {
        if s <= 0.0 {
            return Err(err("sigma", &md["sigma"], "a positive number"));
        }
        meta.sigma = s;
    }
    if let Some(b) = flag("mean_shift")? {
        meta.mean_shift = b;
    }
    if let Some(b) = flag("residual")? {
        meta.residual = b;
    }
    if let Some(v) = md.get("activation") {
        meta.activation = match v.trim() {
            "tanh" => Activation::Tanh,
            "tanh_star" => Activation::TanhStar,
            "relu" => Activation::Relu,
            _ => return Err(err("activation", v, "tanh, tanh_star or relu")),
        };
    }
    if let Some(s) = number("aggregation_sigma")? {
        meta.aggregation_sigma = s;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ::safetensors::tensor::TensorView;

    use super::*;

    /// One tensor: name, dtype, shape, little-endian bytes.
    type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

    fn f32s(name: &str, shape: &[usize], f: impl Fn(usize) -> f32) -> Raw {
        let n: usize = shape.iter().product();
        let bytes = (0..n).flat_map(|i| f(i).to_le_bytes()).collect();
        (name.into(), Dtype::F32, shape.to_vec(), bytes)
    }

    /// `<prefix><i>.weight/.bias` of an MLP of `widths` at Sequential indices 0, 2, 4, ...
    fn mlp(prefix: &str, widths: &[usize]) -> Vec<Raw> {
        let mut t = Vec::new();
        for (k, p) in widths.windows(2).enumerate() {
            let i = 2 * k;
            t.push(f32s(&format!("{prefix}{i}.weight"), &[p[1], p[0]], |j| {
                ((j * 7 + k) % 13) as f32 / 64.0 - 0.1
            }));
            t.push(f32s(&format!("{prefix}{i}.bias"), &[p[1]], |j| {
                j as f32 / 100.0
            }));
        }
        t
    }

    fn write(dir: &Path, tensors: &[Raw], meta: &[(&str, &str)]) -> PathBuf {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let md = (!meta.is_empty()).then(|| {
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        let bytes = ::safetensors::serialize(views, md).unwrap();
        let p = dir.join("m.safetensors");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The error of loading `tensors` + `meta`: it names the file and `expect`s each string.
    fn refused(tensors: &[Raw], meta: &[(&str, &str)], expect: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), tensors, meta);
        let e = Model::load(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        for s in expect {
            assert!(e.contains(s), "{e:?} should contain {s:?}");
        }
        // Taken for a CNN only with a 4-D tensor (a conv kernel, then read by the CNN loader).
        let conv = tensors.iter().any(|t| t.2.len() == 4);
        assert_eq!(crate::model::cnn::Cnn::is_cnn_file(&p).unwrap(), conv);
    }

    #[test]
    fn pytorch_names_in_index_order_with_settings() {
        let dir = tempfile::tempdir().unwrap();
        // Six layers: indices 0..10, where text order would put 10 before 2.
        let widths = [9, 4, 5, 6, 7, 8, 1];
        let p = write(
            dir.path(),
            &mlp("model.layers.", &widths),
            &[
                ("sigma", "15"),
                ("mean_shift", "True"),
                ("residual", "0"),
                ("activation", "tanh"),
                ("aggregation_sigma", "0.5"),
                ("format", "pt"),
            ],
        );
        let m = Model::load(&p).unwrap();
        // Told apart from a .npz by content, whatever the name.
        let renamed = dir.path().join("model.bin");
        std::fs::copy(&p, &renamed).unwrap();
        assert!(is_safetensors(&renamed).unwrap());
        assert_eq!(Model::load(&renamed).unwrap(), m);
        let npz = dir.path().join("model.npz");
        m.save(&npz).unwrap();
        for name in ["model.bin", "model.safetensors"] {
            let renamed = dir.path().join(name);
            std::fs::copy(&npz, &renamed).unwrap();
            assert!(!is_safetensors(&renamed).unwrap());
            assert_eq!(Model::load(&renamed).unwrap(), m);
        }
        assert_eq!(m.widths(), widths);
        // Layer 1 (Sequential index 2), row 2, column 3: flat index 11, widened from f32.
        let want = (((11 * 7 + 1) % 13) as f32 / 64.0 - 0.1) as f64;
        assert_eq!(m.layers[1].w[(2, 3)], want);
        assert_eq!(
            m.meta,
            ModelMeta {
                sigma: 15.0,
                mean_shift: true,
                residual: false,
                activation: Activation::Tanh,
                aggregation_sigma: 0.5,
            }
        );
        // No metadata: the .npz defaults; no prefix: plain Sequential names.
        let p = write(dir.path(), &mlp("", &[9, 3, 1]), &[]);
        let m = Model::load(&p).unwrap();
        assert_eq!((m.widths(), m.meta), (vec![9, 3, 1], ModelMeta::default()));
    }

    #[test]
    fn f64_tensors_are_read_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let v = 0.1f64 + 1e-12;
        let t = vec![
            (
                "0.weight".into(),
                Dtype::F64,
                vec![1, 9],
                v.to_le_bytes().repeat(9),
            ),
            (
                "0.bias".into(),
                Dtype::F64,
                vec![1],
                (-v).to_le_bytes().to_vec(),
            ),
        ];
        let m = Model::load(&write(dir.path(), &t, &[])).unwrap();
        assert!(m.layers[0].w.iter().all(|&x| x == v));
        assert_eq!(m.layers[0].b[0], -v);
    }

    #[test]
    fn names_that_are_not_an_mlp_are_refused_by_name() {
        let mut t = mlp("", &[9, 4, 1]);
        t.push(f32s("0.running_mean", &[4], |_| 0.0));
        refused(
            &t,
            &[],
            &[
                "tensor 0.running_mean",
                "not a Linear layer's weight or bias",
            ],
        );
        let mut t = mlp("net.", &[9, 4, 1]);
        t.push(f32s("head.4.weight", &[1, 1], |_| 0.0));
        t.push(f32s("head.4.bias", &[1], |_| 0.0));
        refused(&t, &[], &["tensor net.", "has prefix", "one prefix"]);
        let mut t = mlp("", &[9, 4, 1]);
        t.push(f32s("02.weight", &[1, 1], |_| 0.0));
        refused(&t, &[], &["tensor 02.weight"]);
        // A missing bias, a bias without weight.
        let mut t = mlp("", &[9, 4, 1]);
        t.retain(|r| r.0 != "2.bias");
        refused(&t, &[], &["tensor 2.bias: missing (2.weight is present"]);
        let mut t = mlp("", &[9, 4, 1]);
        t.retain(|r| r.0 != "0.weight");
        refused(&t, &[], &["tensor 0.weight: missing (0.bias is present)"]);
        refused(&[], &[], &["holds no tensors"]);
        // Two Linear layers back to back (indices 0 and 1): no activation between them.
        let t = vec![
            f32s("0.weight", &[4, 9], |_| 0.0),
            f32s("0.bias", &[4], |_| 0.0),
            f32s("1.weight", &[1, 4], |_| 0.0),
            f32s("1.bias", &[1], |_| 0.0),
        ];
        refused(&t, &[], &["tensor 1.weight", "follows 0.weight directly"]);
    }

    #[test]
    fn shapes_and_dtypes_that_are_not_an_mlp_are_refused_by_name() {
        // A conv kernel, as a CNN's state dict holds.
        let mut t = mlp("", &[9, 4, 1]);
        t[0] = f32s("0.weight", &[4, 1, 3, 3], |_| 0.0);
        refused(
            &t,
            &[],
            &[
                "tensor 0.weight",
                "[4, 1, 3, 3]",
                "convolution",
                "not an MLP",
            ],
        );
        let mut t = mlp("", &[9, 4, 1]);
        t[1] = f32s("0.bias", &[5], |_| 0.0);
        refused(&t, &[], &["tensor 0.bias", "has shape [5]", "4 rows"]);
        // Layers that do not chain.
        let mut t = mlp("", &[9, 4, 1]);
        t[2] = f32s("2.weight", &[1, 5], |_| 0.0);
        refused(
            &t,
            &[],
            &["tensor 2.weight", "takes 5 inputs but 0.weight outputs 4"],
        );
        // Integer and half-precision tensors.
        let mut t = mlp("", &[9, 4, 1]);
        t[1] = ("0.bias".into(), Dtype::I32, vec![4], vec![0; 16]);
        refused(&t, &[], &["tensor 0.bias", "dtype I32", "F32 or F64"]);
        let mut t = mlp("", &[9, 4, 1]);
        t[0] = ("0.weight".into(), Dtype::F16, vec![4, 9], vec![0; 72]);
        refused(&t, &[], &["tensor 0.weight", "dtype F16"]);
        let mut t = mlp("", &[9, 4, 1]);
        t[2] = f32s("2.weight", &[1, 4], |i| if i == 3 { f32::NAN } else { 0.0 });
        refused(
            &t,
            &[],
            &["tensor 2.weight", "non-finite value at flat index 3"],
        );
        // Widths the patch geometry cannot use (10 inputs is no square window).
        refused(&mlp("", &[10, 4, 1]), &[], &["square patches"]);
    }

    #[test]
    fn bad_settings_are_refused_by_key() {
        let t = mlp("", &[9, 4, 1]);
        refused(
            &t,
            &[("sigma", "abc")],
            &["metadata sigma", "\"abc\"", "number"],
        );
        refused(&t, &[("sigma", "-3")], &["metadata sigma", "positive"]);
        refused(&t, &[("sigma", "inf")], &["metadata sigma"]);
        refused(
            &t,
            &[("residual", "yes")],
            &["metadata residual", "true or false"],
        );
        refused(
            &t,
            &[("activation", "gelu")],
            &["metadata activation", "tanh, tanh_star or relu"],
        );
        refused(&t, &[("aggregation_sigma", "0.1")], &["aggregation_sigma"]);
        refused(
            &t,
            &[("sigmaa", "25")],
            &["metadata sigmaa", "not a setting"],
        );
        refused(
            &t,
            &[("window", "-160:240")],
            &["metadata window", "LO:HI UNITS"],
        );
        refused(
            &t,
            &[("window", "240:-160 HU")],
            &["metadata window", "LO below HI"],
        );
    }

    #[test]
    fn a_declared_window_is_read_from_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let t = mlp("", &[9, 4, 1]);
        let m = Model::load(&write(dir.path(), &t, &[("window", "-160:240 HU")])).unwrap();
        assert_eq!(m.window, Some("-160:240 HU".parse().unwrap()));
        assert_eq!(
            Model::load(&write(dir.path(), &t, &[])).unwrap().window,
            None
        );
    }

    #[test]
    fn sizes_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let load = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            Model::load(&p).unwrap_err().to_string()
        };
        // A header length past the file or past the cap: refused before reading on.
        let mut b = 1000u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert!(load(&b).contains("header of 1000 bytes, but the file holds 10"));
        let mut b = u64::MAX.to_le_bytes().to_vec();
        b[0] = b'{';
        b.push(b'{');
        assert!(load(&b).contains("at most 1048576"));
        // A shape that claims more data than the file holds.
        let h = br#"{"0.weight":{"dtype":"F64","shape":[100000,100000],"data_offsets":[0,80000000000]}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h);
        b.extend_from_slice(&[0; 64]);
        let e = load(&b);
        assert!(e.contains("not a valid .safetensors model file"), "{e}");
    }
}
