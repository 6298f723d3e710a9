//! The hash used by garbling and by OT extension (both use it, so it sits beside them in
//! twopc/, not inside gc/).
//!
//! The hash is the tweakable circular correlation-robust (TCCR) function of Guo, Katz,
//! Wang, Yu ("Efficient and secure multiparty computation from fixed-key block ciphers",
//! IEEE S&P 2020, section 7.4): `H(x, i) = π(π(x) ⊕ i) ⊕ π(x)`, two AES calls, where `π`
//! is AES-128 under a key that both servers derive from the job's dealer seed.
//! The key is public to both servers (as a fixed key would be) but new for every job: work
//! an attacker spends on one job's `π` says nothing about another job's, so the
//! multi-instance loss of one global key (one AES query testing a guess of Δ against every
//! gate of every job ever run) is gone. docs/protocol.md states the security level.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128Enc;

use crate::corr::block::Block;

/// The job's tweakable hash: π is AES-128 under the job's key.
#[derive(Clone)]
pub struct TccrHash {
    aes: Aes128Enc,
}

/// BLAKE3 key-derivation context of the job's hash key (domain separation from every other
/// use of the dealer seed it is derived from).
const KEY_CONTEXT: &str = "ppdenoise 2026-11 garbling and OT hash key (GKWY20 TCCR, AES-128)";

/// How many blocks are hashed per AES call: 8 keeps the AES-NI pipeline full.
pub const HASH_BATCH: usize = 8;

impl TccrHash {
    /// π under `key`, taken as is (known-answer tests, and [`TccrHash::for_job`]).
    pub fn with_key(key: [u8; 16]) -> TccrHash {
        TccrHash {
            aes: Aes128Enc::new(&GenericArray::from(key)),
        }
    }

    /// The hash of the job whose dealer seed is `seed` (both servers hold the same seed).
    pub fn for_job(seed: Block) -> TccrHash {
        let k = blake3::derive_key(KEY_CONTEXT, &seed.to_bytes());
        TccrHash::with_key(k[..16].try_into().expect("16 of 32 bytes"))
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

    /// `N` tweakable hashes `H(x_i, tweak_i)`, two pipelined AES calls each.
    #[inline(always)]
    pub fn tccr_many<const N: usize>(&self, xs: [Block; N], tweaks: [Block; N]) -> [Block; N] {
        let mut p = xs;
        self.permute_many(&mut p);
        let mut y: [Block; N] = std::array::from_fn(|i| p[i] ^ tweaks[i]);
        self.permute_many(&mut y);
        std::array::from_fn(|i| y[i] ^ p[i])
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

    /// FIPS-197 appendix C.1 (AES-128) through our block type and byte order.
    #[test]
    fn aes_known_answer_fips_197() {
        let hex = |s: &str| -> [u8; 16] {
            std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        };
        let aes = TccrHash::with_key(hex("000102030405060708090a0b0c0d0e0f"));
        let mut x = [Block::from_bytes(hex("00112233445566778899aabbccddeeff"))];
        aes.permute_many(&mut x);
        assert_eq!(x[0].to_bytes(), hex("69c4e0d86a7b0430d8cdb78070b4c55a"));
    }

    /// H(x, i) = π(π(x) ⊕ i) ⊕ π(x) under a fixed key, and the job key derived from a fixed
    /// seed: known answers, and the same values recomputed here from the aes and blake3
    /// crates, so that the one-call hash, a linear or identity hash, another key or another
    /// key derivation cannot pass.
    #[test]
    fn tccr_known_answers() {
        let key = 0x243f6a8885a308d313198a2e03707344u128.to_le_bytes();
        let cases = [
            (0u128, 0u128, KAT[0]),
            (0x0123456789abcdef_fedcba9876543210, 7, KAT[1]),
            (u128::MAX, u128::MAX - 1, KAT[2]),
        ];
        let h = TccrHash::with_key(key);
        let raw = Aes128Enc::new(&GenericArray::from(key));
        let pi = |v: u128| {
            let mut b = GenericArray::from(v.to_le_bytes());
            raw.encrypt_block(&mut b);
            u128::from_le_bytes(b.into())
        };
        for (x, i, want) in cases {
            let independent = pi(pi(x) ^ i) ^ pi(x);
            let got = h.tccr(Block(x), Block(i)).0;
            assert_eq!(got, independent, "x = {x:#x}, i = {i}");
            assert_eq!(got, want, "known answer for x = {x:#x}, i = {i}: {got:#x}");
        }
        // The job key: BLAKE3 derive_key of the seed under KEY_CONTEXT, first 16 bytes.
        let seed = Block(0x000102030405060708090a0b0c0d0e0f);
        let k = blake3::derive_key(KEY_CONTEXT, &seed.to_bytes());
        let by_hand = TccrHash::with_key(k[..16].try_into().unwrap());
        let job = TccrHash::for_job(seed);
        let got = job.tccr(Block(5), Block(9)).0;
        assert_eq!(got, by_hand.tccr(Block(5), Block(9)).0);
        assert_eq!(got, KAT[3], "known answer of the job key: {got:#x}");
        // Another seed, another key.
        assert_ne!(
            TccrHash::for_job(Block(seed.0 ^ 1))
                .tccr(Block(5), Block(9))
                .0,
            got
        );
    }

    /// Pinned outputs of [`tccr_known_answers`].
    const KAT: [u128; 4] = [
        0xa3ba87884c8af22c2c252104cc3a80ba,
        0x044971cdbb0668f8416516a69db0510f,
        0xc631e6d327f3420a1c3018c67d3b4baf,
        0x28e637efd0d1d3f88ac7bf73332f7887,
    ];

    #[test]
    fn batch_hash_matches_single() {
        let h = TccrHash::for_job(Block(3));
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
