//! 128-bit values: base-OT seeds, the garbler's Δ, wire labels. A correlation's unit, so it
//! lives below both the dealer (which deals base OTs) and the engines (which garble with it).

use rand::{CryptoRng, RngCore};
use std::ops::{BitAnd, BitXor, BitXorAssign};

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
}
