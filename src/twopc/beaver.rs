//! Beaver multiplication on additive shares in Z_2^64.
//!
//! Matrix products W X with the weight mask reused across batches: U = W - A is opened once
//! per job (W is fixed), so each batch only opens V = X - B. With C = A B from the dealer,
//! [W X]_i = i U V + U [B]_i + [A]_i V + [C]_i.
//!
//! Both products of a party's share are one: [U | A_i] (packed once per layer and job)
//! times [own; V] stacked, k twice over. The arithmetic is exact mod 2^64, so the share is
//! bit for bit the sum of the two products it replaces.

use std::borrow::Cow;

use crate::ring::matmul::{PackedA, Rhs};

/// [U | A_i], the opened weights beside this party's share of their mask (m x k each),
/// packed once: every product of the layer (each block of a convolution's rows, each batch
/// of an MLP job) reuses the panels.
pub fn pack_weights(u: &[u64], a_i: &[u64], m: usize, k: usize) -> PackedA {
    PackedA::new(&[u, a_i], m, &[k, k])
}

/// What U multiplies at party `party`: V + B_0 at party 0 (which so takes the U V term),
/// B_1 at party 1. Elementwise, so a convolution's columns of it are cols(V) + cols(B_0).
pub fn own_input<'a>(party: u8, v: &[u64], b_i: &'a [u64]) -> Cow<'a, [u64]> {
    if party == 0 {
        Cow::Owned(v.iter().zip(b_i).map(|(x, y)| x.wrapping_add(*y)).collect())
    } else {
        Cow::Borrowed(b_i)
    }
}

/// Party `party`'s share of W X from [U | A_i] (`w`, m x 2k), the opened V (k x n), its
/// mask share B_i (k x n) and triple share C_i (m x n): U own + A_i V + C_i in one
/// product, [U | A_i] [own; V], where `own` is [`own_input`].
pub fn matmul_share(
    party: u8,
    w: &PackedA,
    v: &[u64],
    b_i: &[u64],
    c_i: Vec<u64>,
    n: usize,
) -> Vec<u64> {
    let own = own_input(party, v, b_i);
    product_share(
        w,
        Rhs::Rows {
            parts: &[&own, v],
            n,
        },
        c_i,
    )
}

/// C_i + [U | A_i] b: a Beaver product's share with its right side given (row parts, or a
/// convolution's columns of [own; V] made while they are packed).
pub fn product_share(w: &PackedA, b: Rhs<'_>, c_i: Vec<u64>) -> Vec<u64> {
    let mut z = c_i;
    w.gemm_acc(b, &mut z);
    z
}

/// Elementwise product share from opened e = x - a, f = y - b and triple shares (a, b, c).
pub fn elem_mul_share(
    party: u8,
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
pub fn square_share(party: u8, d: &[u64], a: &[u64], a2: &[u64]) -> Vec<u64> {
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

    /// Each party's share is the two-product formula's, U own + A_i V + C_i, bit for bit, and
    /// the shares add up to W X when C = A B.
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
            for (p, a_i, b_i, c_i) in [(0u8, &a0, &b0, &c0), (1, &a1, &b1, &c1)] {
                let mut want = c_i.clone();
                gemm_acc(&u, &own_input(p, &v, b_i), &mut want, m, k, n);
                gemm_acc(a_i, &v, &mut want, m, k, n);
                let got = matmul_share(p, &pack_weights(&u, a_i, m, k), &v, b_i, c_i.clone(), n);
                assert!(got == want, "party {p}, {m}x{k}x{n}");
                shares.push(got);
            }
            assert_eq!(add(&shares[0], &shares[1]), gemm(&w, &x, m, k, n));
        }
    }
}
