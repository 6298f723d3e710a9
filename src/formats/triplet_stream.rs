//! Party 1's dealer file read piecewise. Its explicit triple shares ("corrections", about
//! 1 GB for a 512x512 image) are read from disk in consumption order while the job runs,
//! so S1 never holds them whole; the rest of the body (job, widths, seed, base OTs) is
//! small and decoded at open. The whole file's checksum is verified before anything is used.
//! The shares are packed at the widths their readers need ([`crate::corr::pack::Packed`]:
//! bit count, byte count, bytes), so the reader counts bits.

use crate::ring::Party;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bincode::Options;

use super::bodies::TripletsLead;
use super::container::{self, FormatError, Header, Kind, Opened, Seal};
use super::sealed::Source;
use crate::corr::pack::{check_region, BitReader, BitWriter};
use crate::corr::randomness::CorrectionSource;

/// A triplet file opened for streaming.
pub struct TripletsStream {
    /// Job, widths, batch and seed.
    pub lead: TripletsLead,
    pub base_ot: Vec<u8>,
    pub corrections: CorrectionReader,
}

/// Reads the corrections in order, `take(n, bits)` at a time, hashing what it reads: [`finish`]
/// compares that with the hash of the same bytes taken in the checksum-verified pass, so a
/// file changed in place while the job runs is an error, not a silently wrong image.
///
/// [`finish`]: CorrectionReader::finish
pub struct CorrectionReader {
    path: PathBuf,
    r: BufReader<Source>,
    /// Bits in the file, bits read.
    len: u64,
    read: u64,
    bits: BitReader,
    hasher: blake3::Hasher,
    verified: blake3::Hash,
}

impl CorrectionReader {
    /// Number of bits of values in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bits read so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next `n` values of `bits` bits each (their higher bits zero).
    pub fn take(&mut self, n: usize, bits: u32) -> Result<Vec<u64>, String> {
        let need = n as u64 * bits as u64;
        if !(1..=64).contains(&bits) || self.read + need > self.len {
            return Err(format!(
                "{}: {n} more triple shares of {bits} bits needed at bit {} of {}",
                self.path.display(),
                self.read,
                self.len
            ));
        }
        let mut bytes = vec![0u8; self.bits.bytes_for(n, bits)];
        self.r
            .read_exact(&mut bytes)
            .map_err(|e| format!("{}: reading the triple shares: {e}", self.path.display()))?;
        self.hasher.update(&bytes);
        self.read += need;
        let mut out = Vec::with_capacity(n);
        self.bits.take(&bytes, n, bits, &mut out);
        Ok(out)
    }

    /// After the last `take`: were the values read exactly the verified ones?
    pub fn finish(&self) -> Result<(), String> {
        if self.read == self.len && self.hasher.finalize() != self.verified {
            return Err(format!(
                "{}: the triple shares changed on disk while the job ran (they no longer \
                 match the checksum verified at the start)",
                self.path.display()
            ));
        }
        Ok(())
    }
}

impl CorrectionSource for CorrectionReader {
    fn len(&self) -> u64 {
        self.len
    }
    fn position(&self) -> u64 {
        self.read
    }
    fn origin(&self) -> &Path {
        &self.path
    }
    fn take(&mut self, n: usize, bits: u32) -> Result<Vec<u64>, String> {
        CorrectionReader::take(self, n, bits)
    }
    fn finish(&self) -> Result<(), String> {
        CorrectionReader::finish(self)
    }
}

/// A reader that hashes every byte it hands on: what is decoded through it is what is hashed.
struct Hashing<'a, R> {
    r: &'a mut R,
    h: &'a mut blake3::Hasher,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens `path` as `party`'s triplet file: checks kind and party, then, through one file
/// handle (a file renamed over `path` meanwhile cannot swap in) and in one pass, decodes the
/// small fields while hashing them, verifies the whole file's checksum, and leaves the
/// corrections to be read in order.
pub fn open(path: &Path, party: Party) -> Result<(Header, TripletsStream), FormatError> {
    from_opened(Opened::open(path)?, party)
}

