//! IKNP correlated OT with the garbler's Δ as correlation, base OTs from the
//! trusted dealer, and boolean-to-arithmetic conversion over it.
//!
//! Roles: S0 (GC evaluator) is the OT *receiver* [`CotReceiver`]; S1 (GC
//! garbler) is the OT *sender* [`CotSender`]. In IKNP the roles of the base
//! OTs are swapped: S0 gets both seeds of 128 pairs, S1 gets one seed of each
//! pair, selected by the bits of Δ.
//!
//! After `extend`, the receiver holds `t_j`, the sender `q_j`, with
//! `t_j = q_j ⊕ choice_j·Δ`. Both sides must call `extend` with the same
//! lengths in the same order: each call consumes fresh output of the 128
//! AES-CTR streams, which are never rewound. Each COT may be used for one
//! purpose only (a GC input label or one B2A bit), never both.

use aes::cipher::{generic_array::GenericArray, KeyIvInit, StreamCipher};
use aes::Aes128Enc;

use crate::corr::base_ots::{check_len, BaseOtForReceiver, BaseOtForSender, OtError, KAPPA};
use crate::corr::block::Block;
use crate::twopc::tccr::TccrHash;
use zeroize::Zeroize;

impl Drop for CotSender {
    fn drop(&mut self) {
        self.delta.0.zeroize();
    }
}

/// AES-128 in counter mode keyed by a seed (a 128-bit little-endian counter from zero); the
/// counter only moves forward.
pub struct CtrPrg(ctr::Ctr128LE<Aes128Enc>);

impl CtrPrg {
    pub fn new(seed: Block) -> Self {
        CtrPrg(ctr::Ctr128LE::new(
            &GenericArray::from(seed.to_bytes()),
            &GenericArray::default(),
        ))
    }

    /// The next `n` blocks of the stream.
    pub fn blocks(&mut self, n: usize) -> Vec<Block> {
        let mut bytes = vec![0u8; n * 16];
        self.fill(&mut bytes);
        bytes
            .chunks_exact(16)
            .map(|c| Block::from_bytes(c.try_into().expect("16 bytes")))
            .collect()
    }

    /// A new stream keyed by this stream's next block.
    fn fork(&mut self) -> Self {
        let mut seed = [0u8; 16];
        self.fill(&mut seed);
        CtrPrg::new(Block::from_bytes(seed))
    }

    /// Fills `out` with the next stream output.
    fn fill(&mut self, out: &mut [u8]) {
        out.fill(0);
        self.0.apply_keystream(out);
    }
}

/// OTs are extended in multiples of 128 (one bit-matrix column byte block).
fn padded(n: usize) -> usize {
    n.div_ceil(KAPPA) * KAPPA
}

