//! Additive secret sharing in Z_2^64 and the seeded PRG that lets one party's share travel as
//! a 32-byte seed. Every use of a seed names a distinct ChaCha stream (see [`Stream`]), so no
//! PRG output is ever used for two purposes.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

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

/// ChaCha stream identifiers: (purpose << 48) | (layer << 32) | index.
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
        }
    }
}

pub struct Prg(ChaCha20Rng);

impl Prg {
    pub fn new(seed: &Seed, stream: Stream) -> Prg {
        stream_log::note(seed, stream);
        let mut r = ChaCha20Rng::from_seed(*seed);
        r.set_stream(stream.id());
        Prg(r)
    }

    /// The next `out.len()` values: the generator's bytes in bulk, read as little-endian
    /// u64s, which is exactly the sequence `next_u64` would give one at a time (the block
    /// buffer hands out its 32-bit words in the same order either way), at a fraction of
    /// the cost per value.
    pub fn fill(&mut self, out: &mut [u64]) {
        self.0.fill_bytes(bytemuck::cast_slice_mut(out));
        if cfg!(target_endian = "big") {
            out.iter_mut().for_each(|v| *v = u64::from_le(*v));
        }
    }

    pub fn vec(&mut self, n: usize) -> Vec<u64> {
        let mut v = vec![0u64; n];
        self.fill(&mut v);
        v
    }

    pub fn rng(&mut self) -> &mut ChaCha20Rng {
        &mut self.0
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
    fn bulk_fill_is_the_value_by_value_stream() {
        // Lengths across the 4-block buffer (64 words) and starts at every parity of the
        // buffer's word index, including a value straddling two refills.
        for skip in [0usize, 1, 2, 63, 127] {
            for n in [0usize, 1, 31, 32, 33, 100, 1000] {
                let mut bulk = Prg::new(&[9; 32], Stream::ImageMask);
                let mut one = Prg::new(&[9; 32], Stream::ImageMask);
                for _ in 0..skip {
                    assert_eq!(bulk.rng().next_u32(), one.rng().next_u32());
                }
                let got = bulk.vec(n);
                let want: Vec<u64> = (0..n).map(|_| one.rng().next_u64()).collect();
                assert_eq!(got, want, "skip {skip}, n {n}");
                assert_eq!(bulk.rng().next_u64(), one.rng().next_u64());
            }
        }
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