/// [`open`] of a file already opened (its header checked by the caller, e.g. against the
/// pinned keys): the body is read through the same handle.
pub fn from_opened(o: Opened, party: Party) -> Result<(Header, TripletsStream), FormatError> {
    o.expect(Kind::Triplets, Some(party))?;
    let path = &o.path().to_path_buf();
    let (header, file, body_len, prefix_hash) = o.into_body()?;
    let malformed = |e: String| FormatError::Malformed(path.into(), "body", e);
    let io = |e: std::io::Error| FormatError::Io(path.into(), e);
    let mut r = BufReader::with_capacity(1 << 20, file);
    // One pass over the body: every byte decoded (the lead, the base OTs) is hashed as it is
    // read, so the values used are the ones the checksum and signature cover, even for a plain
    // file rewritten in place while it is read. The corrections are hashed here and again as
    // they are consumed (`CorrectionReader::finish`).
    let body_start = r.stream_position().map_err(io)?;
    let body_end = body_start + body_len;
    let mut whole = prefix_hash;
    let lead: TripletsLead = container::body_options()
        .with_limit(body_len)
        .deserialize_from(Hashing {
            r: &mut r,
            h: &mut whole,
        })
        .map_err(|e| malformed(e.to_string()))?;
    // The bit count, then the bytes' count (a `Packed`).
    let mut lb = [0u8; 16];
    r.read_exact(&mut lb).map_err(io)?;
    whole.update(&lb);
    let len = u64::from_le_bytes(lb[..8].try_into().expect("8 bytes"));
    let nbytes = u64::from_le_bytes(lb[8..].try_into().expect("8 bytes"));
    let at = r.stream_position().map_err(io)?;
    let after = nbytes
        .checked_add(at)
        .filter(|&end| end <= body_end)
        .ok_or_else(|| {
            malformed(format!(
                "{nbytes} bytes of triple shares do not fit the body"
            ))
        })?;
    check_region(len, nbytes, None).map_err(|e| malformed(format!("triple shares: {e}")))?;
    let mut region = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut pos = at;
    let mut last = None;
    while pos < after {
        let n = chunk.len().min((after - pos) as usize);
        r.read_exact(&mut chunk[..n]).map_err(io)?;
        whole.update(&chunk[..n]);
        region.update(&chunk[..n]);
        last = Some(chunk[n - 1]);
        pos += n as u64;
    }
    check_region(len, nbytes, last).map_err(|e| malformed(format!("triple shares: {e}")))?;
    let base_ot: Vec<u8> = container::body_options()
        .with_limit(body_end - after)
        .deserialize_from(Hashing {
            r: &mut r,
            h: &mut whole,
        })
        .map_err(|e| malformed(e.to_string()))?;
    if r.stream_position().map_err(io)? != body_end {
        return Err(malformed("trailing bytes after the base OTs".into()));
    }
    container::check_trailer(path, &mut r, &whole, &header)?;
    r.seek(SeekFrom::Start(at)).map_err(io)?;
    Ok((
        header,
        TripletsStream {
            lead,
            base_ot,
            corrections: CorrectionReader {
                path: path.into(),
                r,
                len,
                read: 0,
                bits: BitReader::default(),
                hasher: blake3::Hasher::new(),
                verified: region.finalize(),
            },
        },
    ))
}

