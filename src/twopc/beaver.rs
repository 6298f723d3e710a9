//! Beaver multiplication on additive shares in Z_2^64.
//!
//! Matrix products W X with the weight mask reused across batches: U = W - A is opened once
//! per job (W is fixed), so each batch only opens V = X - B. With C = A B from the dealer,
//! [W X]_i = i U V + U [B]_i + [A]_i V + [C]_i.
//!
//! Both products of a party's share are one: [U | A_i] (packed once per layer and job)
//! times [B_i; V] stacked, k twice over; the party that takes the U V term multiplies
//! [U | U + A_i] instead ([`plus_uv`]): U B_i + (U + A_i) V = U (V + B_i) + A_i V, with no
//! map-sized V + B_i. The arithmetic is exact mod 2^64, so the share is bit for bit the sum
//! of the two products it replaces.

use crate::ring::matmul::{PackedA, Rhs};
use crate::ring::Party;

/// U + A_i: the second weight part of the party that takes the U V term (weight-sized, where
/// V + B_i would be map-sized).
pub fn plus_uv(u: &[u64], a_i: &[u64]) -> Vec<u64> {
    u.iter().zip(a_i).map(|(x, y)| x.wrapping_add(*y)).collect()
}

/// The weights of party `party`'s product (m x k each), packed once: every product of the
/// layer (each block of a convolution's rows, each batch of an MLP job) reuses the panels.
/// [U | U + A_0] at party 0, which takes the U V term, [U | A_1] at party 1; either times
/// [B_i; V].
pub fn pack_weights(party: Party, u: &[u64], a_i: &[u64], m: usize, k: usize) -> PackedA {
    if party.is_s0() {
        PackedA::new(&[u, &plus_uv(u, a_i)], m, &[k, k])
    } else {
        PackedA::new(&[u, a_i], m, &[k, k])
    }
}

/// A party's share of W X from its [`pack_weights`] (`w`, m x 2k), the opened V
/// (k x n), its mask share B_i (k x n) and triple share C_i (m x n): i U V + U B_i + A_i V
/// + C_i in one product, w [B_i; V].
pub fn matmul_share(w: &PackedA, v: &[u64], b_i: &[u64], c_i: Vec<u64>, n: usize) -> Vec<u64> {
    product_share(
        w,
        Rhs::Rows {
            parts: &[b_i, v],
            n,
        },
        c_i,
    )
}

/// C_i + w b: a Beaver product's share with its right side given (row parts, or a
/// convolution's columns of [B_i; V] made while they are packed).
pub fn product_share(w: &PackedA, b: Rhs<'_>, c_i: Vec<u64>) -> Vec<u64> {
    let mut z = c_i;
    w.gemm_acc(b, &mut z);
    z
}

/// Elementwise product share from opened e = x - a, f = y - b and triple shares (a, b, c).
pub fn elem_mul_share(
    party: Party,
    e: &[u64],
    f: &[u64],
    a: &[u64],
    b: &[u64],
    c: &[u64],
) -> Vec<u64> {
    let one = party as u64;
    (0..e.len())
        .map(|j| {
            one.wrapping_mul(e[j].wrapping_mul(f[j]))
                .wrapping_add(e[j].wrapping_mul(b[j]))
                .wrapping_add(f[j].wrapping_mul(a[j]))
                .wrapping_add(c[j])
        })
        .collect()
}

/// Square share from opened d = x - a and the pair shares (a, a^2).
pub fn square_share(party: Party, d: &[u64], a: &[u64], a2: &[u64]) -> Vec<u64> {
    let one = party as u64;
    (0..d.len())
        .map(|j| {
            one.wrapping_mul(d[j].wrapping_mul(d[j]))
                .wrapping_add(d[j].wrapping_mul(a[j]).wrapping_mul(2))
                .wrapping_add(a2[j])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::matmul::{gemm, gemm_acc};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Each party's share is the two-product formula's, U own + A_i V + C_i with own = V +
    /// B_0 at party 0 and B_1 at party 1, bit for bit, and the shares add up to W X when
    /// C = A B.
    #[test]
    fn one_product_is_the_two_products() {
        let mut rng = ChaCha8Rng::seed_from_u64(51);
        for &(m, k, n) in &[(3, 5, 7), (9, 40, 3), (70, 300, 20), (2, 600, 90)] {
            let r = |rng: &mut ChaCha8Rng, len| (0..len).map(|_| rng.gen()).collect::<Vec<u64>>();
            let (w, x) = (r(&mut rng, m * k), r(&mut rng, k * n));
            let (a0, a1, b0, b1) = (
                r(&mut rng, m * k),
                r(&mut rng, m * k),
                r(&mut rng, k * n),
                r(&mut rng, k * n),
            );
            let add = |p: &[u64], q: &[u64]| {
                p.iter()
                    .zip(q)
                    .map(|(x, y)| x.wrapping_add(*y))
                    .collect::<Vec<u64>>()
            };
            let sub = |p: &[u64], q: &[u64]| {
                p.iter()
                    .zip(q)
                    .map(|(x, y)| x.wrapping_sub(*y))
                    .collect::<Vec<u64>>()
            };
            let (a, b) = (add(&a0, &a1), add(&b0, &b1));
            let (u, v) = (sub(&w, &a), sub(&x, &b));
            let c = gemm(&a, &b, m, k, n);
            let c0 = r(&mut rng, m * n);
            let c1 = sub(&c, &c0);
            let mut shares = Vec::new();
            for (p, a_i, b_i, c_i) in [(Party::S0, &a0, &b0, &c0), (Party::S1, &a1, &b1, &c1)] {
                let mut want = c_i.clone();
                let own = if p.is_s0() { add(&v, b_i) } else { b_i.clone() };
                gemm_acc(&u, &own, &mut want, m, k, n);
                gemm_acc(a_i, &v, &mut want, m, k, n);
                let w = pack_weights(p, &u, a_i, m, k);
                let got = matmul_share(&w, &v, b_i, c_i.clone(), n);
                assert!(got == want, "party {p}, {m}x{k}x{n}");
                shares.push(got);
            }
            assert_eq!(add(&shares[0], &shares[1]), gemm(&w, &x, m, k, n));
        }
    }
}
