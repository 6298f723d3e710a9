//! Size checks on a model `.npz` before ndarray-npy reads it. ndarray-npy allocates each array
//! from the shape in its `.npy` header before reading the data, so a crafted header of a few
//! bytes could ask for gigabytes. Each floating-point entry's header is parsed as ndarray-npy
//! parses it (py_literal), and its shape must describe exactly the bytes the archive says the
//! entry holds and the bytes it really holds (streamed once, nothing kept), within caps on
//! one array, on the whole file and on the number of entries. Entries of other types are not
//! sized here: ndarray-npy refuses them before allocating when a loader asks for floats.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use crate::fileio::npy::declared;
use crate::model::mlp::ModelError;

/// Most data one array of a model file may hold (the paper-size MLP's largest is 8 MB).
const MAX_ARRAY_BYTES: u64 = 1 << 30;

/// Most data all arrays of a model file may hold together.
pub(super) const MAX_TOTAL_BYTES: u64 = 2 << 30;

/// Most entries a model file may have (a 17-layer DnCNN has 34 arrays and a few settings).
const MAX_ENTRIES: usize = 4096;

/// Most `.npy` header bytes all entries of a model file may hold together (a 17-layer DnCNN
/// has 34 headers of 128 bytes): the worst header allowed took 15 ms to parse, a file of
/// them under half a second.
const MAX_HEADERS_TOTAL: u64 = 32 << 10;

/// Checks every entry of the `.npz` at `path`: a `.npy` array whose header's shape and
/// element size account for exactly its data, at most [`MAX_ARRAY_BYTES`].
pub fn check(path: &Path) -> Result<(), ModelError> {
    open_checked(path).map(drop)
}

/// Opens the `.npz` at `path`, runs [`check`] on it and returns the file rewound, for the
/// loader to read the same bytes that were checked.
pub fn open_checked(path: &Path) -> Result<File, ModelError> {
    let open = |source| ModelError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open)?;
    check_entries(path, &file)?;
    file.rewind().map_err(open)?;
    Ok(file)
}

fn check_entries(path: &Path, file: &File) -> Result<(), ModelError> {
    let not_npz = |msg: String| ModelError::NotNpz {
        path: path.to_path_buf(),
        msg,
    };
    let mut zip = zip::ZipArchive::new(file).map_err(|e| not_npz(e.to_string()))?;
    if zip.len() > MAX_ENTRIES {
        return Err(not_npz(format!(
            "{} entries (at most {MAX_ENTRIES})",
            zip.len()
        )));
    }
    let (mut total, mut headers) = (0u64, 0u64);
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| not_npz(e.to_string()))?;
        let name = entry.name().to_string();
        let bad = |msg: String| ModelError::Array {
            path: path.to_path_buf(),
            name: name.strip_suffix(".npy").unwrap_or(&name).to_string(),
            msg,
        };
        let (header_len, data_bytes) = declared(&mut entry).map_err(&bad)?;
        headers += header_len;
        if headers > MAX_HEADERS_TOTAL {
            return Err(bad(format!(
                "the .npy headers so far hold {headers} bytes; a model's may hold at most \
                 {MAX_HEADERS_TOTAL} in all"
            )));
        }
        let Some(data_bytes) = data_bytes else {
            continue;
        };
        let listed = entry.size().checked_sub(header_len);
        if listed != Some(data_bytes) {
            return Err(bad(format!(
                "its header's shape needs {data_bytes} bytes of data, the archive lists {}",
                listed.map_or("fewer".to_string(), |n| format!("{n}"))
            )));
        }
        total = total.saturating_add(data_bytes);
        if data_bytes > MAX_ARRAY_BYTES || total > MAX_TOTAL_BYTES {
            return Err(bad(format!(
                "{data_bytes} bytes of data; a model may hold at most {MAX_ARRAY_BYTES} per \
                 array and {MAX_TOTAL_BYTES} in all"
            )));
        }
        let present = io::copy(&mut (&mut entry).take(data_bytes + 1), &mut io::sink())
            .map_err(|e| bad(format!("unreadable: {e}")))?;
        if data_bytes != present {
            return Err(bad(format!(
                "its header's shape needs {data_bytes} bytes of data, the file holds {present}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileio::npy::tests::npy;

    /// `m.npz` in `dir`, its entries stored as given.
    fn npz_file(
        dir: &Path,
        entries: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> std::path::PathBuf {
        use std::io::Write;
        let p = dir.join("m.npz");
        let mut z = zip::ZipWriter::new(File::create(&p).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            z.start_file(name, opts).unwrap();
            z.write_all(&bytes).unwrap();
        }
        z.finish().unwrap();
        p
    }

    /// Many entries of long headers: refused once their headers pass the total bound.
    #[test]
    fn headers_past_the_total_bound_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = format!(
            "{{'descr': '<U1', 'shape': (), 'pad': '{}'}}",
            " ".repeat(900)
        );
        let entries = (0..80).map(|i| (format!("s{i}.npy"), npy(&h, 4)));
        let p = npz_file(dir.path(), entries);
        let e = check(&p).unwrap_err().to_string();
        assert!(
            e.contains("array s34") && e.contains("at most 32768 in all"),
            "{e}"
        );
    }

    /// A model whose header claims far more than its data: refused by name, before
    /// ndarray-npy would have allocated the claimed size.
    #[test]
    fn a_shape_larger_than_the_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }";
        let p = npz_file(dir.path(), [("W1.npy".to_string(), npy(h, 64))]);
        let e = check(&p).unwrap_err().to_string();
        assert!(
            e.contains("array W1") && e.contains("80000000000 bytes"),
            "{e}"
        );
        let e = crate::model::mlp::Model::load(&p).unwrap_err().to_string();
        assert!(e.contains("array W1"), "{e}");
        let e = crate::model::cnn::Cnn::load(&p).unwrap_err().to_string();
        assert!(e.contains("array W1"), "{e}");
    }
}
