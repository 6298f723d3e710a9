//! Fixed-point numbers in the ring Z_2^64.
//!
//! A real value `v` at scale `s` is the integer `round(v * 2^s)` reduced mod 2^64; signed
//! values use two's complement, so ring addition and multiplication are plain wrapping u64
//! arithmetic.

/// Encodes `v` at scale `s` (round half away from zero).
pub fn encode(v: f64, s: u32) -> u64 {
    (v * (s as f64).exp2()).round() as i64 as u64
}

/// Decodes a ring element at scale `s` as a signed value.
pub fn decode(x: u64, s: u32) -> f64 {
    x as i64 as f64 / (s as f64).exp2()
}

/// Shifts each value left by `sh`, so that its low 64 - sh bits fill the word (a network's
/// output held mod 2^(64 - sh), docs/protocol.md "Ring width"); returns how many of them
/// leave that signed range (plain values only: on shares the count means nothing).
pub fn hold_at_top(v: &mut [u64], sh: u32) -> u64 {
    let mut wrapped = 0;
    for x in v.iter_mut() {
        let out = *x << sh;
        wrapped += u64::from(((out as i64) >> sh) as u64 != *x);
        *x = out;
    }
    wrapped
}

/// Sign-extends the low `k` bits of `x` (1 <= k <= 64).
pub fn sign_extend(x: u64, k: u32) -> u64 {
    if k >= 64 {
        return x;
    }
    let shift = 64 - k;
    (((x << shift) as i64) >> shift) as u64
}

/// Bits `[lo, lo + k)` of `x` read as a signed k-bit integer, returned in the ring.
/// This is what the truncation circuit outputs: `floor(V / 2^lo)` reduced to k signed bits.
pub fn bits_signed(x: u64, lo: u32, k: u32) -> u64 {
    sign_extend(x >> lo, k)
}

/// Low `n` bits of `x` (n <= 64).
pub fn low_bits(x: u64, n: u32) -> u64 {
    if n >= 64 {
        x
    } else {
        x & ((1u64 << n) - 1)
    }
}

/// The ReLU circuit's function on a reconstructed pre-activation `z`: max(0, x) for x =
/// floor(z / 2^sh) kept as a signed k-bit integer (the circuit's exact truncation).
pub fn relu_trunc(sh: u32, k: u32, z: u64) -> u64 {
    let x = bits_signed(low_bits(z, sh + k), sh, k);
    if (x as i64) < 0 {
        0
    } else {
        x
    }
}

/// Whether floor(z / 2^sh) falls outside the k-bit signed range a circuit keeps (the
/// oracle counts these: the circuit then computes on the value's low bits).
pub fn out_of_range(sh: u32, k: u32, z: u64) -> bool {
    let lim = 1i64 << (k - 1);
    let t = (z as i64) >> sh;
    t >= lim || t < -lim
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip() {
        for &v in &[0.0, 1.0, -1.0, 0.5, -2.5, 123.456, -1e-6] {
            let x = encode(v, 18);
            assert!((decode(x, 18) - v).abs() <= 0.5 / 262144.0 + 1e-12);
        }
        assert_eq!(encode(-1.0, 18), (-(1i64 << 18)) as u64);
    }

    #[test]
    fn truncation_bits_are_floor() {
        for &v in &[5i64, -5, 1 << 40, -(1 << 40) - 3, 0, -1] {
            let got = bits_signed(v as u64, 3, 40) as i64;
            assert_eq!(got, v.div_euclid(8));
        }
    }
}
