//! Additive secret sharing in Z_2^64 and the seeded PRG that lets one party's share travel as
//! a 32-byte seed. Every use of a seed names a distinct stream (see [`Stream`]), so no PRG
//! output is ever used for two purposes.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use rand::RngCore;

pub type Seed = [u8; 32];

/// A fresh seed from the operating system's CSPRNG.
pub fn fresh_seed() -> Seed {
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// Largest layer index a stream id holds (16 bits): models are checked against it before any
/// stream is drawn ([`crate::dealer::check_stream_bounds`]).
pub const MAX_STREAM_LAYER: u32 = (1 << 16) - 1;

/// Stream identifiers: (purpose << 48) | (layer << 32) | index.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    ModelShare,
    ImageShare,
    /// Dealer: weight mask A of a layer.
    WeightMask(u32),
    /// Dealer: image mask (layer-1 input mask, before patch extraction).
    ImageMask,
    /// Dealer: activation mask B of layer `l`, batch `b`.
    ActMask(u32, u32),
    /// Dealer: share of the matrix triple C = A B of layer `l`, batch `b`.
    MatTriple(u32, u32),
    /// Dealer: elementwise triples of hidden layer `l`, batch `b`.
    ElemTriple(u32, u32),
    /// Dealer: base OTs.
    BaseOt,
    /// Dealer: boolean engine's bit-sliced AND triples of layer `l`, batch `b`.
    AndTriple(u32, u32),
    /// Dealer: boolean engine's daBits (random bits, XOR- and additively shared).
    DaBit(u32, u32),
    /// Dealer: boolean engine's edaBits (random m-bit values, as XOR-shared bits and as
    /// additive shares).
    EdaBit(u32, u32),
    /// Dealer: boolean engine's ReLU selection (the product correlation with the sign's
    /// daBit, and the mask that extends the result to the readers' width).
    ReluSelect(u32, u32),
    /// Both parties' bits masking their shares' top bits, and party 0's share of their
    /// product, when layer `l`'s input (a boolean-engine ReLU's result, left mod 2^k) is
    /// extended to its opening's width.
    MapExtend(u32),
}

impl Stream {
    pub fn id(self) -> u64 {
        let f = |p: u64, l: u32, i: u32| {
            // A larger layer would alias another purpose's stream: refused upstream.
            assert!(l <= MAX_STREAM_LAYER, "stream layer {l} out of range");
            (p << 48) | ((l as u64) << 32) | i as u64
        };
        match self {
            Stream::ModelShare => f(1, 0, 0),
            Stream::ImageShare => f(2, 0, 0),
            Stream::WeightMask(l) => f(3, l, 0),
            Stream::ImageMask => f(4, 0, 0),
            Stream::ActMask(l, b) => f(5, l, b),
            Stream::MatTriple(l, b) => f(6, l, b),
            Stream::ElemTriple(l, b) => f(7, l, b),
            Stream::BaseOt => f(8, 0, 0),
            Stream::AndTriple(l, b) => f(9, l, b),
            Stream::DaBit(l, b) => f(10, l, b),
            Stream::EdaBit(l, b) => f(11, l, b),
            Stream::ReluSelect(l, b) => f(12, l, b),
            Stream::MapExtend(l) => f(13, l, 0),
        }
    }
}

/// AES-256 in counter mode under a key and a starting counter derived from the seed and the
/// stream id with BLAKE3's key derivation ([`stream_key`]). With AES-NI it makes about 7 GB/s
/// on one core where ChaCha20 made 1.6 (the servers spent a third of their time in it). The
/// 256-bit key keeps the seed's strength (the link's TLS and the sealed files are 256-bit too);
/// the derived starting counter makes the streams' first blocks differ, so that a multi-key
/// search has no common block to aim at.
pub struct Prg(ctr::Ctr128LE<aes::Aes256Enc>);

/// The context of the stream keys' derivation: names this construction, so that a key derived
/// here is never one derived elsewhere from the same seed.
const STREAM_KEY_CONTEXT: &str = "ppdenoise 2026-11-27 seeded stream: AES-256-CTR key and counter";

