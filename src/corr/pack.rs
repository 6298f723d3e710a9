//! Values of Z_2^l packed l bits each, little-endian (value i's bit j is bit i*l + j of the
//! byte string, bytes little-endian): how a CNN or graph job opens its masked maps when
//! their readers need them only mod 2^l (docs/protocol.md, "Ring width"), and how party
//! 1's dealer file holds its explicit values, each at the width its reader needs
//! ([`Packed`]: runs of different widths one after another, no padding between them). At
//! l = 64 the bytes are the plain little-endian u64s.

use serde::{Deserialize, Serialize};

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

/// Where a dealer hands party 1's explicit values, a run at a time, with the width (in bits)
/// at which they are kept.
pub type Emit<'a, E> = dyn FnMut(&[u64], u32) -> Result<(), E> + 'a;

/// Appends values of any widths to a byte string bit after bit (value after value, low bit
/// first): whole bytes are handed out as they fill, the last partial one by [`finish`].
///
/// [`finish`]: BitWriter::finish
#[derive(Clone, Debug, Default)]
pub struct BitWriter {
    acc: u128,
    held: u32,
    bits: u64,
}

impl BitWriter {
    /// The low `width` bits of each value of `v`; the complete bytes go to `out`.
    pub fn push(&mut self, v: &[u64], width: u32, out: &mut Vec<u8>) {
        assert!((1..=64).contains(&width), "pack: {width} bits");
        let m = low_mask(width);
        out.reserve((v.len() * width as usize).div_ceil(8) + 8);
        for &x in v {
            self.acc |= ((x & m) as u128) << self.held;
            self.held += width;
            if self.held >= 64 {
                out.extend_from_slice(&(self.acc as u64).to_le_bytes());
                self.acc >>= 64;
                self.held -= 64;
            }
        }
        while self.held >= 8 {
            out.push(self.acc as u8);
            self.acc >>= 8;
            self.held -= 8;
        }
        self.bits += (v.len() * width as usize) as u64;
    }

    /// Bits pushed so far.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// The last partial byte, its unused high bits zero (nothing when the bits fill whole
    /// bytes).
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.held > 0 {
            out.push(self.acc as u8);
        }
    }
}

/// Reads values of any widths back from what a [`BitWriter`] wrote, a run at a time; it
/// holds the unread bits (fewer than 8) of the last byte it was given.
#[derive(Clone, Copy, Debug, Default)]
pub struct BitReader {
    carry: u64,
    held: u32,
}

impl BitReader {
    /// Bytes [`Self::take`] needs for `n` values of `width` bits.
    pub fn bytes_for(&self, n: usize, width: u32) -> usize {
        (n * width as usize)
            .saturating_sub(self.held as usize)
            .div_ceil(8)
    }

    /// `n` values of `width` bits from the held bits and then `b`, which must be exactly
    /// [`Self::bytes_for`] bytes; each value's bits above `width` are zero.
    pub fn take(&mut self, b: &[u8], n: usize, width: u32, out: &mut Vec<u64>) {
        assert!((1..=64).contains(&width), "unpack: {width} bits");
        assert_eq!(b.len(), self.bytes_for(n, width), "bytes for {n} values");
        let m = low_mask(width);
        let (mut acc, mut held) = (self.carry as u128, self.held);
        let mut words = b.chunks(8);
        out.reserve(n);
        for _ in 0..n {
            while held < width {
                let c = words.next().expect("bytes_for counted them");
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                acc |= (u64::from_le_bytes(w) as u128) << held;
                held += 8 * c.len() as u32;
            }
            out.push(acc as u64 & m);
            acc >>= width;
            held -= width;
        }
        debug_assert!(held < 8 && words.next().is_none());
        (self.carry, self.held) = (acc as u64, held);
    }
}

/// The size of explicit values packed at their widths: how many, and their bits (a dealer
/// file's count, checked exactly by the servers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub values: usize,
    pub bits: u64,
}

impl Tally {
    /// `n` values of `width` bits.
    pub fn of(n: usize, width: u32) -> Tally {
        Tally {
            values: n,
            bits: n as u64 * width as u64,
        }
    }
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            values: self.values + o.values,
            bits: self.bits + o.bits,
        }
    }
}

impl std::iter::Sum for Tally {
    fn sum<I: Iterator<Item = Tally>>(it: I) -> Tally {
        it.fold(Tally::default(), |a, b| a + b)
    }
}

/// Values of varying widths one after another as [`BitWriter`] packs them, with their
/// number of bits: party 1's explicit dealer values in memory, encoded (bincode) as the
/// bit count, then the bytes' count and the bytes, the last byte's unused bits zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PackedFields")]
pub struct Packed {
    bits: u64,
    bytes: Vec<u8>,
}

