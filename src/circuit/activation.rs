//! The garbled parts of the activation layers, each with the exact integer
//! function it computes (`*_ref`), which the plaintext oracle must match.
//!
//! Both circuits take the two parties' `u64` shares reduced mod 2^n as
//! little-endian bits (garbler's `g`, evaluator's `e`), add them inside the
//! circuit and drop the low `sh` bits by rewiring, which is an exact
//! `floor(V / 2^sh)` of the shared value (no probabilistic truncation).

use serde::{Deserialize, Serialize};

use super::builder::{AndCounter, Build, Circuit};
use super::gadgets::{add_mod, carries, le_const, xor_all};

/// Public constants of one hidden layer's activation circuit and polynomial (a plan computes
/// them from its fixed-point settings: `ring::plan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActConsts {
    /// Bits dropped by the exact truncation inside the circuit.
    pub sh: u32,
    /// Width of the truncated signed pre-activation.
    pub k: u32,
    pub a_fix: u64,
    pub b_fix: u64,
    /// Coefficients: p_i = N_i tc^2 + C_i tc + D_i, saturation value K, all at scale F.
    pub n: [u64; 2],
    pub c: [u64; 2],
    pub d: [u64; 2],
    pub sat: u64,
}

impl ActConsts {
    /// Bit length of b_fix: the width of the clipped |x| the circuit outputs.
    pub fn tc_bits(&self) -> u32 {
        64 - self.b_fix.leading_zeros()
    }
}

/// Parameters of the tanh* piece selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActParams {
    /// Bits dropped from the bottom of the sum (fixed-point rescale).
    pub sh: u32,
    /// Width of the signed value x kept after the shift.
    pub k: u32,
    /// First breakpoint, in units of x.
    pub a_fix: u64,
    /// Second breakpoint, in units of x; `b_fix < 2^(k-1)`.
    pub b_fix: u64,
}

/// Invalid circuit parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid activation parameters: {0}")]
pub struct ParamError(String);

impl ActParams {
    /// Input width `n = sh + k` per party.
    pub fn n(&self) -> usize {
        (self.sh + self.k) as usize
    }

    /// `L`: bit length of `b_fix`, the width of the `tc` output.
    pub fn l(&self) -> usize {
        (64 - self.b_fix.leading_zeros()) as usize
    }

    /// Number of output bits: `L + 5`.
    pub fn out_len(&self) -> usize {
        self.l() + 5
    }

    pub fn validate(&self) -> Result<(), ParamError> {
        if self.k < 2 {
            return Err(ParamError(format!("k = {} < 2", self.k)));
        }
        // Checked: the fields may come from a file's header, and a wrapped sum would pass.
        if self.sh.checked_add(self.k).is_none_or(|n| n > 64) {
            return Err(ParamError(format!(
                "sh + k > 64 (sh = {}, k = {})",
                self.sh, self.k
            )));
        }
        if self.b_fix >= 1u64 << (self.k - 1) {
            return Err(ParamError(format!(
                "b_fix = {} does not fit in k - 1 = {} bits",
                self.b_fix,
                self.k - 1
            )));
        }
        Ok(())
    }

    /// B2A layout of the outputs: per-bit weights and group sizes, giving
    /// one arithmetic value per group in the order `tc, r1, r2, s1, s2, sgn`
    /// (`tc` as an unsigned integer, the rest as 0/1).
    pub fn b2a_layout(&self) -> (Vec<u64>, Vec<usize>) {
        let l = self.l();
        let mut w: Vec<u64> = (0..l).map(|j| 1u64 << j).collect();
        w.extend([1; 5]);
        let mut groups = vec![l];
        groups.extend([1; 5]);
        (w, groups)
    }
}

/// Output of [`tanh_select_ref`]: `(tc, r1, r2, s1, s2, sgn)`.
pub type TanhSelect = (u64, bool, bool, bool, bool, bool);

fn mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// x = bits [sh, n) of `g + e mod 2^n`, as an unsigned k-bit pattern.
fn shifted(sh: u32, k: u32, g: u64, e: u64) -> u64 {
    (g.wrapping_add(e) & mask(sh + k)) >> sh
}