/// The AES-256 key and starting counter of one (seed, stream): the first 48 bytes of BLAKE3's
/// derive_key output over the seed and the stream id. Distinct streams of one seed get
/// independent keys.
fn stream_key(seed: &Seed, stream: Stream) -> zeroize::Zeroizing<[u8; 48]> {
    let mut h = blake3::Hasher::new_derive_key(STREAM_KEY_CONTEXT);
    h.update(seed);
    h.update(&stream.id().to_le_bytes());
    let mut out = zeroize::Zeroizing::new([0u8; 48]);
    h.finalize_xof().fill(&mut out[..]);
    zeroize::Zeroize::zeroize(&mut h);
    out
}

impl Prg {
    pub fn new(seed: &Seed, stream: Stream) -> Prg {
        stream_log::note(seed, stream);
        let k = stream_key(seed, stream);
        let (key, iv) = k.split_at(32);
        Prg(ctr::Ctr128LE::new(key.into(), iv.into()))
    }

    /// The next `out.len()` values: the key stream's bytes read as little-endian u64s. Calls
    /// continue where the last stopped, mid-block too, so the values are one sequence however
    /// they are asked for.
    pub fn fill(&mut self, out: &mut [u64]) {
        out.fill(0);
        self.0.apply_keystream(bytemuck::cast_slice_mut(out));
        if cfg!(target_endian = "big") {
            out.iter_mut().for_each(|v| *v = u64::from_le(*v));
        }
    }

    pub fn vec(&mut self, n: usize) -> Vec<u64> {
        let mut v = vec![0u64; n];
        self.fill(&mut v);
        v
    }

    /// Passes over the next `n` values without making them (a counter jump): what follows is
    /// what [`Prg::fill`] would give after drawing them.
    pub fn skip(&mut self, n: usize) {
        let at: u64 = self.0.current_pos();
        let to = (n as u64)
            .checked_mul(8)
            .and_then(|b| b.checked_add(at))
            .expect("a skip within the stream");
        self.0.seek(to);
    }
}

/// A test hook that proves each (seed, stream) pair is drawn once: while a test has it on,
/// every [`Prg`] built anywhere in the process is logged as (seed fingerprint, stream id).
/// Off by default; nothing in the tool turns it on. The log holds a hash of the seed, never
/// the seed.
#[doc(hidden)]
pub mod stream_log {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::{Seed, Stream};

    static ON: AtomicBool = AtomicBool::new(false);
    static LOG: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

    /// Clears the log and starts recording.
    pub fn start() {
        LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
        ON.store(true, Ordering::SeqCst);
    }

