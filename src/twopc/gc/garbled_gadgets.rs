//! The gadgets of [`crate::circuit::gadgets`], in the clear and garbled.

use crate::circuit::builder::{from_bits, to_bits, AndCounter, Build, Circuit, PlainEval};
use crate::circuit::gadgets::*;
use crate::twopc::gc::halfgates::tests::TwoParty;
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
