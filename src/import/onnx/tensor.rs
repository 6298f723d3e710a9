//! Concrete tensors: the graph's constants (initializers, `Constant` nodes) as f64, and the
//! public rearrangements (Reshape, Transpose, DepthToSpace, Tile, ...) evaluated on them.
//! The importer runs the rearrangements around the convolution stack on probes (tensors of
//! position numbers) to learn which pixel-(un)shuffle they are, whatever ops spell it.

use super::proto::{data_type, varints, TensorProto};

/// Most values one tensor may hold in the importer's evaluations: a probe of a 1024 x 1024
/// example input. Weights are not bounded by this (they are only read, never rearranged).
pub const MAX_PROBE: usize = 1 << 20;

/// Most axes a tensor may have (the networks read use 6 at most, in a pixel shuffle), so
/// that index arithmetic stays proportional to the values.
pub const MAX_RANK: usize = 8;

fn check_rank(r: usize) -> Result<(), String> {
    if r > MAX_RANK {
        return Err(format!("a tensor of rank {r} (at most {MAX_RANK})"));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

/// Number of values of a tensor of these dims, if it fits in `cap`.
pub fn volume(dims: &[usize], cap: usize) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= cap)
}

impl Tensor {
    pub fn new(dims: Vec<usize>, data: Vec<f64>) -> Tensor {
        debug_assert_eq!(volume(&dims, usize::MAX), Some(data.len()));
        Tensor { dims, data }
    }

    pub fn scalar(v: f64) -> Tensor {
        Tensor::new(vec![], vec![v])
    }