/// [`Packed`] as decoded, before its byte count and padding are checked.
#[derive(Deserialize)]
struct PackedFields {
    bits: u64,
    bytes: Vec<u8>,
}

impl TryFrom<PackedFields> for Packed {
    type Error = String;
    fn try_from(f: PackedFields) -> Result<Packed, String> {
        let p = Packed {
            bits: f.bits,
            bytes: f.bytes,
        };
        p.check().map_err(|e| format!("packed values: {e}"))?;
        Ok(p)
    }
}

impl Packed {
    /// The low `width` bits of each value of `v`, appended.
    pub fn push(&mut self, v: &[u64], width: u32) {
        // Resume from the partial last byte.
        let held = (self.bits % 8) as u32;
        let mut w = BitWriter::default();
        if held > 0 {
            let last = self.bytes.pop().expect("a partial byte");
            w = BitWriter {
                acc: last as u128,
                held,
                bits: 0,
            };
        }
        w.push(v, width, &mut self.bytes);
        self.bits += w.bits();
        w.finish(&mut self.bytes);
    }

    /// Number of bits held.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Keeps the first `bits` bits (fewer than held), zeroing the unused bits of the last
    /// byte (tests that shorten a dealer file).
    pub fn truncate(&mut self, bits: u64) {
        assert!(bits <= self.bits);
        self.bits = bits;
        self.bytes.truncate(bits.div_ceil(8) as usize);
        if !bits.is_multiple_of(8) {
            *self.bytes.last_mut().expect("a partial byte") &= (1u8 << (bits % 8)) - 1;
        }
    }

    /// Whether the byte count fits the bit count and the last byte's unused bits are zero.
    pub fn check(&self) -> Result<(), String> {
        check_region(
            self.bits,
            self.bytes.len() as u64,
            self.bytes.last().copied(),
        )
    }
}

/// Whether `len` bytes ending in `last` hold exactly `bits` bits, the unused ones zero.
pub fn check_region(bits: u64, len: u64, last: Option<u8>) -> Result<(), String> {
    if bits.div_ceil(8) != len {
        return Err(format!(
            "{len} bytes where {bits} bits take {}",
            bits.div_ceil(8)
        ));
    }
    match (bits % 8, last) {
        (r, Some(b)) if r != 0 && b >> r != 0 => {
            Err("the padding bits after the last value are not zero".into())
        }
        _ => Ok(()),
    }
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

    /// Runs of different widths packed one after another come back run by run, whatever
    /// the runs' lengths and widths, and [`Packed::push`] (resuming from a partial byte)
    /// gives the streaming writer's bytes.
    #[test]
    fn runs_of_mixed_widths_round_trip() {
        let runs: Vec<(usize, u32)> = vec![
            (3, 64),
            (5, 17),
            (1, 1),
            (0, 9),
            (70, 34),
            (9, 64),
            (13, 5),
            (1, 63),
            (200, 31),
        ];
        let mut w = BitWriter::default();
        let (mut streamed, mut packed) = (Vec::new(), Packed::default());
        let all: Vec<Vec<u64>> = runs
            .iter()
            .enumerate()
            .map(|(i, &(n, _))| values(n, 77 + i as u64))
            .collect();
        for (v, &(_, width)) in all.iter().zip(&runs) {
            w.push(v, width, &mut streamed);
            packed.push(v, width);
        }
        let bits = w.bits();
        w.finish(&mut streamed);
        assert_eq!(packed.bits(), bits);
        assert_eq!(packed.bytes(), &streamed[..]);
        packed.check().unwrap();
        let mut r = BitReader::default();
        let mut at = 0;
        for (v, &(n, width)) in all.iter().zip(&runs) {
            let k = r.bytes_for(n, width);
            let mut got = Vec::new();
            r.take(&streamed[at..at + k], n, width, &mut got);
            at += k;
            let want: Vec<u64> = v.iter().map(|x| x & low_mask(width)).collect();
            assert_eq!(got, want, "{n} values of {width} bits");
        }
        assert_eq!(at, streamed.len());
        let mut short = packed.clone();
        short.truncate(bits - 3);
        short.check().unwrap();
        assert!(check_region(bits, streamed.len() as u64 + 1, None).is_err());
        assert_ne!(bits % 8, 0, "the runs end inside a byte");
        let mut dirty = packed.clone();
        *dirty.bytes.last_mut().unwrap() |= 0x80;
        assert!(dirty.check().unwrap_err().contains("padding"));
    }
}