/// Writes party 1's triplet file piecewise: the same bytes as `container::write` of the
/// `Triplets` with these fields, but the shares, `bits` bits in all, come from `fill`, which
/// hands them to its `emit` callback in consumption order with their widths, so they are
/// never all in memory.
///
/// `fill` runs on a thread of its own, a few blocks ahead of the writing (encryption,
/// checksum, the copy into the file), so that computing the next shares and writing the
/// last ones overlap: the dealer's time is the larger of the two, not their sum.
pub fn write<F>(
    path: &Path,
    header: &Header,
    lead: &TripletsLead,
    bits: u64,
    base_ot: &Vec<u8>,
    seal: Seal<'_>,
    fill: F,
) -> anyhow::Result<()>
where
    F: FnOnce(&mut dyn FnMut(&[u64], u32) -> std::io::Result<()>) -> std::io::Result<()> + Send,
{
    let opts = container::body_options;
    let nbytes = bits.div_ceil(8);
    let body_len = opts().serialized_size(lead)? + 16 + nbytes + opts().serialized_size(base_ot)?;
    container::write_streamed(path, header, body_len, seal, |w| {
        opts().serialize_into(&mut *w, lead)?;
        w.write_all(&bits.to_le_bytes())?;
        w.write_all(&nbytes.to_le_bytes())?;
        std::thread::scope(|s| -> std::io::Result<()> {
            // Two pieces in flight: enough to overlap.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            let maker = s.spawn(move || {
                let mut packer = BitWriter::default();
                let stopped = |_| std::io::Error::other("the file writer stopped");
                fill(&mut |v: &[u64], width: u32| {
                    // In pieces of at most 8 MiB, so the queue is bounded in bytes whatever
                    // the dealer's block size.
                    for piece in v.chunks(1 << 20) {
                        let mut bytes = Vec::new();
                        packer.push(piece, width, &mut bytes);
                        // A closed channel means the writer failed; its error is reported.
                        tx.send(bytes).map_err(stopped)?;
                    }
                    Ok(())
                })?;
                if packer.bits() != bits {
                    return Err(std::io::Error::other(format!(
                        "the dealer made {} bits of triple shares, not the announced {bits}",
                        packer.bits()
                    )));
                }
                let mut tail = Vec::new();
                packer.finish(&mut tail);
                tx.send(tail).map_err(stopped)
            });
            let mut written = Ok(());
            for bytes in rx.iter() {
                written = w.write_all(&bytes);
                if written.is_err() {
                    break;
                }
            }
            // Dropping the receiver stops the maker at its next block.
            drop(rx);
            let made = maker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            written.and(made)
        })?;
        opts().serialize_into(&mut *w, base_ot)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corr::pack::Packed;
    use crate::formats::bodies::JobParams;
    use crate::formats::bodies::Triplets;
    use crate::model::preprocess::Preprocess;
    use crate::ring::share::Seed;

    /// Values packed in runs of (count, width).
    fn packed(values: &[u64], runs: &[(usize, u32)]) -> Packed {
        let mut p = Packed::default();
        let mut at = 0;
        for &(n, width) in runs {
            p.push(&values[at..at + n], width);
            at += n;
        }
        assert_eq!(at, values.len());
        p
    }

    fn sample(corrections: Packed) -> Triplets {
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
                private_pre: false,
                colours: 1,
            },
            widths: vec![49, 8, 9],
            batch: 7,
            seed: [5; 32],
            engine: crate::corr::engine_kind::EngineKind::Gc,
            corrections,
            base_ot: (0..=255).collect(),
        }
    }

    #[test]
    fn streams_the_same_values_the_whole_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.p1");
        // 3.2 MB: more than the writer's and reader's 1 MiB buffers.
        let values: Vec<u64> = (0..400_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        // Runs of different widths, ending inside bytes.
        let runs = [
            (1, 64),
            (999, 31),
            (250_000, 64),
            (148_000, 17),
            (1_000, 34),
        ];
        let t = sample(packed(&values, &runs));
        let h = Header::new(Kind::Triplets, Party::S1, 16);
        container::write(&p, &h, &t, Seal::PLAIN).unwrap();
        // The streaming writer produces exactly what the in-memory encoder does.
        let whole = container::encode(&h, &t).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert!(on_disk == whole);

        let (_, mut s) = open(&p, Party::S1).unwrap();
        assert_eq!(s.lead.job, t.job);
        assert_eq!(
            (s.lead.widths.clone(), s.lead.batch, s.lead.seed),
            (t.widths.clone(), 7, [5; 32])
        );
        assert_eq!(s.base_ot, t.base_ot);
        assert_eq!(s.corrections.len(), t.corrections.bits());
        let (mut got, mut want, mut at) = (Vec::new(), Vec::new(), 0);
        for (n, width) in runs {
            got.extend(s.corrections.take(n, width).unwrap());
            let m = crate::corr::pack::low_mask(width);
            want.extend(values[at..at + n].iter().map(|x| x & m));
            at += n;
        }
        assert_eq!(got, want);
        assert_eq!(s.corrections.position(), s.corrections.len());
        s.corrections.finish().unwrap();
        let e = s.corrections.take(1, 3).unwrap_err();
        assert!(
            e.contains("t.p1") && e.contains("1 more triple shares of 3 bits needed"),
            "{e}"
        );

        // Party and checksum are checked before anything is read.
        assert!(matches!(
            open(&p, Party::S0),
            Err(FormatError::WrongParty { .. })
        ));
        let mut bad = on_disk.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(matches!(open(&p, Party::S1), Err(FormatError::Checksum(_))));
    }

    #[test]
    fn empty_corrections_of_party_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.p0");
        let t = sample(Packed::default());
        container::write(
            &p,
            &Header::new(Kind::Triplets, Party::S0, 16),
            &t,
            Seal::PLAIN,
        )
        .unwrap();
        let (_, s) = open(&p, Party::S0).unwrap();
        assert!(s.corrections.is_empty());
        assert_eq!(s.base_ot, t.base_ot);
    }

    #[test]
    fn shares_changed_on_disk_during_the_job_are_an_error() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.p1");
        let n = 1000usize;
        let t = sample(packed(&(0..n as u64).collect::<Vec<_>>(), &[(n, 64)]));
        container::write(
            &p,
            &Header::new(Kind::Triplets, Party::S1, 16),
            &t,
            Seal::PLAIN,
        )
        .unwrap();
        let (_, mut s) = open(&p, Party::S1).unwrap();
        // Same length, one share changed in place after the checksum pass.
        let flen = std::fs::metadata(&p).unwrap().len();
        let corr_start = flen - 32 - (8 + t.base_ot.len() as u64) - 8 * n as u64;
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(corr_start + 8 * 10)).unwrap();
        f.write_all(&[0xff]).unwrap();
        drop(f);
        let got = s.corrections.take(n, 64).unwrap();
        assert_ne!(got[10], 10, "the test must really change a share");
        let e = s.corrections.finish().unwrap_err();
        assert!(e.contains("t.p1") && e.contains("changed on disk"), "{e}");
    }

    #[test]
    fn malformed_bodies_with_valid_checksums_are_refused() {
        #[derive(serde::Serialize)]
        struct Short {
            job: JobParams,
            widths: Vec<usize>,
            batch: usize,
            seed: Seed,
            bits: u64,
            nbytes: u64,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.p1");
        let t = sample(packed(&[1, 2, 3], &[(3, 64)]));
        let h = Header::new(Kind::Triplets, Party::S1, 16);
        let short = Short {
            job: t.job.clone(),
            widths: t.widths.clone(),
            batch: t.batch,
            seed: t.seed,
            bits: 1 << 43,
            nbytes: 1 << 40,
        };
        container::write(&p, &h, &short, Seal::PLAIN).unwrap();
        let e = open(&p, Party::S1).err().unwrap().to_string();
        assert!(
            e.contains("t.p1") && e.contains("do not fit the body"),
            "{e}"
        );
        container::write(&p, &h, &(t.clone(), 7u8), Seal::PLAIN).unwrap();
        let e = open(&p, Party::S1).err().unwrap().to_string();
        assert!(e.contains("t.p1") && e.contains("trailing bytes"), "{e}");
    }

    #[test]
    fn piecewise_writer_matches_the_in_memory_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.p1"), dir.path().join("b.p1"));
        let values: Vec<u64> = (0..300_000u64).map(|i| i ^ (i << 29)).collect();
        // The dealer's emits at their widths, in pieces that need not match the reader's.
        let widths = [64, 33, 64, 5, 17, 64];
        let pieces: Vec<(&[u64], u32)> = values
            .chunks(7777)
            .zip(widths.iter().cycle())
            .map(|(c, &w)| (c, w))
            .collect();
        let runs: Vec<(usize, u32)> = pieces.iter().map(|(c, w)| (c.len(), *w)).collect();
        let t = sample(packed(&values, &runs));
        let h = Header::new(Kind::Triplets, Party::S1, 16);
        container::write(&a, &h, &t, Seal::PLAIN).unwrap();
        let lead = TripletsLead {
            job: t.job.clone(),
            widths: t.widths.clone(),
            batch: t.batch,
            seed: t.seed,
            engine: t.engine,
        };
        write(
            &b,
            &h,
            &lead,
            t.corrections.bits(),
            &t.base_ot,
            Seal::PLAIN,
            |emit| {
                for &(chunk, width) in &pieces {
                    emit(chunk, width)?;
                }
                Ok(())
            },
        )
        .unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        // A producer that delivers fewer values than announced leaves no file.
        let c = dir.path().join("c.p1");
        let e = write(
            &c,
            &h,
            &lead,
            t.corrections.bits(),
            &t.base_ot,
            Seal::PLAIN,
            |emit| emit(&values[..10], 64),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not the announced"), "{e:#}");
        assert!(!c.exists());
    }
}