/// Bytes of the receiver's message for `n` OTs.
pub fn extend_msg_len(n: usize) -> usize {
    padded(n) / 8 * KAPPA
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// 8×8 bit transpose of a u64 whose byte i is row i (bit j = column j):
/// bit 8i+j moves to 8j+i (Hacker's Delight, three swap rounds).
#[inline(always)]
fn transpose8(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^= t ^ (t << 28);
    x
}

/// Bytes per row handled at once (8192 OTs): 128 rows of it fit in L2.
const CHUNK_BYTES: usize = 1024;

/// Transposes a 128 × (8·cb) bit matrix given as 128 rows of `cb` bytes
/// (LSB-first) into `out` (8·cb blocks): bit i of block c = bit c of row i.
fn transpose_128(rows: &[u8], cb: usize, out: &mut [Block]) {
    assert_eq!(rows.len(), KAPPA * cb);
    // The SSE2 path writes through a raw pointer: this keeps it in bounds.
    assert_eq!(out.len(), 8 * cb);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { transpose_128_sse2(rows, cb, out) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    transpose_128_portable(rows, cb, out);
}

/// Movemask transpose. Column bytes are taken 16 at a time: 16 rows x 16 bytes are loaded
/// with one load per row and transposed as a 16x16 byte matrix in registers (four rounds
/// of the same byte interleave rotate the 8-bit element index by 4, i.e. swap row and
/// column); each `movemask` then yields 16 bits of one output column. Gathering the bytes
/// one by one instead stalls on store forwarding and was the hottest loop of the protocol.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn transpose_128_sse2(rows: &[u8], cb: usize, out: &mut [Block]) {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_setzero_si128, _mm_slli_epi64,
        _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };
    let full = cb / 16 * 16;
    // Block is repr(transparent) over u128 (little endian): u16 lane g = bits 16g..16g+16.
    let outp = out.as_mut_ptr() as *mut u16;
    for c0 in (0..full).step_by(16) {
        for g in 0..KAPPA / 16 {
            let mut r = [_mm_setzero_si128(); 16];
            for (i, ri) in r.iter_mut().enumerate() {
                let src = &rows[(g * 16 + i) * cb + c0..][..16];
                *ri = _mm_loadu_si128(src.as_ptr() as *const __m128i);
            }
            for _ in 0..4 {
                let mut t = [_mm_setzero_si128(); 16];
                for i in 0..8 {
                    t[2 * i] = _mm_unpacklo_epi8(r[i], r[i + 8]);
                    t[2 * i + 1] = _mm_unpackhi_epi8(r[i], r[i + 8]);
                }
                r = t;
            }
            // r[j] byte i = rows[g*16 + i][c0 + j].
            for (j, &rj) in r.iter().enumerate() {
                let mut v = rj;
                for b in (0..8).rev() {
                    let m = _mm_movemask_epi8(v) as u16;
                    let blk = (c0 + j) * 8 + b;
                    debug_assert!(blk < out.len());
                    // SAFETY: blk < out.len() (c0 + j < cb and out has 8*cb blocks), g < 8.
                    *outp.add(blk * 8 + g) = m;
                    v = _mm_slli_epi64(v, 1);
                }
            }
        }
    }
    for c in full..cb {
        let mut acc = [0u128; 8];
        for g in 0..KAPPA / 16 {
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = rows[(g * 16 + i) * cb + c];
            }
            let mut v = _mm_loadu_si128(bytes.as_ptr() as *const __m128i);
            for j in (0..8).rev() {
                let m = _mm_movemask_epi8(v) as u16 as u128;
                acc[j] |= m << (16 * g);
                v = _mm_slli_epi64(v, 1);
            }
        }
        for (j, a) in acc.into_iter().enumerate() {
            out[c * 8 + j] = Block(a);
        }
    }
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn transpose_128_portable(rows: &[u8], cb: usize, out: &mut [Block]) {
    for c in 0..cb {
        let mut acc = [0u128; 8];
        for rg in 0..KAPPA / 8 {
            let mut x = 0u64;
            for i in 0..8 {
                x |= (rows[(rg * 8 + i) * cb + c] as u64) << (8 * i);
            }
            let y = transpose8(x);
            for (j, a) in acc.iter_mut().enumerate() {
                *a |= (((y >> (8 * j)) & 0xff) as u128) << (8 * rg);
            }
        }
        for (j, a) in acc.into_iter().enumerate() {
            out[c * 8 + j] = Block(a);
        }
    }
}

/// IKNP receiver (S0): learns `t_j = q_j ⊕ choice_j·Δ`.
pub struct CotReceiver {
    prg0: Vec<CtrPrg>,
    prg1: Vec<CtrPrg>,
    next: u64,
}

impl CotReceiver {
    pub fn new(base: BaseOtForReceiver) -> Self {
        CotReceiver {
            prg0: base.seeds.iter().map(|s| CtrPrg::new(s.0)).collect(),
            prg1: base.seeds.iter().map(|s| CtrPrg::new(s.1)).collect(),
            next: 0,
        }
    }

    /// Global index of the next OT (counts padding); the sender's matches.
    /// Use it as the B2A tweak base of the following extension.
    pub fn next_ot_index(&self) -> u64 {
        self.next
    }

