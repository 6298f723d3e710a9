//! Model files of the CNN: read from a `.npz` (`K1..KL`, `b1..bL` and the scalar settings of
//! [`crate::model::cnn`]), a `.safetensors` or an `.onnx`, and written as `.npz`, atomically.
//! `Cnn::is_cnn_file`, `Cnn::load` and `Cnn::save` are defined here, above the description
//! they fill.

use std::fs::File;
use std::path::Path;

use ndarray::{Array0, Array1, Array4, Ix0};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::model::cnn::{fixed_point_of, Cnn, CnnMeta, Conv, MAX_CONV_LAYERS};
use crate::model::frame::Frame;
use crate::model::mlp::ModelError;

impl Cnn {
    /// True when the file holds a CNN (`K1`, a 4-D tensor, an ONNX graph of convolutions)
    /// rather than an MLP.
    pub fn is_cnn_file(path: &Path) -> Result<bool, ModelError> {
        if crate::import::onnx::is_onnx(path) {
            return Ok(matches!(
                crate::import::onnx::load(path)?,
                crate::import::onnx::Net::Cnn(_)
            ));
        }
        if crate::import::safetensors::is_safetensors(path)? {
            return crate::import::safetensors::cnn::holds_conv(path);
        }
        // Names only: no array is read, so no size check (a loader runs it).
        let file = File::open(path).map_err(|source| ModelError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, names) = open_npz(path, file)?;
        Ok(names.iter().any(|n| n == "K1"))
    }

    pub fn load(path: &Path) -> Result<Cnn, ModelError> {
        if crate::import::onnx::is_onnx(path) {
            return match crate::import::onnx::load(path)? {
                crate::import::onnx::Net::Cnn(m) => Ok(m),
                crate::import::onnx::Net::Mlp(_) => Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    msg: "holds an MLP where a CNN was expected".into(),
                }),
                crate::import::onnx::Net::Graph(_) => Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    msg: "holds a CNN graph (docs/graph.md) where a chain CNN (DnCNN, FFDNet) \
                          was expected: share-model, share-image, gen-triplets, serve, \
                          reconstruct, denoise, demo, table, bench and inspect take it"
                        .into(),
                }),
            };
        }
        if crate::import::safetensors::is_safetensors(path)? {
            return crate::import::safetensors::cnn::load(path);
        }
        let (mut npz, names) = open_npz(path, crate::import::npz::open_checked(path)?)?;
        let has = |n: &str| names.iter().any(|x| x == n);
        let err = |name: &str, msg: String| ModelError::Array {
            path: path.to_path_buf(),
            name: name.to_string(),
            msg,
        };
        let mut convs = Vec::new();
        while has(&format!("K{}", convs.len() + 1)) {
            let n = convs.len() + 1;
            if n > MAX_CONV_LAYERS {
                return Err(err(
                    &format!("K{n}"),
                    format!("more than {MAX_CONV_LAYERS} layers"),
                ));
            }
            let (kn, bn) = (format!("K{n}"), format!("b{n}"));
            let k: Array4<f64> = read_any(&mut npz, path, &kn)?;
            if !has(&bn) {
                return Err(err(&bn, format!("missing ({kn} is present)")));
            }
            let b: Array1<f64> = read_any(&mut npz, path, &bn)?;
            let (cout, cin, kh, kw) = k.dim();
            if kh != kw {
                return Err(err(
                    &kn,
                    format!("has a {kh}x{kw} kernel (square expected)"),
                ));
            }
            convs.push(Conv {
                cin,
                cout,
                k: kh,
                w: k.iter().copied().collect(),
                b: b.to_vec(),
            });
        }
        if convs.is_empty() {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                msg: format!("no array K1 found (arrays present: {})", names.join(", ")),
            });
        }
        let mut meta = CnnMeta {
            sigma: 25.0,
            residual: true,
        };
        if has("sigma") {
            meta.sigma = read_any::<Ix0>(&mut npz, path, "sigma")?.into_scalar();
        }
        if has("residual") {
            meta.residual = read_any::<Ix0>(&mut npz, path, "residual")?.into_scalar() != 0.0;
        }
        let mut frame = Frame::PLAIN;
        if has("unshuffle") {
            let r = read_any::<Ix0>(&mut npz, path, "unshuffle")?.into_scalar();
            if !(r.fract() == 0.0 && (1.0..=crate::model::frame::MAX_UNSHUFFLE as f64).contains(&r))
            {
                return Err(err(
                    "unshuffle",
                    format!(
                        "is {r} (an integer 1 to {} expected)",
                        crate::model::frame::MAX_UNSHUFFLE
                    ),
                ));
            }
            frame.unshuffle = r as usize;
        }
        if has("noise_map") {
            frame.noise_map = match read_any::<Ix0>(&mut npz, path, "noise_map")?.into_scalar() {
                0.0 => false,
                1.0 => true,
                v => return Err(err("noise_map", format!("is {v} (0 or 1 expected)"))),
            };
        }
        // Absent in gray files: 1.
        let mut colours = 1;
        if has("colours") {
            colours = match read_any::<Ix0>(&mut npz, path, "colours")?.into_scalar() {
                1.0 => 1,
                3.0 => 3,
                v => return Err(err("colours", format!("is {v} (1 or 3 expected)"))),
            };
        }
        let mut fixed_point = None;
        if has("fixed_point") {
            let a: Array1<f64> = read_any(&mut npz, path, "fixed_point")?;
            fixed_point = Some(fixed_point_of(&a.to_vec()).map_err(|e| err("fixed_point", e))?);
        }
        let window = crate::import::mlp::npz_window(&mut npz, path, &names)?;
        Cnn::checked_colour(convs, meta, (frame, colours), fixed_point, window, path)
    }

    /// [`Cnn::load`] for the commands that run gray models only (`demo`, `table`, `bench`):
    /// a colour model is refused by name.
    pub fn load_gray(path: &Path) -> Result<Cnn, ModelError> {
        let m = Cnn::load(path)?;
        if m.colours != 1 {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                msg: "a colour model; this command runs gray models (colour models run in \
                      `denoise`, and securely through share-model, share-image, gen-triplets, \
                      serve and reconstruct)"
                    .into(),
            });
        }
        Ok(m)
    }

    /// Writes the model as `.npz` (f64 arrays), atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::fileio::atomic::write_with(path, |f| {
            let mut npz = NpzWriter::new(f);
            for (i, c) in self.convs.iter().enumerate() {
                let k = Array4::from_shape_vec((c.cout, c.cin, c.k, c.k), c.w.clone())?;
                npz.add_array(format!("K{}", i + 1), &k)?;
                npz.add_array(format!("b{}", i + 1), &Array1::from(c.b.clone()))?;
            }
            let scalar = |v: f64| Array0::from_elem((), v);
            npz.add_array("sigma", &scalar(self.meta.sigma))?;
            npz.add_array("residual", &scalar(self.meta.residual as u8 as f64))?;
            npz.add_array("unshuffle", &scalar(self.frame.unshuffle as f64))?;
            npz.add_array("noise_map", &scalar(self.frame.noise_map as u8 as f64))?;
            // Written for colour only, so a gray model's file keeps its bytes.
            if self.colours != 1 {
                npz.add_array("colours", &scalar(self.colours as f64))?;
            }
            if let Some(f) = self.fixed_point {
                npz.add_array("fixed_point", &Array1::from(f.map(f64::from).to_vec()))?;
            }
            if let Some(d) = &self.window {
                npz.add_array(d.npz_key(), &Array1::from(vec![d.window.lo, d.window.hi]))?;
            }
            npz.finish()?;
            Ok(())
        })
    }
}

