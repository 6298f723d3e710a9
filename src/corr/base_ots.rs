//! The base OTs of the garbled-circuit engine's IKNP extension: what the dealer deals and
//! S0 (OT receiver: both seeds of 128 pairs) and S1 (OT sender: Δ and one seed of each pair,
//! chosen by Δ's bits) read. Zeroised on drop.

use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use zeroize::Zeroize;

use crate::corr::block::{Block, LengthError};

/// The triplet header's entry naming both parties' base OTs by digest ([`base_ot_digests`]).
pub const BASE_OT: &str = "base_ot";

/// Digest of one party's serialised base OTs. It names them without revealing them: the
/// other server does not know at least 127 bits of each part (of S0's, the 128 seeds S1 did
/// not choose; of S1's, Δ), so the digest (a keyed BLAKE3) hides them like any hash of a
/// high-entropy secret.
pub fn base_ot_digest(bytes: &[u8]) -> String {
    let mut h = blake3::Hasher::new_derive_key("ppdenoise base-OT digest v1");
    h.update(bytes);
    hex::encode(h.finalize().as_bytes())
}

/// The triplet header's [`BASE_OT`] entry: S0's part's digest, a comma, S1's.
pub fn base_ot_digests(part0: &[u8], part1: &[u8]) -> String {
    format!("{},{}", base_ot_digest(part0), base_ot_digest(part1))
}

/// Security parameter of the extension: number of base OTs, bits of Δ.
pub const KAPPA: usize = 128;

/// Base-OT part for S0 (the IKNP receiver acts as base-OT sender).
#[derive(Clone)]
pub struct BaseOtForReceiver {
    pub seeds: [(Block, Block); KAPPA],
}

/// Base-OT part for S1: Δ (lsb 1) and `seeds[i]` = element `Δ_i` of pair `i`.
#[derive(Clone)]
pub struct BaseOtForSender {
    pub delta: Block,
    pub seeds: [Block; KAPPA],
}

// Seeds and Δ are wiped when dropped (best effort: `Block` is `Copy`, so copies made on
// the way, e.g. on the stack, are not).
impl Drop for BaseOtForReceiver {
    fn drop(&mut self) {
        for (a, b) in self.seeds.iter_mut() {
            a.0.zeroize();
            b.0.zeroize();
        }
    }
}

impl Drop for BaseOtForSender {
    fn drop(&mut self) {
        self.delta.0.zeroize();
        for s in self.seeds.iter_mut() {
            s.0.zeroize();
        }
    }
}

impl BaseOtForReceiver {
    pub const BYTES: usize = KAPPA * 32;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        for (a, b) in &self.seeds {
            out.extend_from_slice(&a.to_bytes());
            out.extend_from_slice(&b.to_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OtError> {
        check_len("base OTs for receiver", bytes, Self::BYTES)?;
        let blk = |i: usize| Block::from_bytes(bytes[16 * i..16 * i + 16].try_into().expect("16"));
        Ok(BaseOtForReceiver {
            seeds: std::array::from_fn(|i| (blk(2 * i), blk(2 * i + 1))),
        })
    }
}

impl BaseOtForSender {
    pub const BYTES: usize = 16 + KAPPA * 16;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::BYTES);
        out.extend_from_slice(&self.delta.to_bytes());
        for s in &self.seeds {
            out.extend_from_slice(&s.to_bytes());
        }
        out
    }

    /// Parses and checks `lsb(Δ) = 1`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OtError> {
        check_len("base OTs for sender", bytes, Self::BYTES)?;
        let blk = |i: usize| Block::from_bytes(bytes[16 * i..16 * i + 16].try_into().expect("16"));
        let delta = blk(0);
        if !delta.lsb() {
            return Err(OtError::DeltaLsb);
        }
        Ok(BaseOtForSender {
            delta,
            seeds: std::array::from_fn(|i| blk(i + 1)),
        })
    }
}

/// Malformed input from the peer or from a dealer file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtError {
    #[error(transparent)]
    Length(#[from] LengthError),
    #[error("base OTs for sender: delta has lsb 0 (corrupt file)")]
    DeltaLsb,
}

pub(crate) fn check_len(
    what: &'static str,
    bytes: &[u8],
    expected: usize,
) -> Result<(), LengthError> {
    if bytes.len() != expected {
        return Err(LengthError {
            what,
            expected,
            got: bytes.len(),
        });
    }
    Ok(())
}

/// The dealer's job: random seed pairs and a random Δ with lsb 1.
pub fn deal_base_ots<R: RngCore + CryptoRng>(rng: &mut R) -> (BaseOtForReceiver, BaseOtForSender) {
    let delta = Block(Block::random(rng).0 | 1);
    let seeds: [(Block, Block); KAPPA] =
        std::array::from_fn(|_| (Block::random(rng), Block::random(rng)));
    let chosen = std::array::from_fn(|i| {
        if (delta.0 >> i) & 1 == 1 {
            seeds[i].1
        } else {
            seeds[i].0
        }
    });
    (
        BaseOtForReceiver { seeds },
        BaseOtForSender {
            delta,
            seeds: chosen,
        },
    )
}

/// The dealer's base OTs for one job: (S0's part, S1's part), serialised, each followed by
/// the 16-byte seed both servers derive the garbler's active input labels from.
pub fn deal_gc_setup() -> (Vec<u8>, Vec<u8>) {
    deal_gc_setup_with(&mut ChaCha12Rng::from_entropy())
}

/// [`deal_gc_setup`] from the given generator (tests that must be reproducible).
#[doc(hidden)]
pub fn deal_gc_setup_with<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> (Vec<u8>, Vec<u8>) {
    let (r, s) = deal_base_ots(rng);
    let label_seed = Block::random(rng).to_bytes();
    let mut r = r.to_bytes();
    let mut s = s.to_bytes();
    r.extend_from_slice(&label_seed);
    s.extend_from_slice(&label_seed);
    (r, s)
}