    /// A child instance on fresh PRG streams (seeded from this one's), for
    /// running extensions in parallel. The sender must fork at the same point
    /// in the call sequence. Index counters of parent and child overlap, so
    /// give the child's B2A calls a disjoint tweak range (e.g. add 2^62).
    pub fn fork(&mut self) -> Self {
        CotReceiver {
            prg0: self.prg0.iter_mut().map(CtrPrg::fork).collect(),
            prg1: self.prg1.iter_mut().map(CtrPrg::fork).collect(),
            next: 0,
        }
    }

    /// Returns the message for the sender (`extend_msg_len(n)` bytes) and
    /// the `t_j` for each choice.
    pub fn extend(&mut self, choices: &[bool]) -> (Vec<u8>, Vec<Block>) {
        let m = padded(choices.len());
        let cb = m / 8;
        let mut r = vec![0u8; cb];
        for (j, &c) in choices.iter().enumerate() {
            r[j / 8] |= (c as u8) << (j % 8);
        }
        let mut u = vec![0u8; KAPPA * cb];
        let mut rows = vec![Block::ZERO; m];
        // Work in column chunks so the 128 rows being transposed stay in
        // cache; each row's PRG stream is still consumed in order.
        let mut tbuf = vec![0u8; KAPPA * CHUNK_BYTES.min(cb)];
        for off in (0..cb).step_by(CHUNK_BYTES) {
            let w = CHUNK_BYTES.min(cb - off);
            for i in 0..KAPPA {
                let (ti, ui) = (&mut tbuf[i * w..][..w], &mut u[i * cb + off..][..w]);
                self.prg0[i].fill(ti);
                self.prg1[i].fill(ui);
                // u^i = G(k0_i) ⊕ G(k1_i) ⊕ r
                xor_into(ui, ti);
                xor_into(ui, &r[off..off + w]);
            }
            transpose_128(&tbuf[..KAPPA * w], w, &mut rows[off * 8..(off + w) * 8]);
        }
        self.next += m as u64;
        rows.truncate(choices.len());
        (u, rows)
    }
}

/// IKNP sender (S1): learns `q_j`; the receiver's `t_j = q_j ⊕ choice_j·Δ`.
pub struct CotSender {
    delta: Block,
    prg: Vec<CtrPrg>,
    next: u64,
}

impl CotSender {
    pub fn new(base: BaseOtForSender) -> Self {
        CotSender {
            delta: base.delta,
            prg: base.seeds.iter().map(|&s| CtrPrg::new(s)).collect(),
            next: 0,
        }
    }

    /// Mirrors [`CotReceiver::fork`].
    pub fn fork(&mut self) -> Self {
        CotSender {
            delta: self.delta,
            prg: self.prg.iter_mut().map(CtrPrg::fork).collect(),
            next: 0,
        }
    }

    /// The correlation Δ (also the garbler's free-XOR offset).
    pub fn delta(&self) -> Block {
        self.delta
    }

    /// See [`CotReceiver::next_ot_index`].
    pub fn next_ot_index(&self) -> u64 {
        self.next
    }

    /// Processes the receiver's message for `n` OTs. A wrong length is an
    /// error and leaves the PRG streams untouched.
    pub fn extend(&mut self, n: usize, msg: &[u8]) -> Result<Vec<Block>, OtError> {
        check_len("COT extension message", msg, extend_msg_len(n))?;
        let m = padded(n);
        let cb = m / 8;
        let mut rows = vec![Block::ZERO; m];
        let mut qbuf = vec![0u8; KAPPA * CHUNK_BYTES.min(cb)];
        for off in (0..cb).step_by(CHUNK_BYTES) {
            let w = CHUNK_BYTES.min(cb - off);
            for i in 0..KAPPA {
                let qi = &mut qbuf[i * w..][..w];
                self.prg[i].fill(qi);
                // q^i = G(k_{Δ_i}) ⊕ Δ_i·u^i = t^i ⊕ Δ_i·r
                if (self.delta.0 >> i) & 1 == 1 {
                    xor_into(qi, &msg[i * cb + off..][..w]);
                }
            }
            transpose_128(&qbuf[..KAPPA * w], w, &mut rows[off * 8..(off + w) * 8]);
        }
        self.next += m as u64;
        rows.truncate(n);
        Ok(rows)
    }
}

