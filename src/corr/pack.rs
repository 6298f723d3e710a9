//! Values of Z_2^l packed l bits each, little-endian (value i's bit j is bit i*l + j of the
//! byte string, bytes little-endian): how a CNN or graph job opens its masked maps when
//! their readers need them only mod 2^l (docs/protocol.md, "Ring width"). The dealer's
//! explicit values are still 64-bit; they are planned to use it. At l = 64 the bytes are
//! the plain little-endian u64s.

/// Bytes of `n` values of `bits` bits each.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Mask of the low `bits` bits (1 <= bits <= 64).
pub fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The low `bits` bits of each value, packed; the high bits are not read.
pub fn pack(v: &[u64], bits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed_len(v.len(), bits) + 8);
    pack_into(v, bits, &mut out);
    out
}

/// [`pack`] appended to `out`.
pub fn pack_into(v: &[u64], bits: u32, out: &mut Vec<u8>) {
    assert!((1..=64).contains(&bits), "pack: {bits} bits");
    let end = out.len() + packed_len(v.len(), bits);
    let m = low_mask(bits);
    // Bits not yet written, low first: at most 63 + 64 of them.
    let (mut acc, mut held) = (0u128, 0u32);
    for &x in v {
        acc |= ((x & m) as u128) << held;
        held += bits;
        if held >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            held -= 64;
        }
    }
    out.extend_from_slice(&(acc as u64).to_le_bytes()[..held.div_ceil(8) as usize]);
    debug_assert_eq!(out.len(), end);
}

/// `n` values of `bits` bits from `b`, which must be exactly [`packed_len`] bytes with the
/// last byte's unused bits zero; `Err` says what is wrong.
pub fn unpack(b: &[u8], n: usize, bits: u32) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(n);
    unpack_into(b, n, bits, &mut out)?;
    Ok(out)
}

/// [`unpack`] appended to `out`.
pub fn unpack_into(b: &[u8], n: usize, bits: u32, out: &mut Vec<u64>) -> Result<(), String> {
    if !(1..=64).contains(&bits) {
        return Err(format!("values of {bits} bits"));
    }
    let want = packed_len(n, bits);
    if b.len() != want {
        return Err(format!(
            "{} bytes where {want} hold {n} values of {bits} bits",
            b.len()
        ));
    }
    let tail = (n * bits as usize) % 8;
    if tail != 0 && b[want - 1] >> tail != 0 {
        return Err("the padding bits after the last value are not zero".into());
    }
    let m = low_mask(bits);
    out.reserve(n);
    let mut words = b.chunks_exact(8);
    let (mut acc, mut held) = (0u128, 0u32);
    for _ in 0..n {
        if held < bits {
            let w = match words.next() {
                Some(c) => u64::from_le_bytes(c.try_into().expect("8 bytes")),
                None => {
                    let r = words.remainder();
                    let mut c = [0u8; 8];
                    c[..r.len()].copy_from_slice(r);
                    u64::from_le_bytes(c)
                }
            };
            acc |= (w as u128) << held;
            held += 64;
        }
        out.push(acc as u64 & m);
        acc >>= bits;
        held -= bits;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<u64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect()
    }

    /// Every width, lengths around the byte and word boundaries: what comes back is each
    /// value's low bits, in order, from exactly packed_len bytes.
    #[test]
    fn packing_round_trips_the_low_bits_at_every_width() {
        for bits in 1..=64u32 {
            for n in [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 127, 129, 1000] {
                let v = values(n, (bits as u64) << 20 | n as u64);
                let b = pack(&v, bits);
                assert_eq!(b.len(), packed_len(n, bits), "{bits} bits, {n} values");
                let back = unpack(&b, n, bits).unwrap();
                let want: Vec<u64> = v.iter().map(|x| x & low_mask(bits)).collect();
                assert_eq!(back, want, "{bits} bits, {n} values");
            }
        }
    }

    /// At 64 bits the packing is the plain little-endian u64s (what openings sent before).
    #[test]
    fn sixty_four_bits_are_the_little_endian_words() {
        let v = values(33, 9);
        let plain: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(pack(&v, 64), plain);
    }

    /// The layout is fixed (value i's bit j at bit i*l + j): a format, not an accident.
    #[test]
    fn the_layout_is_value_after_value_low_bit_first() {
        assert_eq!(pack(&[0b101, 0b011, 0b111], 3), vec![0b1101_1101, 0b1]);
        assert_eq!(pack(&[u64::MAX, 0], 12), vec![0xff, 0x0f, 0x00]);
    }

    #[test]
    fn wrong_lengths_and_dirty_padding_are_refused() {
        let b = pack(&values(5, 3), 13);
        assert!(unpack(&b[..b.len() - 1], 5, 13)
            .unwrap_err()
            .contains("where 9 hold 5 values of 13 bits"));
        let mut longer = b.clone();
        longer.push(0);
        assert!(unpack(&longer, 5, 13).is_err());
        let mut dirty = b.clone();
        *dirty.last_mut().unwrap() |= 0x80;
        assert!(unpack(&dirty, 5, 13).unwrap_err().contains("padding"));
        assert!(unpack(&b, 5, 0).is_err() && unpack(&b, 5, 65).is_err());
    }
}