/// The integer function that [`tanh_select`] computes.
///
/// # Panics
/// If `p` is invalid (see [`ActParams::validate`]).
pub fn tanh_select_ref(p: &ActParams, g: u64, e: u64) -> TanhSelect {
    p.validate().expect("valid ActParams");
    let x = shifted(p.sh, p.k, g, e);
    let sgn = (x >> (p.k - 1)) & 1 == 1;
    // One's-complement magnitude: x for x ≥ 0, -x-1 for x < 0.
    let t = (x ^ if sgn { u64::MAX } else { 0 }) & mask(p.k - 1);
    let r1 = t <= p.a_fix;
    let r2full = t <= p.b_fix;
    let r2 = r2full && !r1;
    // tc is t's low L bits: outside [0, b] the selectors g1 = g2 = 0 make its value
    // irrelevant, so no clipping is needed.
    let tc = t & mask(p.l() as u32);
    (tc, r1, r2, r1 && sgn, r2 && sgn, sgn)
}

/// Reads the circuit's output bits (e.g. reconstructed from shares).
pub fn decode_tanh_select(p: &ActParams, bits: &[bool]) -> Option<TanhSelect> {
    let l = p.l();
    if bits.len() != l + 5 {
        return None;
    }
    let tc = bits[..l]
        .iter()
        .enumerate()
        .fold(0u64, |a, (i, &b)| a | ((b as u64) << i));
    let f = &bits[l..];
    Some((tc, f[0], f[1], f[2], f[3], f[4]))
}

/// tanh* piece selection. `g`, `e`: `n` bits each. Outputs, in order:
/// `tc[0..L)`, `r1`, `r2`, `s1 = r1∧sgn`, `s2 = r2∧sgn`, `sgn`.
///
/// # Panics
/// If `p` is invalid or the inputs are not `n` bits wide.
pub fn tanh_select<C: Circuit>(
    c: &mut C,
    p: &ActParams,
    g: &[C::Wire],
    e: &[C::Wire],
) -> Vec<C::Wire> {
    p.validate().expect("valid ActParams");
    let (n, sh, k) = (p.n(), p.sh as usize, p.k as usize);
    assert!(
        g.len() == n && e.len() == n,
        "tanh_select inputs must be n bits"
    );
    let v = add_mod(c, g, e);
    let x = &v[sh..n];
    let sgn = x[k - 1].clone();
    let t = xor_all(c, &x[..k - 1], &sgn);
    let l = p.l();
    // Both comparisons share the test that t's bits above L are all zero.
    let mut high_zero = c.constant(true);
    for (i, ti) in t[l..].iter().enumerate() {
        let nt = c.not(ti);
        high_zero = if i == 0 { nt } else { c.and(&high_zero, &nt) };
    }
    let lo_b = le_const(c, &t[..l], p.b_fix);
    let high = t.len() > l;
    let r2full = if high { c.and(&high_zero, &lo_b) } else { lo_b };
    let r1 = if p.a_fix >> l != 0 {
        // a beyond L bits (never with the paper's constants): compare the whole of t.
        le_const(c, &t, p.a_fix)
    } else {
        let lo_a = le_const(c, &t[..l], p.a_fix);
        if high {
            c.and(&high_zero, &lo_a)
        } else {
            lo_a
        }
    };
    // With a ≤ b, r1 implies r2full, so r2full ∧ ¬r1 = r2full ⊕ r1 (free).
    let r2 = if p.a_fix <= p.b_fix {
        c.xor(&r2full, &r1)
    } else {
        let nr1 = c.not(&r1);
        c.and(&r2full, &nr1)
    };
    // tc = t's low L bits (free); see tanh_select_ref.
    let mut out: Vec<C::Wire> = t[..l].to_vec();
    let s1 = c.and(&r1, &sgn);
    let s2 = c.and(&r2, &sgn);
    out.extend([r1, r2, s1, s2, sgn]);
    out
}

/// Parameters of the exact truncation inside the ReLU circuit: x = floor(V / 2^sh) as a
/// signed k-bit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TruncParams {
    pub sh: u32,
    pub k: u32,
}

impl TruncParams {
    pub fn n(&self) -> usize {
        (self.sh + self.k) as usize
    }

    pub fn validate(&self) -> Result<(), ParamError> {
        if self.k < 1 || self.sh.checked_add(self.k).is_none_or(|n| n > 64) {
            return Err(ParamError(format!(
                "need 1 <= k and sh + k <= 64, got sh = {}, k = {}",
                self.sh, self.k
            )));
        }
        Ok(())
    }
}

