//! Wrapping u64 matrix products (Z_2^64). ndarray has no integer GEMM, so this is a small
//! row-times-panel kernel that LLVM vectorises; an AVX-512DQ (vpmullq) or AVX2 build is
//! chosen at run time.

use rayon::prelude::*;

/// c (m x n) += a (m x k) * b (k x n), all row-major, wrapping.
#[inline(always)]
fn kernel(a: &[u64], b: &[u64], c: &mut [u64], k: usize, n: usize) {
    c.par_chunks_mut(n).enumerate().for_each(|(i, crow)| {
        let arow = &a[i * k..(i + 1) * k];
        // Blocks of 4 rows of b keep the accumulator row in registers/L1 longer.
        let mut kk = 0;
        while kk + 4 <= k {
            let (w0, w1, w2, w3) = (arow[kk], arow[kk + 1], arow[kk + 2], arow[kk + 3]);
            let b0 = &b[kk * n..(kk + 1) * n];
            let b1 = &b[(kk + 1) * n..(kk + 2) * n];
            let b2 = &b[(kk + 2) * n..(kk + 3) * n];
            let b3 = &b[(kk + 3) * n..(kk + 4) * n];
            for j in 0..n {
                crow[j] = crow[j]
                    .wrapping_add(w0.wrapping_mul(b0[j]))
                    .wrapping_add(w1.wrapping_mul(b1[j]))
                    .wrapping_add(w2.wrapping_mul(b2[j]))
                    .wrapping_add(w3.wrapping_mul(b3[j]));
            }
            kk += 4;
        }
        while kk < k {
            let w0 = arow[kk];
            let b0 = &b[kk * n..(kk + 1) * n];
            for j in 0..n {
                crow[j] = crow[j].wrapping_add(w0.wrapping_mul(b0[j]));
            }
            kk += 1;
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn kernel_avx512(a: &[u64], b: &[u64], c: &mut [u64], k: usize, n: usize) {
    kernel(a, b, c, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2(a: &[u64], b: &[u64], c: &mut [u64], k: usize, n: usize) {
    kernel(a, b, c, k, n)
}

/// c += a * b with a: m x k, b: k x n, c: m x n (row-major, wrapping).
pub fn gemm_acc(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    if n == 0 || m == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512dq") && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F/DQ (vpmullq: 64-bit lane products).
            unsafe { kernel_avx512(a, b, c, k, n) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { kernel_avx2(a, b, c, k, n) };
            return;
        }
    }
    kernel(a, b, c, k, n)
}

/// a * b as a new matrix.
pub fn gemm(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    gemm_acc(a, b, &mut c, m, k, n);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_naive() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for &(m, k, n) in &[(3, 7, 5), (8, 9, 1), (1, 1, 1), (17, 33, 13)] {
            let a: Vec<u64> = (0..m * k).map(|_| rng.gen()).collect();
            let b: Vec<u64> = (0..k * n).map(|_| rng.gen()).collect();
            let c = gemm(&a, &b, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0u64;
                    for t in 0..k {
                        s = s.wrapping_add(a[i * k + t].wrapping_mul(b[t * n + j]));
                    }
                    assert_eq!(c[i * n + j], s);
                }
            }
        }
    }
}
