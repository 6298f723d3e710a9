//! 128-bit wire labels and the fixed-key AES hash used by garbling and OT.
//!
//! The hash is the tweakable circular correlation-robust function of
//! Guo, Katz, Wang, Yu ("Better concrete security for half-gates garbling",
//! CRYPTO 2020): `H(x, i) = π(σ(x) ⊕ i) ⊕ σ(x)`, where `π` is AES-128 under a
//! fixed public key and `σ(xL || xR) = (xL ⊕ xR) || xL` is a linear
//! orthomorphism. One AES call per hash.

use std::ops::{BitAnd, BitXor, BitXorAssign};
use std::sync::LazyLock;

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use rand::{CryptoRng, RngCore};

/// A 128-bit label. Bit 0 (`lsb`) is the point-and-permute colour bit.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
#[repr(transparent)]
pub struct Block(pub u128);

impl Block {
    pub const ZERO: Block = Block(0);
    /// Size of a block on the wire.
    pub const BYTES: usize = 16;

    #[inline(always)]
    pub fn lsb(self) -> bool {
        self.0 & 1 == 1
    }

    #[inline(always)]
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }

    #[inline(always)]
    pub fn from_bytes(b: [u8; 16]) -> Block {
        Block(u128::from_le_bytes(b))
    }

    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Block {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        Block::from_bytes(b)
    }

    /// Low 64 bits.
    #[inline(always)]
    pub fn low_u64(self) -> u64 {
        self.0 as u64
    }

    /// `self` if `bit`, else zero, without a branch.
    #[inline(always)]
    pub fn select(self, bit: bool) -> Block {
        Block(self.0 & (bit as u128).wrapping_neg())
    }

    /// GKWY20 orthomorphism σ(xL || xR) = (xL ⊕ xR) || xL (hi || lo).
    #[inline(always)]
    fn sigma(self) -> Block {
        let hi = self.0 >> 64;
        let lo = self.0 & (u64::MAX as u128);
        Block(((hi ^ lo) << 64) | hi)
    }
}

impl BitXor for Block {
    type Output = Block;
    #[inline(always)]
    fn bitxor(self, o: Block) -> Block {
        Block(self.0 ^ o.0)
    }
}

impl BitXorAssign for Block {
    #[inline(always)]
    fn bitxor_assign(&mut self, o: Block) {
        self.0 ^= o.0;
    }
}

impl BitAnd for Block {
    type Output = Block;
    #[inline(always)]
    fn bitand(self, o: Block) -> Block {
        Block(self.0 & o.0)
    }
}

/// A message from the peer had the wrong size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: expected {expected} bytes, got {got}")]
pub struct LengthError {
    pub what: &'static str,
    pub expected: usize,
    pub got: usize,
}

/// Serialises blocks as 16 little-endian bytes each.
pub fn blocks_to_bytes(blocks: &[Block]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 16);
    for b in blocks {
        out.extend_from_slice(&b.to_bytes());
    }
    out
}