/// The integer function of [`trunc_out`]: the k-bit pattern of x.
///
/// # Panics
/// If `p` is invalid.
pub fn trunc_out_ref(p: &TruncParams, g: u64, e: u64) -> u64 {
    p.validate().expect("valid TruncParams");
    shifted(p.sh, p.k, g, e)
}

/// The exact truncation the ReLU circuit is built on: the k bits of x = bits [sh, n) of g + e.
///
/// # Panics
/// If `p` is invalid or the inputs are not `n` bits wide.
pub fn trunc_out<C: Circuit>(
    c: &mut C,
    p: &TruncParams,
    g: &[C::Wire],
    e: &[C::Wire],
) -> Vec<C::Wire> {
    p.validate().expect("valid TruncParams");
    let n = p.n();
    assert!(
        g.len() == n && e.len() == n,
        "trunc_out inputs must be n bits"
    );
    let mut v = add_mod(c, g, e);
    v.drain(..p.sh as usize);
    v
}

impl TruncParams {
    /// What party 1 subtracts from its arithmetic share of [`rescale_out`]'s output: the
    /// offset 2^(k-1) that made the signed x an unsigned k-bit value.
    pub fn offset(&self) -> u64 {
        1u64 << (self.k - 1)
    }

    /// Party 1's arithmetic shares of [`rescale_out`]'s output made shares of the signed x:
    /// it takes the offset off (every engine, after its B2A); party 0's shares stay as they
    /// are, so only party 1 calls this (the circuits sit below `ring::Party`).
    pub fn take_offset(&self, shares: &mut [u64]) {
        shares
            .iter_mut()
            .for_each(|x| *x = x.wrapping_sub(self.offset()));
    }
}

/// The integer function of [`rescale_out`]: x + 2^(k-1), the offset-binary k-bit pattern of
/// the signed x of [`trunc_out_ref`] (x's sign bit flipped).
///
/// # Panics
/// If `p` is invalid.
pub fn rescale_out_ref(p: &TruncParams, g: u64, e: u64) -> u64 {
    p.validate().expect("valid TruncParams");
    shifted(p.sh, p.k, g, e) ^ p.offset()
}

/// The exact rescaling (a graph's `Trunc`, docs/graph.md): x = floor(V / 2^sh) as k bits with
/// the sign bit flipped, so that converting the bits with weights 2^j (B2A) gives shares of
/// x + 2^(k-1) in [0, 2^k); party 1 then subtracts 2^(k-1) ([`TruncParams::offset`]) and the
/// shares add up to the signed x in the ring. The flip is a NOT: no AND gate beyond the adder.
///
/// # Panics
/// If `p` is invalid or the inputs are not `n` bits wide.
pub fn rescale_out<C: Circuit>(
    c: &mut C,
    p: &TruncParams,
    g: &[C::Wire],
    e: &[C::Wire],
) -> Vec<C::Wire> {
    let mut x = trunc_out(c, p, g, e);
    let sign = x.pop().expect("k >= 1 bits");
    let flipped = c.not(&sign);
    x.push(flipped);
    x
}

/// The integer function of [`relu_out`]: max(0, x) for the signed k-bit x of
/// [`trunc_out_ref`], as an unsigned (k - 1)-bit value.
///
/// # Panics
/// If `p` is invalid or k < 2.
pub fn relu_out_ref(p: &TruncParams, g: u64, e: u64) -> u64 {
    p.validate().expect("valid TruncParams");
    assert!(p.k >= 2, "ReLU needs a sign bit and a value bit");
    let x = shifted(p.sh, p.k, g, e);
    if (x >> (p.k - 1)) & 1 == 1 {
        0
    } else {
        x
    }
}

/// ReLU of the exact truncation (a CNN's hidden layers): the k - 1 value bits of
/// x = bits [sh, n) of g + e, each ANDed with the complement of x's sign bit. k - 1 AND
/// gates on top of the adder.
///
/// # Panics
/// If `p` is invalid, k < 2, or the inputs are not `n` bits wide.
pub fn relu_out<C: Circuit>(
    c: &mut C,
    p: &TruncParams,
    g: &[C::Wire],
    e: &[C::Wire],
) -> Vec<C::Wire> {
    let mut x = trunc_out(c, p, g, e);
    assert!(p.k >= 2, "ReLU needs a sign bit and a value bit");
    let sign = x.pop().expect("k >= 2 bits");
    let positive = c.not(&sign);
    x.iter().map(|b| c.and(b, &positive)).collect()
}