/// B2A hash tweaks have bit 127 set so they never meet a GC gate tweak.
#[inline(always)]
fn b2a_tweak(base: u64, i: usize) -> Block {
    Block((1u128 << 127) | (base as u128 + i as u128))
}

fn check_groups(groups: &[usize], bits: usize) {
    assert_eq!(
        groups.iter().sum::<usize>(),
        bits,
        "B2A groups must cover all bits"
    );
}

/// B2A, sender (S1) side. Bit `j` is `b_j = e_j ⊕ rho_j` (e_j the receiver's
/// COT choice); `q` are this extension's COT outputs, `tweak_base` the
/// sender's [`CotSender::next_ot_index`] taken just before that extension.
/// Returns the message (8 bytes per bit) and one share per group of
/// `Σ_{j∈group} w_j·b_j mod 2^64`.
///
/// # Panics
/// If local argument lengths disagree (a caller bug, not peer input).
pub fn b2a_sender(
    hash: &TccrHash,
    delta: Block,
    q: &[Block],
    rho: &[bool],
    weights: &[u64],
    groups: &[usize],
    tweak_base: u64,
) -> (Vec<u8>, Vec<u64>) {
    assert!(
        q.len() == rho.len() && q.len() == weights.len(),
        "B2A length mismatch"
    );
    check_groups(groups, q.len());
    let mut h0 = q.to_vec();
    hash.tccr_slice(&mut h0, |i| b2a_tweak(tweak_base, i));
    let mut h1: Vec<Block> = q.iter().map(|&x| x ^ delta).collect();
    hash.tccr_slice(&mut h1, |i| b2a_tweak(tweak_base, i));
    let mut msg = Vec::with_capacity(8 * q.len());
    let mut shares = Vec::with_capacity(groups.len());
    let mut j = 0;
    for &g in groups {
        let mut acc = 0u64;
        for _ in 0..g {
            let (m0, m1) = (h0[j].low_u64(), h1[j].low_u64());
            // f(e) = w·(e ⊕ rho)
            let f0 = if rho[j] { weights[j] } else { 0 };
            let f1 = weights[j].wrapping_sub(f0);
            let d = f1.wrapping_sub(f0).wrapping_sub(m1.wrapping_sub(m0));
            msg.extend_from_slice(&d.to_le_bytes());
            acc = acc.wrapping_add(f0.wrapping_sub(m0));
            j += 1;
        }
        shares.push(acc);
    }
    (msg, shares)
}

