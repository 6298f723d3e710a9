//! One description of a boolean circuit, many interpretations (fancy-garbling
//! style): plain evaluation, AND counting, recording, garbling, evaluating.

/// A boolean circuit builder. XOR, NOT and constants are free in half-gates
/// garbling; only `and` costs (two blocks of table).
pub trait Circuit {
    type Wire: Clone;
    fn xor(&mut self, a: &Self::Wire, b: &Self::Wire) -> Self::Wire;
    fn and(&mut self, a: &Self::Wire, b: &Self::Wire) -> Self::Wire;
    fn not(&mut self, a: &Self::Wire) -> Self::Wire;
    fn constant(&mut self, bit: bool) -> Self::Wire;
}

/// A circuit written once, generic over the interpretation: built from the two parties'
/// input wires (`g`: S1's, `e`: S0's).
pub trait Build {
    fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire>;
}

/// Evaluates on cleartext bits: the oracle for every circuit.
#[derive(Default, Debug, Clone, Copy)]
pub struct PlainEval;

impl Circuit for PlainEval {
    type Wire = bool;
    fn xor(&mut self, a: &bool, b: &bool) -> bool {
        a ^ b
    }
    fn and(&mut self, a: &bool, b: &bool) -> bool {
        a & b
    }
    fn not(&mut self, a: &bool) -> bool {
        !a
    }
    fn constant(&mut self, bit: bool) -> bool {
        bit
    }
}

/// Counts gates; AND gates are what garbling and communication cost.
#[derive(Default, Debug, Clone, Copy)]
pub struct AndCounter {
    pub ands: u64,
    pub xors: u64,
}

impl Circuit for AndCounter {
    type Wire = ();
    fn xor(&mut self, _: &(), _: &()) {
        self.xors += 1;
    }
    fn and(&mut self, _: &(), _: &()) {
        self.ands += 1;
    }
    fn not(&mut self, _: &()) {}
    fn constant(&mut self, _: bool) {}
}

/// Little-endian bits of the low `n` bits of `x`.
pub fn to_bits(x: u64, n: usize) -> Vec<bool> {
    (0..n).map(|i| i < 64 && (x >> i) & 1 == 1).collect()
}

/// Inverse of [`to_bits`]; bits beyond 64 are ignored.
pub fn from_bits(bits: &[bool]) -> u64 {
    bits.iter()
        .take(64)
        .enumerate()
        .fold(0, |acc, (i, &b)| acc | ((b as u64) << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_roundtrip() {
        for x in [0u64, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(from_bits(&to_bits(x, 64)), x);
        }
        assert_eq!(from_bits(&to_bits(0xff, 4)), 0xf);
    }

    #[test]
    fn counter_counts() {
        let mut c = AndCounter::default();
        c.constant(true);
        c.and(&(), &());
        c.xor(&(), &());
        c.not(&());
        assert_eq!((c.ands, c.xors), (1, 1));
    }
}