/// The integer function of [`relu_sign_out`]: the carry into bit sh of g + e (when
/// sh > 0), then x's sign.
///
/// # Panics
/// If `p` is invalid or k < 2.
pub fn relu_sign_ref(p: &TruncParams, g: u64, e: u64) -> Vec<bool> {
    p.validate().expect("valid TruncParams");
    assert!(p.k >= 2, "ReLU needs a sign bit and a value bit");
    let sign = (shifted(p.sh, p.k, g, e) >> (p.k - 1)) & 1 == 1;
    let low = mask(p.sh);
    let carry = (g & low) + (e & low) > low;
    let mut out = Vec::with_capacity(2);
    if p.sh > 0 {
        out.push(carry);
    }
    out.push(sign);
    out
}

/// The boolean part of the boolean engine's ReLU (docs/protocol.md, "The ReLU by
/// selection"): of V = g + e mod 2^n, the carry into bit sh (when sh > 0), then the sign of
/// x = bits [sh, n) of V. The engine finishes in the ring: max(0, x) =
/// ((g >> sh) + (e >> sh) + carry) (1 - sign) mod 2^k, each party's own share shifted
/// locally, the carry opened under its daBit in the chain's round after it is made. n - 1
/// AND gates for the carries; none of the k - 1 selections and none of a conversion adder of
/// [`relu_out`].
///
/// # Panics
/// If `p` is invalid, k < 2, or the inputs are not `n` bits wide.
pub fn relu_sign_out<C: Circuit>(
    c: &mut C,
    p: &TruncParams,
    g: &[C::Wire],
    e: &[C::Wire],
) -> Vec<C::Wire> {
    p.validate().expect("valid TruncParams");
    assert!(p.k >= 2, "ReLU needs a sign bit and a value bit");
    let n = p.n();
    assert!(
        g.len() == n && e.len() == n,
        "relu_sign_out inputs must be n bits"
    );
    let carry = carries(c, g, e, n - 1);
    let top = c.xor(&g[n - 1], &e[n - 1]);
    let sign = c.xor(&top, &carry[n - 2]);
    let mut out = Vec::with_capacity(2);
    if p.sh > 0 {
        out.push(carry[p.sh as usize - 1].clone());
    }
    out.push(sign);
    out
}

/// One of the activation circuits, for running batches of elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActCircuit {
    TanhSelect(ActParams),
    /// max(0, exact truncation): a CNN hidden layer's activation; with sh = 0, the
    /// comparison of max(a, b) = a + max(0, b - a) (a graph's max pooling and clip).
    Relu(TruncParams),
    /// The exact truncation alone, as arithmetic shares of the signed x ([`rescale_out`]):
    /// a graph's `Trunc` step.
    Trunc(TruncParams),
}

impl ActCircuit {
    /// The tanh* selection circuit of a hidden layer with the plan's constants `c`.
    pub fn tanh_star(c: &ActConsts) -> ActCircuit {
        ActCircuit::TanhSelect(ActParams {
            sh: c.sh,
            k: c.k,
            a_fix: c.a_fix,
            b_fix: c.b_fix,
        })
    }

    pub fn validate(&self) -> Result<(), ParamError> {
        match self {
            ActCircuit::TanhSelect(p) => p.validate(),
            ActCircuit::Relu(p) if p.k < 2 => {
                Err(ParamError(format!("ReLU needs k >= 2, got {}", p.k)))
            }
            ActCircuit::Relu(p) | ActCircuit::Trunc(p) => p.validate(),
        }
    }

    /// Input bits per party per element.
    pub fn n(&self) -> usize {
        match self {
            ActCircuit::TanhSelect(p) => p.n(),
            ActCircuit::Relu(p) | ActCircuit::Trunc(p) => p.n(),
        }
    }

    /// Output bits per element.
    pub fn out_len(&self) -> usize {
        match self {
            ActCircuit::TanhSelect(p) => p.out_len(),
            ActCircuit::Relu(p) => p.k as usize - 1,
            ActCircuit::Trunc(p) => p.k as usize,
        }
    }

    pub fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire> {
        match self {
            ActCircuit::TanhSelect(p) => tanh_select(c, p, g, e),
            ActCircuit::Relu(p) => relu_out(c, p, g, e),
            ActCircuit::Trunc(p) => rescale_out(c, p, g, e),
        }
    }

