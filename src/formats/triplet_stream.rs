//! Party 1's dealer file read piecewise. Its explicit triple shares ("corrections", about
//! 1 GB for a 512x512 image) are read from disk in consumption order while the job runs,
//! so S1 never holds them whole; the rest of the body (job, widths, seed, base OTs) is
//! small and decoded at open. The whole file's checksum is verified before anything is used.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use bincode::Options;
use serde::Deserialize;

use super::bodies::JobParams;
use super::container::{self, expect, FormatError, Header, Kind};
use crate::ring::share::Seed;

/// The fields of [`super::bodies::Triplets`] before `corrections`, in the same order (bincode
/// is positional), so that they decode from the start of the body.
#[derive(Deserialize)]
struct Leading {
    job: JobParams,
    widths: Vec<usize>,
    batch: usize,
    seed: Seed,
}

/// A triplet file opened for streaming.
pub struct TripletsStream {
    pub job: JobParams,
    pub widths: Vec<usize>,
    pub batch: usize,
    pub seed: Seed,
    pub base_ot: Vec<u8>,
    pub corrections: CorrectionReader,
}

/// Reads the corrections in order, `take(n)` at a time.
pub struct CorrectionReader {
    path: PathBuf,
    r: BufReader<File>,
    len: u64,
    read: u64,
}

impl CorrectionReader {
    /// Number of values in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Values read so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next `n` values; the caller checks `n` against what is left.
    pub fn take(&mut self, n: usize) -> Result<Vec<u64>, String> {
        debug_assert!(self.read + n as u64 <= self.len);
        let mut bytes = vec![0u8; n * 8];
        self.r
            .read_exact(&mut bytes)
            .map_err(|e| format!("{}: reading the triple shares: {e}", self.path.display()))?;
        self.read += n as u64;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

/// Opens `path` as `party`'s triplet file: checks kind, party and checksum, decodes
/// everything but the corrections and leaves those to be read in order.
pub fn open(path: &Path, party: u8) -> Result<(Header, TripletsStream), FormatError> {
    let h = container::read_header(path)?;
    expect(path, &h, Kind::Triplets, Some(party))?;
    let (header, file, body_len) = container::verified_body(path)?;
    let malformed = |e: String| FormatError::Malformed(path.into(), "body", e);
    let io = |e: std::io::Error| FormatError::Io(path.into(), e);
    let body_start = {
        let mut f = &file;
        f.stream_position().map_err(io)?
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let opts = container::body_options().with_limit(body_len);
    let lead: Leading = opts
        .deserialize_from(&mut r)
        .map_err(|e| malformed(e.to_string()))?;
    let mut lb = [0u8; 8];
    r.read_exact(&mut lb).map_err(io)?;
    let len = u64::from_le_bytes(lb);
    let at = r.stream_position().map_err(io)?;
    let after = len
        .checked_mul(8)
        .and_then(|b| b.checked_add(at))
        .filter(|&end| end <= body_start + body_len)
        .ok_or_else(|| malformed(format!("{len} triple shares do not fit the body")))?;
    r.seek(std::io::SeekFrom::Start(after)).map_err(io)?;
    let left = body_start + body_len - after;
    let base_ot: Vec<u8> = container::body_options()
        .with_limit(left)
        .deserialize_from(&mut r)
        .map_err(|e| malformed(e.to_string()))?;
    if r.stream_position().map_err(io)? != body_start + body_len {
        return Err(malformed("trailing bytes after the base OTs".into()));
    }
    r.seek(std::io::SeekFrom::Start(at)).map_err(io)?;
    Ok((
        header,
        TripletsStream {
            job: lead.job,
            widths: lead.widths,
            batch: lead.batch,
            seed: lead.seed,
            base_ot,
            corrections: CorrectionReader {
                path: path.into(),
                r,
                len,
                read: 0,
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::bodies::Triplets;
    use crate::plain::preprocess::Preprocess;

    fn sample(corrections: Vec<u64>) -> Triplets {
        Triplets {
            job: JobParams {
                height: 20,
                width: 21,
                bit_depth: 8,
                stride: 3,
                scale: 16,
                pre: Preprocess::new(25.0, 25.0, true),
                sigma: 25.0,
                model_sigma: 25.0,
            },
            widths: vec![49, 8, 9],
            batch: 7,
            seed: [5; 32],
            corrections,
            base_ot: (0..=255).collect(),
        }
    }

    #[test]
    fn streams_the_same_values_the_whole_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.p1");
        let values: Vec<u64> = (0..100_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let t = sample(values.clone());
        let h = Header::new(Kind::Triplets, 1, 16);
        container::write(&p, &h, &t).unwrap();
        // The streaming writer produces exactly what the in-memory encoder does.
        let whole = container::encode(&h, &t).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert!(on_disk == whole);

        let (_, mut s) = open(&p, 1).unwrap();
        assert_eq!(s.job, t.job);
        assert_eq!(
            (s.widths.clone(), s.batch, s.seed),
            (t.widths.clone(), 7, [5; 32])
        );
        assert_eq!(s.base_ot, t.base_ot);
        assert_eq!(s.corrections.len(), values.len() as u64);
        let mut got = Vec::new();
        for n in [1, 999, 50_000, 48_000, 1_000] {
            got.extend(s.corrections.take(n).unwrap());
        }
        assert_eq!(got, values);
        assert_eq!(s.corrections.position(), s.corrections.len());

        // Party and checksum are checked before anything is read.
        assert!(matches!(open(&p, 0), Err(FormatError::WrongParty { .. })));
        let mut bad = on_disk.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(matches!(open(&p, 1), Err(FormatError::Checksum(_))));
    }

    #[test]
    fn empty_corrections_of_party_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.p0");
        let t = sample(Vec::new());
        container::write(&p, &Header::new(Kind::Triplets, 0, 16), &t).unwrap();
        let (_, s) = open(&p, 0).unwrap();
        assert!(s.corrections.is_empty());
        assert_eq!(s.base_ot, t.base_ot);
    }
}
