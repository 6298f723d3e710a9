//! Arithmetic and comparison gadgets on little-endian bit vectors, generic
//! over [`Circuit`] so they are checked in the clear and garbled unchanged.

use super::circuit::Circuit;

/// `a + b mod 2^n` by ripple carry, `n - 1` AND gates (the carry out of the
/// top bit is never needed).
///
/// # Panics
/// If `a` and `b` differ in length (a circuit-construction bug).
pub fn add_mod<C: Circuit>(c: &mut C, a: &[C::Wire], b: &[C::Wire]) -> Vec<C::Wire> {
    assert_eq!(a.len(), b.len(), "add_mod operands differ in width");
    let n = a.len();
    let mut out = Vec::with_capacity(n);
    let mut carry: Option<C::Wire> = None;
    for i in 0..n {
        let ab = c.xor(&a[i], &b[i]);
        match &carry {
            None => out.push(ab),
            Some(ci) => out.push(c.xor(&ab, ci)),
        }
        if i + 1 == n {
            break;
        }
        // carry' = carry ⊕ ((a ⊕ carry) ∧ (b ⊕ carry)); with carry 0 it is a ∧ b.
        carry = Some(match &carry {
            None => c.and(&a[i], &b[i]),
            Some(ci) => {
                let ac = c.xor(&a[i], ci);
                let bc = c.xor(&b[i], ci);
                let m = c.and(&ac, &bc);
                c.xor(ci, &m)
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twopc::gc::circuit::{from_bits, to_bits, AndCounter, PlainEval};
    use crate::twopc::gc::halfgates::tests::{Build, TwoParty};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    fn mask(n: usize) -> u64 {
        if n == 64 {
            u64::MAX
        } else {
            (1u64 << n) - 1
        }
    }

    struct Add(usize);
    impl Build for Add {
        fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire> {
            add_mod(c, &g[..self.0], &e[..self.0])
        }
    }

    struct Le(u64);
    impl Build for Le {
        fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], _e: &[C::Wire]) -> Vec<C::Wire> {
            vec![le_const(c, g, self.0)]
        }
    }

    struct Mux(u64);
    impl Build for Mux {
        fn build<C: Circuit>(&self, c: &mut C, g: &[C::Wire], e: &[C::Wire]) -> Vec<C::Wire> {
            let mut out = mux_const(c, &e[0], g, self.0);
            out.extend(mux(c, &e[0], g, &e[1..=g.len()]));
            out
        }
    }

    fn edge_values(n: usize, rng: &mut ChaCha12Rng) -> Vec<u64> {
        let m = mask(n);
        let mut v = vec![0, 1, m, m - 1, m >> 1, (m >> 1) + 1];
        v.extend((0..40).map(|_| rng.gen::<u64>() & m));
        v
    }

    #[test]
    fn add_mod_plain_and_garbled() {
        let mut rng = ChaCha12Rng::seed_from_u64(11);
        let mut tp = TwoParty::new(12);
        for n in [1usize, 2, 7, 45, 64] {
            let mut cnt = AndCounter::default();
            add_mod(&mut cnt, &vec![(); n], &vec![(); n]);
            assert_eq!(cnt.ands, n as u64 - 1);
            for &a in &edge_values(n, &mut rng) {
                let b = rng.gen::<u64>() & mask(n);
                let want = a.wrapping_add(b) & mask(n);
                let (ab, bb) = (to_bits(a, n), to_bits(b, n));
                assert_eq!(from_bits(&add_mod(&mut PlainEval, &ab, &bb)), want);
                if n == 45 || n == 7 {
                    assert_eq!(from_bits(&tp.run(&Add(n), &ab, &bb)), want);
                }
            }
        }
    }

    #[test]
    fn le_const_exhaustive_small_and_random_large() {
        for n in 1..=6usize {
            for k in 0..(1u64 << (n + 1)) {
                for x in 0..(1u64 << n) {
                    let got = le_const(&mut PlainEval, &to_bits(x, n), k);
                    assert_eq!(got, x <= k, "n={n} x={x} k={k}");
                }
                let mut cnt = AndCounter::default();
                le_const(&mut cnt, &vec![(); n], k);
                assert!(cnt.ands < n as u64);
            }
        }
        let mut rng = ChaCha12Rng::seed_from_u64(13);
        let mut tp = TwoParty::new(14);
        for n in [20usize, 64] {
            for _ in 0..30 {
                let k = rng.gen::<u64>() & mask(n);
                let x = match rng.gen_range(0..3) {
                    0 => k,
                    1 => k.wrapping_add(1) & mask(n),
                    _ => rng.gen::<u64>() & mask(n),
                };
                let xb = to_bits(x, n);
                assert_eq!(le_const(&mut PlainEval, &xb, k), x <= k);
                assert_eq!(tp.run(&Le(k), &xb, &[]), vec![x <= k]);
            }
        }
    }

    #[test]
    fn muxes() {
        let mut rng = ChaCha12Rng::seed_from_u64(15);
        let mut tp = TwoParty::new(16);
        let n = 14;
        for _ in 0..20 {
            let (x, k, y) = (
                rng.gen::<u64>() & mask(n),
                rng.gen::<u64>(),
                rng.gen::<u64>() & mask(n),
            );
            let s: bool = rng.gen();
            let mut e = vec![s];
            e.extend(to_bits(y, n));
            let out = tp.run(&Mux(k), &to_bits(x, n), &e);
            assert_eq!(from_bits(&out[..n]), if s { x } else { k & mask(n) });
            assert_eq!(from_bits(&out[n..]), if s { x } else { y });
        }
        let x = to_bits(0b1010, 4);
        assert_eq!(xor_all(&mut PlainEval, &x, &true), to_bits(0b0101, 4));
    }
}
