//! The previous product, kept as a yardstick for `bench-kernels`: each row of A against the
//! whole of B, rows in parallel, no packing and no cache blocking. B is streamed from memory
//! once per row of A, so large products are memory-bound.

use rayon::prelude::*;

use super::Isa;

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
fn row_avx512(arow: &[u64], b: &[u64], crow: &mut [u64], k: usize, n: usize) {
    row_kernel(arow, b, crow, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_avx2(arow: &[u64], b: &[u64], crow: &mut [u64], k: usize, n: usize) {
    row_kernel(arow, b, crow, k, n)
}

/// c += a * b (shapes as in [`super::gemm_acc`]) with the previous row kernel.
pub fn gemm_acc_reference(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    if n == 0 || m == 0 {
        return;
    }
    let isa = Isa::detected();
    // The feature-specific function is called per row from inside the parallel closure:
    // a closure does not inherit its caller's target features.
    c.par_chunks_mut(n).enumerate().for_each(|(i, crow)| {
        let arow = &a[i * k..(i + 1) * k];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::detected() saw AVX-512F/DQ on this CPU.
            Isa::Avx512 => unsafe { row_avx512(arow, b, crow, k, n) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::detected() saw AVX2 on this CPU.
            Isa::Avx2 => unsafe { row_avx2(arow, b, crow, k, n) },
            _ => row_kernel(arow, b, crow, k, n),
        }
    });
}
