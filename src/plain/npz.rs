//! Size checks on a model `.npz` before ndarray-npy reads it. ndarray-npy allocates each array
//! from the shape in its `.npy` header before reading the data, so a crafted header of a few
//! bytes could ask for gigabytes. Each entry is streamed once here (nothing kept) to learn its
//! real size, and its header's shape must describe exactly the bytes present.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::model::ModelError;

/// Most data one array of a model file may hold (the paper-size MLP's largest is 8 MB).
const MAX_ARRAY_BYTES: u64 = 1 << 30;

/// Longest `.npy` header accepted (numpy writes 128 bytes or a little more).
const MAX_HEADER: usize = 1 << 16;

/// Checks every entry of the `.npz` at `path`: a `.npy` array whose header's shape and
/// element size account for exactly its data, at most [`MAX_ARRAY_BYTES`].
pub fn check(path: &Path) -> Result<(), ModelError> {
    let not_npz = |msg: String| ModelError::NotNpz {
        path: path.to_path_buf(),
        msg,
    };
    let file = File::open(path).map_err(|source| ModelError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| not_npz(e.to_string()))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| not_npz(e.to_string()))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        let bad = |msg: String| ModelError::Array {
            path: path.to_path_buf(),
            name: name.clone(),
            msg,
        };
        let data_bytes = declared_bytes(&mut entry).map_err(&bad)?;
        let present = io::copy(&mut (&mut entry).take(MAX_ARRAY_BYTES + 1), &mut io::sink())
            .map_err(|e| bad(format!("unreadable: {e}")))?;
        if present > MAX_ARRAY_BYTES {
            return Err(bad(format!(
                "more than {MAX_ARRAY_BYTES} bytes of data (the most a model array may hold)"
            )));
        }
        if data_bytes != present {
            return Err(bad(format!(
                "its header's shape needs {data_bytes} bytes of data, the file holds {present}"
            )));
        }
    }
    Ok(())
}

/// Reads a `.npy` header (format versions 1-3) and returns shape x element size in bytes.
fn declared_bytes(r: &mut impl Read) -> Result<u64, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|_| "not a .npy array (too short)".to_string())?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (no NUMPY magic)".into());
    }
    let hlen = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| "truncated .npy header")?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| "truncated .npy header")?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!(".npy format version {v} (1 to 3 supported)")),
    };
    if hlen > MAX_HEADER {
        return Err(format!(".npy header of {hlen} bytes"));
    }
    let mut h = vec![0u8; hlen];
    r.read_exact(&mut h).map_err(|_| "truncated .npy header")?;
    let h = String::from_utf8(h).map_err(|_| ".npy header is not text")?;
    let item = item_size(&h).ok_or_else(|| format!("no element type in .npy header {h:?}"))?;
    let dims = shape(&h).ok_or_else(|| format!("no shape in .npy header {h:?}"))?;
    dims.iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {dims:?} overflows"))
}

/// The value after `'key':` in the header's dictionary.
fn after<'a>(h: &'a str, key: &str) -> Option<&'a str> {
    let at = h.find(&format!("'{key}'"))? + key.len() + 2;
    Some(h[at..].trim_start().strip_prefix(':')?.trim_start())
}

/// Bytes per element from `'descr': '<f8'` (the digits after the type letter).
fn item_size(h: &str) -> Option<u64> {
    let d = after(h, "descr")?.strip_prefix('\'')?;
    let d = &d[..d.find('\'')?];
    let digits: String = d.chars().skip_while(|c| !c.is_ascii_digit()).collect();
    digits.parse().ok().filter(|&n: &u64| (1..=16).contains(&n))
}

/// Dimensions from `'shape': (39, 1521)`; `()` is a scalar.
fn shape(h: &str) -> Option<Vec<u64>> {
    let s = after(h, "shape")?.strip_prefix('(')?;
    let s = &s[..s.find(')')?];
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: usize) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    #[test]
    fn header_sizes() {
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (39, 1521), }";
        assert_eq!(declared_bytes(&mut &npy(h, 0)[..]), Ok(39 * 1521 * 8));
        let s = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
        assert_eq!(declared_bytes(&mut &npy(s, 0)[..]), Ok(4));
        let v = "{'descr': '|b1', 'fortran_order': False, 'shape': (7,), }";
        assert_eq!(declared_bytes(&mut &npy(v, 0)[..]), Ok(7));
        let huge = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        assert!(declared_bytes(&mut &npy(huge, 0)[..]).is_err());
        assert!(declared_bytes(&mut &b"\x93NUMPX\x01\x00\x00\x00"[..]).is_err());
    }

    /// A model whose header claims far more than its data: refused by name, before
    /// ndarray-npy would have allocated the claimed size.
    #[test]
    fn a_shape_larger_than_the_data_is_refused() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npz");
        let mut z = zip::ZipWriter::new(File::create(&p).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("W1.npy", opts).unwrap();
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }";
        z.write_all(&npy(h, 64)).unwrap();
        z.finish().unwrap();
        let e = check(&p).unwrap_err().to_string();
        assert!(
            e.contains("array W1") && e.contains("80000000000 bytes"),
            "{e}"
        );
        let e = crate::plain::model::Model::load(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("array W1"), "{e}");
        let e = crate::plain::cnn::Cnn::load(&p).unwrap_err().to_string();
        assert!(e.contains("array W1"), "{e}");
    }
}
