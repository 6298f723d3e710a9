//! Bit-sliced layout: wire `w` of element `i` is bit `i % 64` of word `i / 64` of the wire's
//! words, so one machine-word operation evaluates a gate for 64 elements.

/// Words per wire for `elements` elements.
pub fn words(elements: usize) -> usize {
    elements.div_ceil(64)
}

/// The low `n` bits of each value, bit-sliced: `out[b * w .. (b + 1) * w]` holds bit `b` of
/// every element (`w = words(values.len())`).
pub fn slice(values: &[u64], n: usize) -> Vec<u64> {
    let w = words(values.len());
    let mut out = vec![0u64; n * w];
    for (word, chunk) in values.chunks(64).enumerate() {
        // A 64 x n block: gather bit b of the chunk's values into one word.
        for b in 0..n {
            let mut acc = 0u64;
            for (j, &v) in chunk.iter().enumerate() {
                acc |= ((v >> b) & 1) << j;
            }
            out[b * w + word] = acc;
        }
    }
    out
}

/// Bit `i` of a bit-sliced wire.
#[inline]
pub fn bit(wire: &[u64], i: usize) -> u64 {
    (wire[i / 64] >> (i % 64)) & 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_reads_back() {
        let vals: Vec<u64> = (0..150u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let n = 64;
        let s = slice(&vals, n);
        let w = words(vals.len());
        assert_eq!(w, 3);
        for (i, &v) in vals.iter().enumerate() {
            for b in 0..n {
                assert_eq!(bit(&s[b * w..(b + 1) * w], i), (v >> b) & 1);
            }
        }
        // Padding bits of the last word stay zero.
        assert_eq!(s[w - 1] >> (150 - 128), 0);
    }
}