    /// AND gates per element (table size is 32 bytes per AND).
    pub fn and_gates(&self) -> u64 {
        let mut c = AndCounter::default();
        let w = vec![(); self.n()];
        self.build(&mut c, &w, &w);
        c.ands
    }

    /// B2A weights and groups for `items` elements, element after element;
    /// per element: `tc, r1, r2, s1, s2, sgn` for tanh_select, one unsigned
    /// value for ReLU and for Trunc (offset binary: party 1 subtracts the offset).
    pub fn b2a_layout(&self, items: usize) -> (Vec<u64>, Vec<usize>) {
        let (w, g) = match self {
            ActCircuit::TanhSelect(p) => p.b2a_layout(),
            // One unsigned value of out_len bits.
            ActCircuit::Relu(_) | ActCircuit::Trunc(_) => {
                let k = self.out_len();
                ((0..k).map(|j| 1u64 << j).collect(), vec![k])
            }
        };
        (w.repeat(items), g.repeat(items))
    }
}

impl Build for ActParams {
    fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire> {
        tanh_select(c, self, g, e)
    }
}

impl Build for TruncParams {
    fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire> {
        trunc_out(c, self, g, e)
    }
}

impl Build for ActCircuit {
    fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire> {
        ActCircuit::build(self, c, g, e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::circuit::builder::{from_bits, to_bits, PlainEval};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    pub(crate) fn paper(sh: u32) -> ActParams {
        ActParams {
            sh,
            k: 21,
            a_fix: (1.52f64 * 4096.0).round() as u64,
            b_fix: (2.57f64 * 4096.0).round() as u64,
        }
    }

    /// Share pairs hitting the interesting places: x around 0, ±a, ±b,
    /// the extremes of k bits, and carries out of the low sh bits.
    pub(crate) fn cases(
        n: usize,
        sh: u32,
        k: u32,
        marks: &[u64],
        rng: &mut ChaCha12Rng,
    ) -> Vec<(u64, u64)> {
        let m = mask(n as u32);
        let mut xs: Vec<u64> = vec![0, 1, mask(k) >> 1, (mask(k) >> 1) + 1, mask(k)];
        for &a in marks {
            for d in [-1i64, 0, 1] {
                let v = (a as i64 + d) as u64;
                xs.push(v & mask(k));
                xs.push(v.wrapping_neg() & mask(k));
                xs.push(!v & mask(k));
            }
        }
        let mut out = Vec::new();
        for x in xs {
            for low in [0, 1, mask(sh), rng.gen::<u64>() & mask(sh)] {
                let v = ((x << sh) | low) & m;
                let g = rng.gen::<u64>() & m;
                out.push((g, v.wrapping_sub(g) & m));
            }
        }
        for _ in 0..300 {
            out.push((rng.gen::<u64>() & m, rng.gen::<u64>() & m));
        }
        out
    }

    #[test]
    fn tanh_select_plain_matches_ref() {
        let mut rng = ChaCha12Rng::seed_from_u64(21);
        let mut params = vec![paper(24), paper(42), paper(0)];
        params.push(ActParams {
            sh: 3,
            k: 5,
            a_fix: 3,
            b_fix: 9,
        });
        params.push(ActParams {
            sh: 0,
            k: 2,
            a_fix: 0,
            b_fix: 1,
        });
        params.push(ActParams {
            sh: 2,
            k: 6,
            a_fix: 20,
            b_fix: 7,
        }); // a > b
        params.push(ActParams {
            sh: 1,
            k: 63,
            a_fix: 1 << 40,
            b_fix: (1 << 62) - 1,
        });
        for p in &params {
            let n = p.n();
            for (g, e) in cases(n, p.sh, p.k, &[p.a_fix, p.b_fix], &mut rng) {
                let out = tanh_select(&mut PlainEval, p, &to_bits(g, n), &to_bits(e, n));
                assert_eq!(out.len(), p.out_len());
                let got = decode_tanh_select(p, &out).unwrap();
                assert_eq!(got, tanh_select_ref(p, g, e), "p={p:?} g={g} e={e}");
            }
        }
        // Exhaustive on a tiny instance, including garbage above n.
        let p = ActParams {
            sh: 2,
            k: 4,
            a_fix: 2,
            b_fix: 5,
        };
        for g in 0..64u64 {
            for e in 0..64u64 {
                let out = tanh_select(&mut PlainEval, &p, &to_bits(g, 6), &to_bits(e, 6));
                let (tc, r1, r2, s1, s2, sgn) = decode_tanh_select(&p, &out).unwrap();
                let x = (((g + e) % 64) >> 2) as i64;
                let x = if x >= 8 { x - 16 } else { x };
                assert_eq!(sgn, x < 0);
                let t = if x < 0 { -x - 1 } else { x } as u64;
                assert_eq!((r1, r2), (t <= 2, t > 2 && t <= 5));
                // tc is t's low L = 3 bits (it only matters where t <= b = 5).
                assert_eq!(tc, t & 7);
                if t <= 5 {
                    assert_eq!(tc, t);
                }
                assert_eq!((s1, s2), (r1 && sgn, r2 && sgn));
                let hi = rng.gen::<u64>() << 6;
                assert_eq!(tanh_select_ref(&p, g | hi, e), (tc, r1, r2, s1, s2, sgn));
            }
        }
    }

    #[test]
    fn trunc_out_plain_matches_ref() {
        let mut rng = ChaCha12Rng::seed_from_u64(22);
        for p in [
            TruncParams { sh: 36, k: 24 },
            TruncParams { sh: 0, k: 64 },
            TruncParams { sh: 63, k: 1 },
            TruncParams { sh: 5, k: 3 },
        ] {
            let n = p.n();
            for (g, e) in cases(n, p.sh, p.k, &[], &mut rng) {
                let out = trunc_out(&mut PlainEval, &p, &to_bits(g, n), &to_bits(e, n));
                assert_eq!(out.len(), p.k as usize);
                assert_eq!(from_bits(&out), trunc_out_ref(&p, g, e));
            }
        }
        // Exact floor division of the signed shared value.
        let p = TruncParams { sh: 36, k: 24 };
        for v in [
            -5i64 << 36,
            (-5i64 << 36) - 1,
            7 << 36,
            (7 << 36) + 12345,
            -1,
        ] {
            let g: u64 = rng.gen();
            let e = (v as u64).wrapping_sub(g);
            // The k-bit pattern read as a signed integer.
            let x = ((trunc_out_ref(&p, g, e) << (64 - p.k)) as i64) >> (64 - p.k);
            assert_eq!(x, v.div_euclid(1 << 36));
        }
    }

    #[test]
    fn relu_out_plain_matches_ref_and_floor() {
        let mut rng = ChaCha12Rng::seed_from_u64(24);
        for p in [
            TruncParams { sh: 12, k: 20 },
            TruncParams { sh: 0, k: 2 },
            TruncParams { sh: 40, k: 24 },
        ] {
            let n = p.n();
            for (g, e) in cases(n, p.sh, p.k, &[], &mut rng) {
                let out = relu_out(&mut PlainEval, &p, &to_bits(g, n), &to_bits(e, n));
                assert_eq!(out.len(), p.k as usize - 1);
                assert_eq!(from_bits(&out), relu_out_ref(&p, g, e));
            }
        }
        // max(0, floor(v / 2^sh)) of the signed shared value, computed independently.
        let p = TruncParams { sh: 12, k: 20 };
        for v in [-1i64, 0, 1, 4095, 4096, -4097, (1 << 30) + 77, -(1 << 30)] {
            let g: u64 = rng.gen();
            let e = (v as u64).wrapping_sub(g);
            assert_eq!(relu_out_ref(&p, g, e) as i64, v.div_euclid(1 << 12).max(0));
        }
        assert!(ActCircuit::Relu(TruncParams { sh: 3, k: 1 })
            .validate()
            .is_err());
    }

    /// The rescaling circuit in the clear: its k bits, read with weights 2^j minus the
    /// offset, are floor(V / 2^sh) of the shared V, for sh from 0 up, at the edges of the
    /// k-bit range (|V| near 2^(sh+k-1)), around 0 and at random.
    #[test]
    fn rescale_out_plain_is_the_floor() {
        let mut rng = ChaCha12Rng::seed_from_u64(25);
        for p in [
            TruncParams { sh: 0, k: 18 },
            TruncParams { sh: 1, k: 2 },
            TruncParams { sh: 3, k: 9 },
            TruncParams { sh: 13, k: 18 },
            TruncParams { sh: 23, k: 18 },
            TruncParams { sh: 0, k: 64 },
            TruncParams { sh: 40, k: 24 },
            TruncParams { sh: 63, k: 1 },
        ] {
            let n = p.n();
            let top = (p.sh + p.k - 1) as i32;
            let edge = |d: i64| {
                let lim = if top >= 63 {
                    i64::MAX
                } else {
                    (1i64 << top) - 1
                };
                [lim - d, -lim - 1 + d]
            };
            let mut vs: Vec<i64> = [0, 1, 2, 3, 7, 100].iter().flat_map(|&d| edge(d)).collect();
            vs.extend([0, -1, 1, (1 << p.sh.min(62)) - 1, -(1 << p.sh.min(62))]);
            vs.extend((0..200).map(|_| rng.gen::<i64>() >> (63 - top)));
            // Only what fits: |V| < 2^(sh+k-1) (the narrow settings' edges overlap).
            let fits = |v: i64| top >= 63 || (-(1i64 << top)..1i64 << top).contains(&v);
            vs.retain(|&v| fits(v));
            for v in vs {
                let m = mask(n as u32);
                let g = rng.gen::<u64>() & m;
                let e = (v as u64).wrapping_sub(g) & m;
                let out = rescale_out(&mut PlainEval, &p, &to_bits(g, n), &to_bits(e, n));
                assert_eq!(out.len(), p.k as usize);
                let u = from_bits(&out);
                assert_eq!(u, rescale_out_ref(&p, g, e), "{p:?} V = {v}");
                let x = u.wrapping_sub(p.offset()) as i64;
                assert_eq!(x, v >> p.sh, "{p:?} V = {v}: floor");
            }
        }
        let t = ActCircuit::Trunc(TruncParams { sh: 13, k: 18 });
        assert_eq!((t.n(), t.out_len()), (31, 18));
        // The adder only: the sign flip is free.
        assert_eq!(t.and_gates(), 30);
    }

    /// max(a, b) = a + ReLU_0(b - a) in the clear, with the sh = 0 circuit, where b - a
    /// fits in k signed bits (its edges included).
    #[test]
    fn max_is_a_plus_relu_of_the_difference() {
        let mut rng = ChaCha12Rng::seed_from_u64(26);
        let p = TruncParams { sh: 0, k: 18 };
        let lim = 1i64 << 17;
        let mut pairs: Vec<(i64, i64)> = vec![(0, 0), (5, -5), (-5, 5), (0, lim - 1), (lim - 1, 0)];
        pairs.extend([(-lim / 2, lim / 2 - 1), (lim / 2 - 1, -lim / 2), (-3, -3)]);
        pairs.extend((0..500).map(|_| {
            let a = rng.gen_range(-lim / 2..lim / 2);
            (a, rng.gen_range(-lim / 2..lim / 2))
        }));
        for (a, b) in pairs {
            let d = b.wrapping_sub(a) as u64;
            let g = rng.gen::<u64>() & mask(18);
            let e = d.wrapping_sub(g) & mask(18);
            let r = relu_out(&mut PlainEval, &p, &to_bits(g, 18), &to_bits(e, 18));
            assert_eq!(a + from_bits(&r) as i64, a.max(b), "max({a}, {b})");
        }
    }

    #[test]
    fn and_counts() {
        fn count<B: Build>(b: &B, n: usize) -> u64 {
            let mut c = AndCounter::default();
            b.build(&mut c, &vec![(); n], &vec![(); n]);
            c.ands
        }
        let (p24, p42) = (paper(24), paper(42));
        let q = TruncParams { sh: 36, k: 24 };
        let (a24, a42, at) = (count(&p24, p24.n()), count(&p42, p42.n()), count(&q, q.n()));
        println!("AND gates: tanh_select sh=24,k=21: {a24}; sh=42,k=21: {a42}; trunc_out sh=36,k=24: {at}");
        // Adder n-1, two comparisons <= k-2 each, L muxes, 2 sign ANDs.
        let bound = |p: &ActParams| (p.n() - 1 + 2 * (p.k as usize - 2) + p.l() + 2) as u64;
        assert!(a24 <= bound(&p24) && a42 <= bound(&p42));
        assert_eq!(at, q.n() as u64 - 1);
        // ReLU: the adder, then one AND per value bit.
        let r = ActCircuit::Relu(TruncParams { sh: 12, k: 20 });
        assert_eq!(r.and_gates(), 12 + 20 - 1 + 19);
    }
}