    /// The tensor's values read from its message, after checking that its declared size
    /// matches the data it carries (so nothing is allocated for a size only declared).
    /// `cap`: most values accepted.
    pub fn from_proto(t: &TensorProto, cap: usize) -> Result<Tensor, String> {
        if t.data_location != 0 || !t.external_data.is_empty() {
            return Err(
                "its data is stored outside the file (external data); save the model \
                        with the weights inside it (onnx.save(m, f, save_as_external_data=False))"
                    .into(),
            );
        }
        if t.segment.is_some() {
            return Err("is split into segments, which are not supported".into());
        }
        check_rank(t.dims.len())?;
        let mut dims = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            if d < 0 {
                return Err(format!("has a negative dimension {d}"));
            }
            dims.push(usize::try_from(d).map_err(|_| format!("dimension {d} too large"))?);
        }
        let n = volume(&dims, cap)
            .ok_or_else(|| format!("declares shape {dims:?}, more than {cap} values"))?;
        // Empty tensors have no use in these networks, and a zero beside huge dimensions
        // would make the index loops long.
        if n == 0 {
            return Err(format!("is empty (shape {dims:?})"));
        }
        // Integers are shapes, axes and repeats here, never weights.
        let int = matches!(t.data_type, data_type::INT32 | data_type::INT64);
        if int && n > MAX_PROBE {
            return Err(format!(
                "is an integer tensor of {n} values (at most {MAX_PROBE}: integers are shapes \
                 and axes in these networks)"
            ));
        }
        let raw = !t.raw_data.is_empty();
        let width = match t.data_type {
            data_type::FLOAT | data_type::INT32 => 4,
            data_type::INT64 | data_type::DOUBLE => 8,
            other => {
                return Err(format!(
                    "has data type {} (float, double, int32 or int64 supported; export the \
                     model in float32)",
                    type_name(other)
                ))
            }
        };
        let data: Vec<f64> = if raw {
            if n.checked_mul(width) != Some(t.raw_data.len()) {
                return Err(format!(
                    "declares shape {dims:?} ({n} values) but holds {} bytes",
                    t.raw_data.len()
                ));
            }
            let c = t.raw_data.chunks_exact(width);
            match t.data_type {
                data_type::FLOAT => c
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4")) as f64)
                    .collect(),
                data_type::INT32 => c
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4")) as f64)
                    .collect(),
                data_type::INT64 => c
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f64)
                    .collect(),
                _ => c
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8")))
                    .collect(),
            }
        } else {
            let v: Vec<f64> = match t.data_type {
                data_type::FLOAT => t.float_data.iter().map(|&x| x as f64).collect(),
                data_type::DOUBLE => t.double_data.clone(),
                data_type::INT32 | data_type::INT64 => {
                    let bytes = if t.data_type == data_type::INT32 {
                        &t.int32_data
                    } else {
                        &t.int64_data
                    };
                    // At least one byte per value: a declared size larger than the bytes
                    // is refused before decoding.
                    // One to ten bytes per value: sizes outside are refused before decoding.
                    if bytes.len() < n || bytes.len() / 10 > n {
                        return Err(format!(
                            "declares shape {dims:?} ({n} values) but holds {} bytes of them",
                            bytes.len()
                        ));
                    }
                    varints(bytes, n)
                        .ok_or("holds a malformed integer list, or more values than its shape")?
                        .into_iter()
                        .map(|x| x as f64)
                        .collect()
                }
                _ => unreachable!("types checked above"),
            };
            if v.len() != n {
                return Err(format!(
                    "declares shape {dims:?} ({n} values) but holds {}",
                    v.len()
                ));
            }
            v
        };
        Ok(Tensor { dims, data })
    }

    /// The values as integers (shapes, axes, repeats), refusing fractions.
    pub fn ints(&self) -> Option<Vec<i64>> {
        self.data
            .iter()
            .map(|&v| (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64))
            .collect()
    }

    fn strides(dims: &[usize]) -> Vec<usize> {
        let mut s = vec![1; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * dims[i + 1];
        }
        s
    }

    /// ONNX Reshape: 0 copies the input's dimension (unless `allowzero`), -1 is inferred.
    pub fn reshape(&self, shape: &[i64], allowzero: bool) -> Result<Tensor, String> {
        check_rank(shape.len())?;
        let mut dims = Vec::with_capacity(shape.len());
        let mut infer = None;
        for (i, &s) in shape.iter().enumerate() {
            dims.push(match s {
                -1 if infer.is_none() => {
                    infer = Some(i);
                    1
                }
                0 if !allowzero => *self
                    .dims
                    .get(i)
                    .ok_or_else(|| format!("shape {shape:?}: 0 at axis {i} past the input"))?,
                s if s >= 0 => s as usize,
                _ => return Err(format!("shape {shape:?} is not a valid target")),
            });
        }
        if let Some(i) = infer {
            let rest = volume(&dims, usize::MAX).unwrap_or(0);
            if rest == 0 || !self.data.len().is_multiple_of(rest) {
                return Err(format!("cannot infer the -1 of shape {shape:?}"));
            }
            dims[i] = self.data.len() / rest;
        }
        if volume(&dims, usize::MAX) != Some(self.data.len()) || dims.contains(&0) {
            return Err(format!(
                "cannot reshape {:?} ({} values) to {shape:?}",
                self.dims,
                self.data.len()
            ));
        }
        Ok(Tensor::new(dims, self.data.clone()))
    }

    /// ONNX Transpose; `perm` empty reverses the axes.
    pub fn transpose(&self, perm: &[i64]) -> Result<Tensor, String> {
        let r = self.dims.len();
        let perm: Vec<usize> = if perm.is_empty() {
            (0..r).rev().collect()
        } else {
            perm.iter().map(|&p| p as usize).collect()
        };
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return Err(format!("perm {perm:?} is not a permutation of {r} axes"));
        }
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let src = Tensor::strides(&self.dims);
        self.gather(dims, perm.iter().map(|&p| src[p]).collect(), |_, i| i)
    }

    /// ONNX DepthToSpace on N x C x H x W (`crd`: mode CRD, else DCR).
    pub fn depth_to_space(&self, b: usize, crd: bool) -> Result<Tensor, String> {
        let [n, c, h, w] = self.dims[..] else {
            return Err(format!("input of rank {} (4 expected)", self.dims.len()));
        };
        if b == 0 || c % (b * b) != 0 {
            return Err(format!("{c} channels do not split into blocks of {b}x{b}"));
        }
        let c2 = c / (b * b);
        let six = if crd {
            self.reshape(&[n, c2, b, b, h, w].map(|v| v as i64), true)?
                .transpose(&[0, 1, 4, 2, 5, 3])?
        } else {
            self.reshape(&[n, b, b, c2, h, w].map(|v| v as i64), true)?
                .transpose(&[0, 3, 4, 1, 5, 2])?
        };
        six.reshape(&[n, c2, h * b, w * b].map(|v| v as i64), true)
    }

    /// ONNX SpaceToDepth on N x C x H x W.
    pub fn space_to_depth(&self, b: usize) -> Result<Tensor, String> {
        let [n, c, h, w] = self.dims[..] else {
            return Err(format!("input of rank {} (4 expected)", self.dims.len()));
        };
        if b == 0 || h % b != 0 || w % b != 0 {
            return Err(format!("{h}x{w} does not split into blocks of {b}x{b}"));
        }
        self.reshape(&[n, c, h / b, b, w / b, b].map(|v| v as i64), true)?
            .transpose(&[0, 3, 5, 1, 2, 4])?
            .reshape(&[n, c * b * b, h / b, w / b].map(|v| v as i64), true)
    }

    /// ONNX Tile (`repeats` one per axis).
    pub fn tile(&self, repeats: &[i64]) -> Result<Tensor, String> {
        if repeats.len() != self.dims.len() || repeats.iter().any(|&r| r < 0) {
            return Err(format!(
                "repeats {repeats:?} for a tensor of rank {}",
                self.dims.len()
            ));
        }
        let dims: Vec<usize> = self
            .dims
            .iter()
            .zip(repeats)
            .map(|(&d, &r)| d.checked_mul(r as usize).filter(|&v| v > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("repeats {repeats:?} give an empty or too large tensor"))?;
        self.gather_from(dims, |a, i| i % self.dims[a])
    }

    /// ONNX Expand: numpy broadcasting of the tensor to `shape`.
    pub fn expand(&self, shape: &[i64]) -> Result<Tensor, String> {
        let r = shape.len().max(self.dims.len());
        check_rank(r)?;
        let pad = |d: &[usize]| {
            let mut v = vec![1; r - d.len()];
            v.extend_from_slice(d);
            v
        };
        let own = pad(&self.dims);
        if shape.iter().any(|&s| s < 1) {
            return Err(format!("shape {shape:?} is not a valid target"));
        }
        let want: Vec<usize> = pad(&shape.iter().map(|&s| s as usize).collect::<Vec<_>>());
        let mut dims = Vec::with_capacity(r);
        for (&a, &b) in own.iter().zip(&want) {
            dims.push(match (a, b) {
                (a, b) if a == b || b == 1 => a,
                (1, b) => b,
                _ => return Err(format!("cannot broadcast {:?} to {shape:?}", self.dims)),
            });
        }
        let src = Tensor::new(own.clone(), self.data.clone());
        src.gather_from(dims, |a, i| if own[a] == 1 { 0 } else { i })
    }

    /// A tensor of `dims` whose value at each index takes this tensor's value at the index
    /// `map(axis, i)` maps it to, axis by axis (the source's axes in the same order).
    fn gather_from(
        &self,
        dims: Vec<usize>,
        map: impl Fn(usize, usize) -> usize,
    ) -> Result<Tensor, String> {
        self.gather(dims, Tensor::strides(&self.dims), map)
    }

    /// [`Tensor::gather_from`] with the source's stride for each axis of the result given
    /// (a transpose's are the source's permuted).
    fn gather(
        &self,
        dims: Vec<usize>,
        src: Vec<usize>,
        map: impl Fn(usize, usize) -> usize,
    ) -> Result<Tensor, String> {
        let n = volume(&dims, MAX_PROBE)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("result of shape {dims:?} is empty or too large"))?;
        let r = dims.len();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; r];
        for _ in 0..n {
            let at: usize = (0..r).map(|a| map(a, idx[a]) * src[a]).sum();
            data.push(self.data[at]);
            for a in (0..r).rev() {
                idx[a] += 1;
                if idx[a] < dims[a] {
                    break;
                }
                idx[a] = 0;
            }
        }
        Ok(Tensor::new(dims, data))
    }

    /// ONNX Concat along `axis` (non-negative).
    pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor, String> {
        let first = parts.first().ok_or("no inputs")?;
        let r = first.dims.len();
        if axis >= r {
            return Err(format!("axis {axis} of a rank-{r} tensor"));
        }
        for p in parts {
            let same = p.dims.len() == r && (0..r).all(|a| a == axis || p.dims[a] == first.dims[a]);
            if !same {
                return Err(format!(
                    "shapes {:?} and {:?} do not concatenate",
                    first.dims, p.dims
                ));
            }
        }
        let mut dims = first.dims.clone();
        dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
        volume(&dims, MAX_PROBE)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("result of shape {dims:?} is empty or too large"))?;
        let outer: usize = first.dims[..axis].iter().product();
        let mut data = Vec::new();
        for o in 0..outer {
            for p in parts {
                let block: usize = p.dims[axis..].iter().product();
                data.extend_from_slice(&p.data[o * block..(o + 1) * block]);
            }
        }
        Ok(Tensor::new(dims, data))
    }
}

