//! Arithmetic and comparison gadgets on little-endian bit vectors, generic
//! over [`Circuit`] so they are checked in the clear and garbled unchanged.

use super::builder::Circuit;

/// `a + b mod 2^n` by ripple carry, `n - 1` AND gates (the carry out of the
/// top bit is never needed).
///
/// # Panics
/// If `a` and `b` differ in length (a circuit-construction bug).
pub fn add_mod<C: Circuit>(c: &mut C, a: &[C::Wire], b: &[C::Wire]) -> Vec<C::Wire> {
    assert_eq!(a.len(), b.len(), "add_mod operands differ in width");
    let n = a.len();
    let carry = carries(c, a, b, n.saturating_sub(1));
    (0..n)
        .map(|i| {
            let ab = c.xor(&a[i], &b[i]);
            match i {
                0 => ab,
                _ => c.xor(&ab, &carry[i - 1]),
            }
        })
        .collect()
}

/// The carries into bits 1..=m of `a + b` by ripple carry, `m` AND gates: the carry into
/// bit i + 1 is `c ⊕ ((a_i ⊕ c) ∧ (b_i ⊕ c))` for the carry c into bit i, and `a_0 ∧ b_0`
/// into bit 1.
///
/// # Panics
/// If `a` and `b` differ in length or are not wider than `m` bits.
pub fn carries<C: Circuit>(c: &mut C, a: &[C::Wire], b: &[C::Wire], m: usize) -> Vec<C::Wire> {
    assert_eq!(a.len(), b.len(), "carries: operands differ in width");
    assert!(
        m < a.len().max(1),
        "carries: {m} carries of {}-bit operands",
        a.len()
    );
    let mut out: Vec<C::Wire> = Vec::with_capacity(m);
    for i in 0..m {
        let next = match out.last() {
            None => c.and(&a[0], &b[0]),
            Some(ci) => {
                let ac = c.xor(&a[i], ci);
                let bc = c.xor(&b[i], ci);
                let m = c.and(&ac, &bc);
                c.xor(ci, &m)
            }
        };
        out.push(next);
    }
    out
}

/// A bit that may still be a public constant, so gates on it fold away
/// instead of costing ANDs.
enum Bit<W> {
    Const(bool),
    Wire(W),
}

/// `x ≤ k` for unsigned `x` and public `k`: at most `x.len() - 1` AND gates
/// (fewer when `k` has trailing ones or `k ≥ 2^n - 1`).
pub fn le_const<C: Circuit>(c: &mut C, x: &[C::Wire], k: u64) -> C::Wire {
    let n = x.len();
    if n < 64 && (k >> n) != 0 {
        return c.constant(true);
    }
    // r = [x mod 2^(i+1) ≤ k mod 2^(i+1)], built from the least significant bit up.
    let mut r: Bit<C::Wire> = Bit::Const(true);
    for (i, xi) in x.iter().enumerate() {
        let ki = (k >> i) & 1 == 1;
        r = match (ki, r) {
            // k_i = 1: r' = ¬x_i ∨ r = ¬(x_i ∧ ¬r).
            (true, Bit::Const(true)) => Bit::Const(true),
            (true, Bit::Const(false)) => Bit::Wire(c.not(xi)),
            (true, Bit::Wire(w)) => {
                let nw = c.not(&w);
                let a = c.and(xi, &nw);
                Bit::Wire(c.not(&a))
            }
            // k_i = 0: r' = ¬x_i ∧ r.
            (false, Bit::Const(true)) => Bit::Wire(c.not(xi)),
            (false, Bit::Const(false)) => Bit::Const(false),
            (false, Bit::Wire(w)) => {
                let nx = c.not(xi);
                Bit::Wire(c.and(&nx, &w))
            }
        };
    }
    match r {
        Bit::Const(b) => c.constant(b),
        Bit::Wire(w) => w,
    }
}

/// `s ? x : k` bitwise for public `k` (low `x.len()` bits), one AND per bit.
pub fn mux_const<C: Circuit>(c: &mut C, s: &C::Wire, x: &[C::Wire], k: u64) -> Vec<C::Wire> {
    x.iter()
        .enumerate()
        .map(|(i, xi)| {
            if i < 64 && (k >> i) & 1 == 1 {
                // 1 ⊕ s∧(x ⊕ 1) = ¬(s ∧ ¬x).
                let nx = c.not(xi);
                let a = c.and(s, &nx);
                c.not(&a)
            } else {
                c.and(s, xi)
            }
        })
        .collect()
}

/// `s ? a : b` bitwise, one AND per bit.
pub fn mux<C: Circuit>(c: &mut C, s: &C::Wire, a: &[C::Wire], b: &[C::Wire]) -> Vec<C::Wire> {
    assert_eq!(a.len(), b.len(), "mux operands differ in width");
    a.iter()
        .zip(b)
        .map(|(ai, bi)| {
            let d = c.xor(ai, bi);
            let m = c.and(s, &d);
            c.xor(bi, &m)
        })
        .collect()
}

/// XOR of every bit of `x` with `s` (conditional complement), free.
pub fn xor_all<C: Circuit>(c: &mut C, x: &[C::Wire], s: &C::Wire) -> Vec<C::Wire> {
    x.iter().map(|xi| c.xor(xi, s)).collect()
}
