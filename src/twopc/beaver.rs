//! Beaver multiplication on additive shares in Z_2^64.
//!
//! Matrix products W X with the weight mask reused across batches: U = W - A is opened once
//! per job (W is fixed), so each batch only opens V = X - B. With C = A B from the dealer,
//! [W X]_i = i U V + U [B]_i + [A]_i V + [C]_i.

use crate::ring::matmul::gemm_acc;

/// Party `i`'s share of W X given the opened U (m x k) and V (k x n), its mask shares
/// A_i (m x k), B_i (k x n) and triple share C_i (m x n).
#[allow(clippy::too_many_arguments)]
pub fn matmul_share(
    party: u8,
    u: &[u64],
    v: &[u64],
    a_i: &[u64],
    b_i: &[u64],
    c_i: Vec<u64>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<u64> {
    let mut z = c_i;
    // Party 0 folds i U V into U (V + B_0): one product fewer.
    if party == 0 {
        let vb: Vec<u64> = v.iter().zip(b_i).map(|(x, y)| x.wrapping_add(*y)).collect();
        gemm_acc(u, &vb, &mut z, m, k, n);
    } else {
        gemm_acc(u, b_i, &mut z, m, k, n);
    }
    gemm_acc(a_i, v, &mut z, m, k, n);
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