/// Parses `expected` blocks; any other length is an error, never a panic.
pub fn blocks_from_bytes(
    what: &'static str,
    bytes: &[u8],
    expected: usize,
) -> Result<Vec<Block>, LengthError> {
    if bytes.len() != expected * 16 {
        return Err(LengthError {
            what,
            expected: expected * 16,
            got: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| Block::from_bytes(c.try_into().expect("chunk of 16")))
        .collect())
}

/// Fixed-key AES-128: the public random permutation π.
pub struct FixedKeyAes {
    aes: Aes128,
}

/// Public key for π; any constant works, this one is "nothing up my sleeve" digits of π.
const FIXED_KEY: u128 = 0x243f6a8885a308d313198a2e03707344;

static FIXED: LazyLock<FixedKeyAes> = LazyLock::new(|| FixedKeyAes {
    aes: Aes128::new(&GenericArray::from(FIXED_KEY.to_le_bytes())),
});

/// How many blocks are hashed per AES call: 8 keeps the AES-NI pipeline full.
pub const HASH_BATCH: usize = 8;

impl FixedKeyAes {
    /// The process-wide instance (the key is public, so sharing is fine).
    pub fn get() -> &'static FixedKeyAes {
        &FIXED
    }

    /// π under another key: known-answer tests only.
    #[cfg(test)]
    fn with_key(key: [u8; 16]) -> FixedKeyAes {
        FixedKeyAes {
            aes: Aes128::new(&GenericArray::from(key)),
        }
    }

    /// π applied in place to a slice of blocks.
    #[inline(always)]
    pub fn permute_many<const N: usize>(&self, xs: &mut [Block; N]) {
        let mut buf: [aes::Block; N] =
            std::array::from_fn(|i| GenericArray::from(xs[i].to_bytes()));
        self.aes.encrypt_blocks(&mut buf);
        for (x, b) in xs.iter_mut().zip(buf.iter()) {
            *x = Block(u128::from_le_bytes((*b).into()));
        }
    }

    /// `N` tweakable hashes in one AES call: `H(x_i, tweak_i)`.
    #[inline(always)]
    pub fn tccr_many<const N: usize>(&self, xs: [Block; N], tweaks: [Block; N]) -> [Block; N] {
        let s: [Block; N] = std::array::from_fn(|i| xs[i].sigma());
        let mut y: [Block; N] = std::array::from_fn(|i| s[i] ^ tweaks[i]);
        self.permute_many(&mut y);
        std::array::from_fn(|i| y[i] ^ s[i])
    }

    /// Single tweakable hash `H(x, tweak)`.
    #[inline(always)]
    pub fn tccr(&self, x: Block, tweak: Block) -> Block {
        self.tccr_many([x], [tweak])[0]
    }

    /// Hashes a whole slice in place, `xs[i] = H(xs[i], tweak(i))`, batching
    /// [`HASH_BATCH`] blocks per AES call.
    pub fn tccr_slice(&self, xs: &mut [Block], tweak: impl Fn(usize) -> Block) {
        let mut chunks = xs.chunks_exact_mut(HASH_BATCH);
        let mut base = 0;
        for c in &mut chunks {
            let arr: [Block; HASH_BATCH] = c.try_into().expect("exact chunk");
            let tw: [Block; HASH_BATCH] = std::array::from_fn(|i| tweak(base + i));
            c.copy_from_slice(&self.tccr_many(arr, tw));
            base += HASH_BATCH;
        }
        for (i, x) in chunks.into_remainder().iter_mut().enumerate() {
            *x = self.tccr(*x, tweak(base + i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    #[test]
    fn bytes_roundtrip_little_endian() {
        let b = Block(0x0102);
        assert_eq!(b.to_bytes()[0], 2);
        assert_eq!(b.to_bytes()[1], 1);
        assert_eq!(Block::from_bytes(b.to_bytes()), b);
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let v: Vec<Block> = (0..5).map(|_| Block::random(&mut rng)).collect();
        let bytes = blocks_to_bytes(&v);
        assert_eq!(blocks_from_bytes("t", &bytes, 5).unwrap(), v);
        assert!(blocks_from_bytes("t", &bytes[..79], 5).is_err());
        assert!(blocks_from_bytes("t", &bytes, 4).is_err());
    }

    #[test]
    fn sigma_is_orthomorphism_on_samples() {
        // σ must be linear, and σ and σ ⊕ id must both be permutations.
        let mut rng = ChaCha12Rng::seed_from_u64(2);
        for _ in 0..1000 {
            let a = Block::random(&mut rng);
            let b = Block::random(&mut rng);
            assert_eq!((a ^ b).sigma(), a.sigma() ^ b.sigma());
            if a != Block::ZERO {
                assert_ne!(a.sigma(), Block::ZERO);
                assert_ne!(a.sigma() ^ a, Block::ZERO);
            }
        }
        // Both maps are invertible by construction: from σ(x) = (h ⊕ l, h)
        // one reads h, then l; from σ(x) ⊕ x = (l, h ⊕ l) one reads l, then h.
        let x = Block::random(&mut rng);
        let s = x.sigma().0;
        let (h, l) = (s as u64 as u128, (s >> 64) ^ (s as u64 as u128));
        assert_eq!(Block((h << 64) | l), x);
    }

    /// FIPS-197 appendix C.1 (AES-128) through our block type and byte order.
    #[test]
    fn aes_known_answer_fips_197() {
        let hex = |s: &str| -> [u8; 16] {
            std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        };
        let aes = FixedKeyAes::with_key(hex("000102030405060708090a0b0c0d0e0f"));
        let mut x = [Block::from_bytes(hex("00112233445566778899aabbccddeeff"))];
        aes.permute_many(&mut x);
        assert_eq!(x[0].to_bytes(), hex("69c4e0d86a7b0430d8cdb78070b4c55a"));
    }

    /// The garbling hash H(x, i) = π(σ(x) ⊕ i) ⊕ σ(x) with the fixed key: known answers, and
    /// the same values recomputed here from the aes crate and the definition of σ, so that a
    /// linear or identity hash, another σ or another key cannot pass.
    #[test]
    fn tccr_known_answers() {
        let h = FixedKeyAes::get();
        let cases = [
            (0u128, 0u128, 0xbc3ecd119217f0f783a62f4bb03aeaa0u128),
            (
                0x0123456789abcdef_fedcba9876543210,
                7,
                0xc0ec74641d55d1235549262453cac44a,
            ),
            (u128::MAX, u128::MAX - 1, 0xb0f07b63d69b99bf0368a135709fde43),
        ];
        let raw = Aes128::new(&GenericArray::from(FIXED_KEY.to_le_bytes()));
        for (x, i, want) in cases {
            let (hi, lo) = (x >> 64, x & (u64::MAX as u128));
            let s = ((hi ^ lo) << 64) | hi;
            let mut b = GenericArray::from((s ^ i).to_le_bytes());
            raw.encrypt_block(&mut b);
            let independent = u128::from_le_bytes(b.into()) ^ s;
            let got = h.tccr(Block(x), Block(i)).0;
            assert_eq!(got, independent, "x = {x:#x}, i = {i}");
            assert_eq!(got, want, "known answer for x = {x:#x}, i = {i}");
        }
    }

    #[test]
    fn batch_hash_matches_single() {
        let h = FixedKeyAes::get();
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let xs: Vec<Block> = (0..21).map(|_| Block::random(&mut rng)).collect();
        let mut ys = xs.clone();
        h.tccr_slice(&mut ys, |i| Block(i as u128 + 7));
        for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
            assert_eq!(h.tccr(*x, Block(i as u128 + 7)), *y);
        }
        // The tweak matters and the hash is not the identity.
        assert_ne!(h.tccr(xs[0], Block(0)), h.tccr(xs[0], Block(1)));
        assert_ne!(h.tccr(xs[0], Block(0)), xs[0]);
    }
}