    /// Stops recording and returns what was drawn since [`start`].
    pub fn take() -> Vec<(u64, u64)> {
        ON.store(false, Ordering::SeqCst);
        std::mem::take(&mut *LOG.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// (seed fingerprint, stream id) pairs that occur more than once in `log`.
    pub fn repeated(log: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut sorted = log.to_vec();
        sorted.sort_unstable();
        let mut out: Vec<(u64, u64)> = sorted
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        out.dedup();
        out
    }

    /// The 64-bit fingerprint a seed is logged under.
    pub fn fingerprint(seed: &Seed) -> u64 {
        let h = blake3::hash(seed);
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    pub(super) fn note(seed: &Seed, stream: Stream) {
        if ON.load(Ordering::Relaxed) {
            LOG.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((fingerprint(seed), stream.id()));
        }
    }
}

/// Splits `values` into (explicit share, seed share): explicit = values - PRG(seed).
pub fn share_with_seed(values: &[u64], seed: &Seed, stream: Stream) -> Vec<u64> {
    let mask = Prg::new(seed, stream).vec(values.len());
    values
        .iter()
        .zip(&mask)
        .map(|(v, m)| v.wrapping_sub(*m))
        .collect()
}

/// Expands a seed share.
pub fn expand(seed: &Seed, stream: Stream, n: usize) -> Vec<u64> {
    Prg::new(seed, stream).vec(n)
}

pub fn add(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

pub fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_one_sequence() {
        // Lengths across AES blocks (two values each) and the ctr crate's batches of blocks,
        // starting at every parity of the block, asked for piece by piece.
        let whole = Prg::new(&[9; 32], Stream::ImageMask).vec(3000);
        for skip in [0usize, 1, 2, 7, 63, 127] {
            for n in [0usize, 1, 31, 32, 33, 100, 1000] {
                let mut p = Prg::new(&[9; 32], Stream::ImageMask);
                let mut got = p.vec(skip);
                got.extend(p.vec(n));
                got.extend(p.vec(1));
                assert_eq!(got, whole[..skip + n + 1], "skip {skip}, n {n}");
            }
        }
    }

    /// A skip is a draw left unmade, whatever its length against the AES blocks.
    #[test]
    fn a_skip_lands_where_the_draws_would() {
        let whole = Prg::new(&[9; 32], Stream::ModelShare).vec(3000);
        for lead in [0usize, 1, 2, 33] {
            for n in [0usize, 1, 2, 3, 31, 1000] {
                let mut p = Prg::new(&[9; 32], Stream::ModelShare);
                let mut got = p.vec(lead);
                p.skip(n);
                got.extend(p.vec(5));
                let want: Vec<u64> = whole[..lead]
                    .iter()
                    .chain(&whole[lead + n..][..5])
                    .copied()
                    .collect();
                assert_eq!(got, want, "lead {lead}, skip {n}");
            }
        }
    }

    /// The construction pinned: block i of stream (seed, s) is AES-256 of (c + i) mod 2^128
    /// as 16 little-endian bytes under the key K, read as two little-endian u64s, where K and
    /// c are bytes 0..32 and 32..48 (little-endian) of BLAKE3's XOF in derive_key mode over
    /// seed || id as 8 little-endian bytes. Another key derivation (the seed as the key, the
    /// id left out, another context), a counter from zero or big-endian, or another cipher
    /// gives other values.
    #[test]
    fn stream_values_are_aes_256_of_the_counter_under_the_derived_key() {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let seed: Seed = core::array::from_fn(|i| (i * 37 + 5) as u8);
        let stream = Stream::ActMask(3, 7);
        let mut h = blake3::Hasher::new_derive_key(STREAM_KEY_CONTEXT);
        h.update(&seed);
        h.update(&stream.id().to_le_bytes());
        let mut kc = [0u8; 48];
        h.finalize_xof().fill(&mut kc);
        let aes = aes::Aes256::new(&<[u8; 32]>::try_from(&kc[..32]).unwrap().into());
        let c = u128::from_le_bytes(kc[32..].try_into().unwrap());
        let want: Vec<u64> = (0u128..5)
            .flat_map(|i| {
                let mut b = c.wrapping_add(i).to_le_bytes().into();
                aes.encrypt_block(&mut b);
                [0, 8].map(|o| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()))
            })
            .collect();
        assert_eq!(Prg::new(&seed, stream).vec(10), want);
    }

    #[test]
    fn shares_reconstruct_and_streams_differ() {
        let seed = fresh_seed();
        let v: Vec<u64> = (0..100).map(|i| i * 7919).collect();
        let s0 = share_with_seed(&v, &seed, Stream::ImageShare);
        let s1 = expand(&seed, Stream::ImageShare, 100);
        assert_eq!(add(&s0, &s1), v);
        assert_ne!(
            expand(&seed, Stream::ActMask(1, 0), 4),
            expand(&seed, Stream::ActMask(1, 1), 4)
        );
    }

    #[test]
    fn stream_ids_are_distinct_up_to_the_largest_layer() {
        let l = MAX_STREAM_LAYER;
        let ids = [
            Stream::ModelShare.id(),
            Stream::ImageShare.id(),
            Stream::WeightMask(l).id(),
            Stream::ImageMask.id(),
            Stream::ActMask(l, u32::MAX).id(),
            Stream::MatTriple(l, u32::MAX).id(),
            Stream::ElemTriple(l, u32::MAX).id(),
            Stream::BaseOt.id(),
            Stream::AndTriple(l, u32::MAX).id(),
            Stream::DaBit(l, u32::MAX).id(),
            Stream::EdaBit(l, u32::MAX).id(),
            Stream::ReluSelect(l, u32::MAX).id(),
            Stream::EdaBit(0, 0).id(),
            Stream::ReluSelect(0, 0).id(),
            Stream::MapExtend(l).id(),
            Stream::MapExtend(0).id(),
            Stream::WeightMask(0).id(),
            Stream::ActMask(0, 0).id(),
        ];
        let set: std::collections::HashSet<u64> = ids.iter().copied().collect();
        assert_eq!(set.len(), ids.len(), "{ids:x?}");
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_layer_past_the_stream_bound_is_refused_not_aliased() {
        // 2^16 would shift into the purpose bits: WeightMask(2^16) was ImageMask's stream.
        let _ = Stream::WeightMask(MAX_STREAM_LAYER + 1).id();
    }
}
