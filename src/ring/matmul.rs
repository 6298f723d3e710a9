//! Wrapping u64 matrix products (Z_2^64). ndarray has no integer GEMM, so this is a small
//! row-times-panel kernel that LLVM vectorises; an AVX-512DQ (vpmullq) or AVX2 build is
//! chosen at run time.

use rayon::prelude::*;

/// One row of c (1 x n) += arow (1 x k) * b (k x n), wrapping.
#[inline(always)]
fn row_kernel(arow: &[u64], b: &[u64], crow: &mut [u64], k: usize, n: usize) {
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
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn row_avx512(arow: &[u64], b: &[u64], crow: &mut [u64], k: usize, n: usize) {
    row_kernel(arow, b, crow, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(arow: &[u64], b: &[u64], crow: &mut [u64], k: usize, n: usize) {
    row_kernel(arow, b, crow, k, n)
}

#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512dq") && std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// c += a * b with a: m x k, b: k x n, c: m x n (row-major, wrapping).
pub fn gemm_acc(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    if n == 0 || m == 0 {
        return;
    }
    let isa = detect();
    // The feature-specific function is called per row from inside the parallel closure:
    // a closure does not inherit its caller's target features, so dispatching outside it
    // left the hot loop on baseline SSE2 (64-bit products emulated with pmuludq).
    c.par_chunks_mut(n).enumerate().for_each(|(i, crow)| {
        let arow = &a[i * k..(i + 1) * k];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() saw AVX-512F/DQ on this CPU.
            Isa::Avx512 => unsafe { row_avx512(arow, b, crow, k, n) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() saw AVX2 on this CPU.
            Isa::Avx2 => unsafe { row_avx2(arow, b, crow, k, n) },
            _ => row_kernel(arow, b, crow, k, n),
        }
    });
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
