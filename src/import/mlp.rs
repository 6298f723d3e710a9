//! Model files of the MLP: read from a `.npz`, a `.safetensors` or an `.onnx` (told apart by
//! their first bytes, whatever the name says) and written as `.npz`, atomically. `Model::load`
//! and `Model::save` are defined here, above the description (`crate::model::mlp`) they fill.

use std::fs::File;
use std::path::Path;

use ndarray::{Array0, Array1, Array2, Ix0, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};

use crate::image::window::DeclaredWindow;
use crate::model::mlp::{Activation, Layer, Model, ModelError, ModelMeta};

impl Model {
    /// Reads a model `.npz`, a `.safetensors` as PyTorch saves one (told apart by their
    /// first bytes, whatever the name says; see [`crate::import::safetensors`]), or an `.onnx`
    /// ([`crate::import::onnx`]).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        if crate::import::onnx::is_onnx(path) {
            return match crate::import::onnx::load(path)? {
                crate::import::onnx::Net::Mlp(m) => Ok(m),
                crate::import::onnx::Net::Cnn(_) => Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    msg: "holds a CNN where an MLP was expected".into(),
                }),
                crate::import::onnx::Net::Graph(_) => Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    msg: "holds a CNN graph (docs/graph.md) where an MLP was expected: \
                          share-model, share-image, gen-triplets, serve, reconstruct, \
                          denoise, demo, table, bench and inspect take it"
                        .into(),
                }),
            };
        }
        if crate::import::safetensors::is_safetensors(path)? {
            return crate::import::safetensors::load(path);
        }
        let file = crate::import::npz::open_checked(path)?;
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
        crate::fileio::atomic::write_with(path, |f| {
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

#[cfg(test)]
mod tests {
    //! A declared window is read by all five readers (`.npz` MLP and CNN, `.safetensors` MLP
    //! and CNN, ONNX MLP and CNN share the metadata parser) and written back by `save`.

    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;
    use crate::model::cnn::{random_cnn, Cnn, CnnMeta};
    use crate::model::mlp::random_model;

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
        let entry = crate::import::onnx::proto::StringStringEntryProto {
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
