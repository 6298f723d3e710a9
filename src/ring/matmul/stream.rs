//! Products with very few rows of A (a convolution down to one or a few output channels):
//! each value of B is used only m times, so packing B would cost as much as the arithmetic.
//! Here B is streamed in place, four of its rows at a time, against every row of A, into a
//! strip of C that stays in L2. Every value of B is read from memory once.

use std::ops::Range;

/// Columns of C per strip for m rows: m x cols values of C (128 KiB) stay in L2 while the
/// strip's rows of B stream past, and the reads along each row of B come in long runs
/// (32 KiB and more). Strips of 512 columns, C in L1, ran a third slower for one row
/// (4 KiB runs); strips of 4096 columns whatever m, about a tenth slower for one row.
pub(super) fn strip_cols(m: usize) -> usize {
    (16384 / m.max(1)).max(512)
}

/// One strip c[0..m, cols] += a (m x k) * b[:, cols], portable: row by row against four rows
/// of b at a time (the previous row kernel's loop, on a strip).
///
/// # Safety
/// c points to the m x n matrix C (row-major), and no one else reads or writes its columns
/// `cols` meanwhile.
#[inline(always)]
pub(super) unsafe fn strip_portable(
    a: &[u64],
    b: &[u64],
    c: *mut u64,
    m: usize,
    k: usize,
    n: usize,
    cols: Range<usize>,
) {
    assert!(a.len() == m * k && b.len() == k * n && cols.end <= n);
    let mut kk = 0;
    while kk < k {
        let ks = (k - kk).min(4);
        for i in 0..m {
            // SAFETY: row i < m of C, columns inside 0..n, ours alone (the caller's promise).
            let crow =
                unsafe { std::slice::from_raw_parts_mut(c.add(i * n + cols.start), cols.len()) };
            let w = &a[i * k + kk..][..ks];
            if ks == 4 {
                let (w0, w1, w2, w3) = (w[0], w[1], w[2], w[3]);
                let row = |t: usize| &b[(kk + t) * n + cols.start..(kk + t) * n + cols.end];
                let (b0, b1, b2, b3) = (row(0), row(1), row(2), row(3));
                for (j, cv) in crow.iter_mut().enumerate() {
                    *cv = cv
                        .wrapping_add(w0.wrapping_mul(b0[j]))
                        .wrapping_add(w1.wrapping_mul(b1[j]))
                        .wrapping_add(w2.wrapping_mul(b2[j]))
                        .wrapping_add(w3.wrapping_mul(b3[j]));
                }
            } else {
                for (t, &wt) in w.iter().enumerate() {
                    let bt = &b[(kk + t) * n + cols.start..(kk + t) * n + cols.end];
                    for (cv, &bv) in crow.iter_mut().zip(bt) {
                        *cv = cv.wrapping_add(wt.wrapping_mul(bv));
                    }
                }
            }
        }
        kk += ks;
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{strip_avx2, strip_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// [`super::strip_portable`] built for AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2; C as for [`super::strip_portable`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn strip_avx2(
        a: &[u64],
        b: &[u64],
        c: *mut u64,
        m: usize,
        k: usize,
        n: usize,
        cols: Range<usize>,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { super::strip_portable(a, b, c, m, k, n, cols) }
    }

    /// Rows kk..kk + KS of B against all M rows of A, over columns `cols`: each vector of B
    /// is loaded once and used for every row, with the M x KS weights in registers.
    ///
    /// # Safety
    /// a is M x k, b is k x n and c is M x n (row-major, readable; c writable and ours);
    /// kk + KS <= k, cols inside 0..n.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn step<const M: usize, const KS: usize>(
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        k: usize,
        n: usize,
        kk: usize,
        cols: &Range<usize>,
    ) {
        let mut w = [[_mm512_setzero_si512(); KS]; M];
        for (i, wi) in w.iter_mut().enumerate() {
            for (t, x) in wi.iter_mut().enumerate() {
                // SAFETY: i < M rows of a, kk + t < k.
                *x = _mm512_set1_epi64(unsafe { *a.add(i * k + kk + t) } as i64);
            }
        }
        let mut bv = [_mm512_setzero_si512(); KS];
        let mut j = cols.start;
        // Whole vectors unmasked (masked stores are slower), then the ragged end masked.
        while j + 8 <= cols.end {
            for (t, x) in bv.iter_mut().enumerate() {
                // SAFETY: row kk + t < k; lanes j..j + 8 inside the row.
                *x = unsafe { _mm512_loadu_si512(b.add((kk + t) * n + j) as *const __m512i) };
            }
            for (i, wi) in w.iter().enumerate() {
                let s = dot(wi, &bv);
                // SAFETY: row i < M of c, lanes j..j + 8 inside the row.
                unsafe {
                    let p = c.add(i * n + j) as *mut __m512i;
                    _mm512_storeu_si512(p, _mm512_add_epi64(_mm512_loadu_si512(p), s));
                }
            }
            j += 8;
        }
        if j < cols.end {
            let mask: __mmask8 = (1u8 << (cols.end - j)) - 1;
            for (t, x) in bv.iter_mut().enumerate() {
                // SAFETY: row kk + t < k; lanes j..cols.end inside the row (masked).
                *x = unsafe {
                    _mm512_maskz_loadu_epi64(mask, b.add((kk + t) * n + j) as *const i64)
                };
            }
            for (i, wi) in w.iter().enumerate() {
                let s = dot(wi, &bv);
                // SAFETY: row i < M of c, lanes j..cols.end inside the row (masked).
                unsafe {
                    let p = c.add(i * n + j) as *mut i64;
                    let old = _mm512_maskz_loadu_epi64(mask, p);
                    _mm512_mask_storeu_epi64(p, mask, _mm512_add_epi64(old, s));
                }
            }
        }
    }

    /// sum over t of w[t] * b[t], lanewise. An index loop: iterator adapters such as
    /// `skip` were left out of line here (they lack the target features), one call per term.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    #[allow(clippy::needless_range_loop)]
    fn dot<const KS: usize>(w: &[__m512i; KS], b: &[__m512i; KS]) -> __m512i {
        let mut s = _mm512_mullo_epi64(w[0], b[0]);
        for t in 1..KS {
            s = _mm512_add_epi64(s, _mm512_mullo_epi64(w[t], b[t]));
        }
        s
    }

    /// # Safety
    /// As for [`step`], with m = M.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn strip512<const M: usize>(
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        k: usize,
        n: usize,
        cols: &Range<usize>,
    ) {
        let mut kk = 0;
        while kk + 4 <= k {
            // SAFETY: kk + 4 <= k; the rest forwarded.
            unsafe { step::<M, 4>(a, b, c, k, n, kk, cols) };
            kk += 4;
        }
        while kk < k {
            // SAFETY: kk < k; the rest forwarded.
            unsafe { step::<M, 1>(a, b, c, k, n, kk, cols) };
            kk += 1;
        }
    }

    /// One strip with AVX-512, for m <= 4 (the weights, m x 4 zmm, stay in registers).
    ///
    /// # Safety
    /// The CPU has AVX-512F/DQ; c points to the m x n matrix C, and no one else reads or
    /// writes its columns `cols` meanwhile.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn strip_avx512(
        a: &[u64],
        b: &[u64],
        c: *mut u64,
        m: usize,
        k: usize,
        n: usize,
        cols: Range<usize>,
    ) {
        assert!(a.len() == m * k && b.len() == k * n && cols.end <= n);
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: shapes checked above; C as the caller guarantees.
        unsafe {
            match m {
                1 => strip512::<1>(a, b, c, k, n, &cols),
                2 => strip512::<2>(a, b, c, k, n, &cols),
                3 => strip512::<3>(a, b, c, k, n, &cols),
                4 => strip512::<4>(a, b, c, k, n, &cols),
                _ => unreachable!("streamed products have 1..=4 rows"),
            }
        }
    }
}
