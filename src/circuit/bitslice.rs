//! Bit-sliced layout: wire `w` of element `i` is bit `i % 64` of word `i / 64` of the wire's
//! words, so one machine-word operation evaluates a gate for 64 elements.

/// Words per wire for `elements` elements.
pub fn words(elements: usize) -> usize {
    elements.div_ceil(64)
}

/// The low `n` bits of each value, bit-sliced: `out[b * w .. (b + 1) * w]` holds bit `b` of
/// every element (`w = words(values.len())`).
pub fn slice(values: &[u64], n: usize) -> Vec<u64> {
    assert!(n <= 64, "at most 64 bits per value");
    let w = words(values.len());
    let mut out = vec![0u64; n * w];
    for word in 0..w {
        let planes = word_planes(values.len(), word, |i| values[i]);
        put_planes(&mut out, w, word, &planes[..n]);
    }
    out
}

/// The bit planes of word `word` of `elements` values, element i's value `value(i)`: entry
/// j holds bit j of each of the word's (up to) 64 elements; padding lanes are zero. One word
/// of [`slice`], for callers that make the values a word at a time.
pub fn word_planes(elements: usize, word: usize, value: impl Fn(usize) -> u64) -> [u64; 64] {
    let mut block = [0u64; 64];
    for (l, b) in block[..(elements - 64 * word).min(64)]
        .iter_mut()
        .enumerate()
    {
        *b = value(64 * word + l);
    }
    transpose64(&mut block);
    block
}

/// Writes `planes` (plane j of one word, as [`word_planes`] gives them) into word `word` of
/// the bit-sliced `out`, `w` words a wire.
pub fn put_planes(out: &mut [u64], w: usize, word: usize, planes: &[u64]) {
    for (j, &plane) in planes.iter().enumerate() {
        out[j * w + word] = plane;
    }
}

/// The inverse of [`word_planes`] for one word: the 64 values whose bit j is `plane(j)`
/// (j < m; the others zero), lane l being the word's element l.
pub fn word_values(m: usize, plane: impl Fn(usize) -> u64) -> [u64; 64] {
    assert!(m <= 64, "at most 64 bits per value");
    let mut block = [0u64; 64];
    for (j, row) in block[..m].iter_mut().enumerate() {
        *row = plane(j);
    }
    transpose64(&mut block);
    block
}

/// The inverse of [`slice`] for `m` wires given by `wire(j, word)` (word `word` of wire `j`,
/// which may combine several sharings): the `elements` values whose bit `j` is wire `j`.
pub fn unslice(m: usize, elements: usize, wire: impl Fn(usize, usize) -> u64) -> Vec<u64> {
    assert!(m <= 64, "at most 64 bits per value");
    let mut out = Vec::with_capacity(elements);
    for word in 0..words(elements) {
        let block = word_values(m, |j| wire(j, word));
        out.extend_from_slice(&block[..(elements - 64 * word).min(64)]);
    }
    out
}

/// Transposes a 64 x 64 bit matrix in place (bit `c` of `a[r]` is entry (r, c)): six rounds
/// of block swaps (Hacker's Delight 7-3), about 6 operations per row instead of 64.
pub fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32;
    let mut m: u64 = 0x0000_0000_ffff_ffff;
    while j != 0 {
        let mut k = 0;
        while k < 64 {
            // Swap the high j columns of row k with the low j columns of row k + j.
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k + j] ^= t;
            a[k] ^= t << j;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
    }
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
        // And back, for every width, against the bit-by-bit definition.
        for n in [1, 7, 63, 64] {
            let s = slice(&vals, n);
            let back = unslice(n, vals.len(), |j, word| s[j * w + word]);
            let low = |v: u64| if n == 64 { v } else { v & ((1 << n) - 1) };
            assert_eq!(back, vals.iter().map(|&v| low(v)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn transpose_matches_the_definition() {
        let mut a: [u64; 64] = std::array::from_fn(|r| {
            (r as u64 + 1)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(r as u32)
        });
        let orig = a;
        transpose64(&mut a);
        for (r, row) in orig.iter().enumerate() {
            for (c, col) in a.iter().enumerate() {
                assert_eq!((col >> r) & 1, (row >> c) & 1, "({r}, {c})");
            }
        }
        transpose64(&mut a);
        assert_eq!(a, orig);
    }
}