/// `file`, opened from `path`, as an npz reader and its entry names.
fn open_npz(path: &Path, file: File) -> Result<(NpzReader<File>, Vec<String>), ModelError> {
    let not_npz = |e: ndarray_npy::ReadNpzError| ModelError::NotNpz {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut npz = NpzReader::new(file).map_err(not_npz)?;
    let names = npz.names().map_err(not_npz)?;
    Ok((npz, names))
}

/// Reads an f64 or f32 array of dimension `D`, widening f32.
fn read_any<D: ndarray::Dimension>(
    npz: &mut NpzReader<File>,
    path: &Path,
    name: &str,
) -> Result<ndarray::Array<f64, D>, ModelError> {
    match npz.by_name::<ndarray::OwnedRepr<f64>, D>(name) {
        Ok(a) => Ok(a),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<f32>, D>(name)
            .map(|a| a.mapv(f64::from))
            .map_err(|e| ModelError::Array {
                path: path.to_path_buf(),
                name: name.to_string(),
                msg: e.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cnn::random_cnn;

    #[test]
    fn save_load_roundtrip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let meta = CnnMeta {
            sigma: 15.0,
            residual: true,
        };
        let m = random_cnn(&[1, 4, 3, 1], 3, 7, meta);
        let p = dir.path().join("cnn.npz");
        m.save(&p).unwrap();
        assert!(Cnn::is_cnn_file(&p).unwrap());
        assert_eq!(Cnn::load(&p).unwrap(), m);

        // A colour FFDNet-shaped model keeps its colours through a file.
        let c = crate::model::cnn::random_framed_cnn(
            &[13, 6, 12],
            3,
            8,
            meta,
            crate::model::frame::Frame::FFDNET,
        );
        assert_eq!(c.colours, 3);
        c.save(&p).unwrap();
        assert_eq!(Cnn::load(&p).unwrap(), c);
        let mut bad = c.clone();
        bad.colours = 1;
        let e = bad.validate(&p).unwrap_err().to_string();
        assert!(e.contains("must map 5 channel(s) to 4"), "{e}");

        let mut bad = m.clone();
        bad.convs[1].cin = 5;
        bad.convs[1].w = vec![0.0; 3 * 5 * 9];
        let e = bad.validate(&p).unwrap_err().to_string();
        assert!(e.contains("K2") && e.contains("do not chain"), "{e}");
        let mut bad = m.clone();
        bad.convs[0].b[0] = f64::NAN;
        let e = bad.validate(&p).unwrap_err().to_string();
        assert!(e.contains("b1") && e.contains("non-finite"), "{e}");
    }
}