/// B2A, receiver (S0) side: `t` and `e` from the same COT extension as the
/// sender's `q`, same `groups` and `tweak_base`.
///
/// # Panics
/// If local argument lengths disagree (a caller bug, not peer input).
pub fn b2a_receiver(
    hash: &TccrHash,
    t: &[Block],
    e: &[bool],
    msg: &[u8],
    groups: &[usize],
    tweak_base: u64,
) -> Result<Vec<u64>, OtError> {
    assert_eq!(t.len(), e.len(), "B2A length mismatch");
    check_groups(groups, t.len());
    check_len("B2A message", msg, 8 * t.len())?;
    let mut h = t.to_vec();
    hash.tccr_slice(&mut h, |i| b2a_tweak(tweak_base, i));
    let mut shares = Vec::with_capacity(groups.len());
    let mut j = 0;
    for &g in groups {
        let mut acc = 0u64;
        for _ in 0..g {
            let d = u64::from_le_bytes(msg[8 * j..8 * j + 8].try_into().expect("8 bytes"));
            let v = h[j].low_u64().wrapping_add(if e[j] { d } else { 0 });
            acc = acc.wrapping_add(v);
            j += 1;
        }
        shares.push(acc);
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corr::base_ots::deal_base_ots;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    /// Known answer: IKNP extension of 300 choices from fixed base OTs. Pins the PRG
    /// expansion and the bit transposition; any change to them changes the digest.
    #[test]
    fn iknp_known_answer() {
        let (mut r, mut s, d) = pair(41);
        let choices: Vec<bool> = (0..300).map(|i| (i * 7) % 5 < 2).collect();
        let (msg, t) = r.extend(&choices);
        let q = s.extend(choices.len(), &msg).unwrap();
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(q[i] ^ t[i], d.select(*c), "correlation at {i}");
        }
        let mut all = msg.clone();
        for b in t.iter().chain(&q) {
            all.extend_from_slice(&b.to_bytes());
        }
        assert_eq!(
            blake3::hash(&all).to_hex().as_str(),
            "b9902ecb7206e751f8e34c551cce3fd3dc4b327bab51d08abd733be19243c5b9"
        );
    }

    fn pair(seed: u64) -> (CotReceiver, CotSender, Block) {
        let (r, s) = deal_base_ots(&mut ChaCha12Rng::seed_from_u64(seed));
        let d = s.delta;
        (CotReceiver::new(r), CotSender::new(s), d)
    }

    #[test]
    fn transpose_matches_naive() {
        let mut rng = ChaCha12Rng::seed_from_u64(30);
        for cb in [5, 16, 37, 1024] {
            let rows: Vec<u8> = (0..KAPPA * cb).map(|_| rng.gen()).collect();
            let mut out = vec![Block::ZERO; 8 * cb];
            transpose_128(&rows, cb, &mut out);
            let mut portable = vec![Block::ZERO; 8 * cb];
            transpose_128_portable(&rows, cb, &mut portable);
            assert_eq!(out, portable);
            for c in 0..8 * cb {
                for i in 0..KAPPA {
                    let bit = (rows[i * cb + c / 8] >> (c % 8)) & 1 == 1;
                    assert_eq!((out[c].0 >> i) & 1 == 1, bit, "c={c} i={i}");
                }
            }
        }
    }

    #[test]
    fn cot_correct_over_successive_extensions() {
        let (mut r, mut s, delta) = pair(31);
        assert!(delta.lsb());
        let mut rng = ChaCha12Rng::seed_from_u64(32);
        let mut seen = std::collections::HashSet::new();
        for n in [0usize, 1, 127, 128, 129, 1000, 20_000, 5000] {
            assert_eq!(r.next_ot_index(), s.next_ot_index());
            let choices: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
            let (msg, t) = r.extend(&choices);
            assert_eq!(msg.len(), extend_msg_len(n));
            let q = s.extend(n, &msg).unwrap();
            assert_eq!((t.len(), q.len()), (n, n));
            for j in 0..n {
                assert_eq!(t[j], q[j] ^ delta.select(choices[j]));
                // Fresh PRG output every time: no q ever repeats.
                assert!(seen.insert(q[j]));
            }
        }
    }

    #[test]
    fn forked_instances_stay_correlated() {
        let (mut r, mut s, delta) = pair(37);
        let (mut r2, mut s2) = (r.fork(), s.fork());
        let c: Vec<bool> = (0..300).map(|i| i % 5 < 2).collect();
        let (m1, t1) = r.extend(&c);
        let (m2, t2) = r2.extend(&c);
        let (q1, q2) = (s.extend(300, &m1).unwrap(), s2.extend(300, &m2).unwrap());
        for j in 0..300 {
            assert_eq!(t1[j], q1[j] ^ delta.select(c[j]));
            assert_eq!(t2[j], q2[j] ^ delta.select(c[j]));
            assert_ne!(q1[j], q2[j]);
        }
    }

    #[test]
    fn malformed_extension_is_error() {
        let (mut r, mut s, _) = pair(33);
        let (msg, _) = r.extend(&[true; 10]);
        assert!(s.extend(10, &msg[..msg.len() - 1]).is_err());
        assert!(s.extend(200, &msg).is_err());
        // The failed calls consumed nothing: the good one still matches.
        assert!(s.extend(10, &msg).is_ok());
        let h = TccrHash::for_job(Block(33));
        assert!(b2a_receiver(&h, &[Block::ZERO], &[true], &[0u8; 7], &[1], 0).is_err());
    }

    /// Dropping S1's base OTs wipes Δ and the seeds (read in place after the drop: plain
    /// bytes, not freed memory).
    #[test]
    fn base_ots_are_wiped_on_drop() {
        let (_, s) = deal_base_ots(&mut ChaCha12Rng::seed_from_u64(5));
        assert_ne!(s.delta, Block::ZERO);
        let mut s = std::mem::ManuallyDrop::new(s);
        unsafe { std::mem::ManuallyDrop::drop(&mut s) };
        assert_eq!(s.delta, Block::ZERO);
        assert!(s.seeds.iter().all(|b| *b == Block::ZERO));
    }

    #[test]
    fn base_ot_bytes_roundtrip() {
        let (r, s) = deal_base_ots(&mut ChaCha12Rng::seed_from_u64(34));
        let r2 = BaseOtForReceiver::from_bytes(&r.to_bytes()).unwrap();
        let s2 = BaseOtForSender::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(r2.seeds, r.seeds);
        assert_eq!((s2.delta, s2.seeds), (s.delta, s.seeds));
        for i in 0..KAPPA {
            let want = if (s.delta.0 >> i) & 1 == 1 {
                r.seeds[i].1
            } else {
                r.seeds[i].0
            };
            assert_eq!(s.seeds[i], want);
        }
        assert!(BaseOtForSender::from_bytes(&s.to_bytes()[1..]).is_err());
        let mut bad = s.to_bytes();
        bad[0] &= !1;
        assert!(BaseOtForSender::from_bytes(&bad).is_err());
    }

    #[test]
    fn b2a_reconstructs() {
        let (mut r, mut s, delta) = pair(35);
        let h = TccrHash::for_job(Block(35));
        let mut rng = ChaCha12Rng::seed_from_u64(36);
        for round in 0..3 {
            // Groups: an unsigned 14-bit value, single bits, a signed 21-bit value.
            let mut weights = Vec::new();
            let mut groups = Vec::new();
            for _ in 0..20 {
                weights.extend((0..14).map(|j| 1u64 << j));
                weights.extend([1, 1]);
                weights.extend((0..21).map(|j| {
                    if j == 20 {
                        (1u64 << 20).wrapping_neg()
                    } else {
                        1 << j
                    }
                }));
                groups.extend([14, 1, 1, 21]);
            }
            let n = weights.len();
            let b: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
            let rho: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
            let e: Vec<bool> = b.iter().zip(&rho).map(|(x, y)| x ^ y).collect();
            let tweak = r.next_ot_index();
            let (msg, t) = r.extend(&e);
            let q = s.extend(n, &msg).unwrap();
            let (bmsg, ss) = b2a_sender(&h, delta, &q, &rho, &weights, &groups, tweak);
            let rs = b2a_receiver(&h, &t, &e, &bmsg, &groups, tweak).unwrap();
            let mut j = 0;
            for (gi, &g) in groups.iter().enumerate() {
                let want = (j..j + g).fold(0u64, |a, i| a.wrapping_add(weights[i] * b[i] as u64));
                assert_eq!(
                    ss[gi].wrapping_add(rs[gi]),
                    want,
                    "round {round} group {gi}"
                );
                j += g;
            }
            // Signed group decodes to a signed value.
            let v = ss[3].wrapping_add(rs[3]) as i64;
            assert!((-(1 << 20)..(1 << 20)).contains(&v));
        }
    }
}