/// A data type's name in onnx.proto.
pub fn type_name(t: i32) -> String {
    let name = match t {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BFLOAT16",
        _ => return format!("#{t}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(dims: &[usize]) -> Tensor {
        let n = volume(dims, usize::MAX).unwrap();
        Tensor::new(dims.to_vec(), (0..n).map(|v| v as f64).collect())
    }

    #[test]
    fn space_to_depth_and_depth_to_space_invert_each_other() {
        let x = iota(&[1, 1, 4, 6]);
        let d = x.space_to_depth(2).unwrap();
        assert_eq!(d.dims, vec![1, 4, 2, 3]);
        // Channel dy*2+dx holds pixel (2y+dy, 2x+dx): channel 1 starts at (0, 1).
        assert_eq!(&d.data[6..9], &[1.0, 3.0, 5.0]);
        assert_eq!(d.depth_to_space(2, true).unwrap(), x);
        assert_eq!(d.depth_to_space(2, false).unwrap(), x);
    }

    #[test]
    fn transpose_expand_tile_concat() {
        let x = iota(&[2, 3]);
        assert_eq!(x.transpose(&[]).unwrap().data, vec![0., 3., 1., 4., 2., 5.]);
        let s = Tensor::new(vec![1, 1, 1, 1], vec![7.0]);
        assert_eq!(s.expand(&[1, 1, 2, 2]).unwrap().data, vec![7.0; 4]);
        assert_eq!(s.tile(&[1, 1, 2, 3]).unwrap().dims, vec![1, 1, 2, 3]);
        let c = Tensor::concat(&[&x, &x], 0).unwrap();
        assert_eq!(c.dims, vec![4, 3]);
        assert!(x.transpose(&[0, 0]).is_err());
        assert!(x.reshape(&[4, -1], false).is_err());
        assert_eq!(x.reshape(&[0, -1], false).unwrap().dims, vec![2, 3]);
    }

    #[test]
    fn a_declared_size_without_its_data_is_refused() {
        let t = TensorProto {
            dims: vec![1 << 20, 1 << 20],
            data_type: data_type::FLOAT,
            ..Default::default()
        };
        assert!(Tensor::from_proto(&t, usize::MAX)
            .unwrap_err()
            .contains("holds 0"));
        let t = TensorProto {
            dims: vec![i64::MAX, 4],
            data_type: data_type::INT64,
            ..Default::default()
        };
        assert!(Tensor::from_proto(&t, usize::MAX)
            .unwrap_err()
            .contains("more than"));
    }
}
