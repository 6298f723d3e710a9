//! Micro-kernels: one MR x NR tile of C += (packed A panel, kc x MR) * (packed B panel,
//! kc x NR), wrapping. The accumulators stay in registers for the whole of kc; C is read and
//! written once per call.

/// A micro-kernel and the panel shapes its packing uses.
pub(super) trait Kernel: Sync {
    /// Rows of a packed A panel (rows of the C tile).
    const MR: usize;
    /// Columns of a packed B panel (columns of the C tile).
    const NR: usize;
    /// c[0..rows, 0..cols] (row stride ldc) += a * b over kc steps.
    ///
    /// # Safety
    /// `a` is readable for kc * MR values, `b` for kc * NR; `c` is readable and writable,
    /// and no one else's, for `rows` rows of `cols` values at stride `ldc`; 1 <= rows <= MR,
    /// 1 <= cols <= NR; the CPU has the target features the kernel is built for.
    unsafe fn tile(
        kc: usize,
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        ldc: usize,
        rows: usize,
        cols: usize,
    );
}

/// Adds a full MR x NR accumulator array into C, or only its first rows x cols corner.
///
/// # Safety
/// As for [`Kernel::tile`]'s `c`.
#[inline(always)]
unsafe fn add_tile<const MR: usize, const NR: usize>(
    acc: &[[u64; NR]; MR],
    c: *mut u64,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    for (i, row) in acc.iter().enumerate().take(rows) {
        // SAFETY: the caller guarantees rows x cols values at stride ldc.
        let crow = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
        for (cv, &v) in crow.iter_mut().zip(row) {
            *cv = cv.wrapping_add(v);
        }
    }
}

/// The portable kernel's body: plain arrays that LLVM unrolls and, where the target has
/// vector multiplies, vectorises.
#[inline(always)]
fn portable_body<const MR: usize, const NR: usize>(
    kc: usize,
    a: &[u64],
    b: &[u64],
) -> [[u64; NR]; MR] {
    let mut acc = [[0u64; NR]; MR];
    for (ar, br) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = acc[i][j].wrapping_add(ar[i].wrapping_mul(br[j]));
            }
        }
    }
    acc
}

/// Portable kernel: 4 x 4 scalar tile (16 accumulators; a 64-bit scalar multiply per MAC).
pub(super) struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 4;
    unsafe fn tile(
        kc: usize,
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        ldc: usize,
        rows: usize,
        cols: usize,
    ) {
        // SAFETY: the caller guarantees kc * MR values at a and kc * NR at b.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc * Self::MR),
                std::slice::from_raw_parts(b, kc * Self::NR),
            )
        };
        let acc = portable_body::<4, 4>(kc, a, b);
        // SAFETY: the caller guarantees the C tile.
        unsafe { add_tile(&acc, c, ldc, rows, cols) }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{add_tile, Kernel};

    /// AVX-512 kernel: 8 rows x 16 columns (2 zmm of 8 u64 per row), 16 accumulators.
    /// vpmullq (`_mm512_mullo_epi64`) is one 8-lane wrapping 64-bit product; on Zen 4 it
    /// issues once per cycle, so the kernel is bound by the multiplies and 8 x 16 leaves
    /// registers for the two B vectors and the broadcasts (the A values are broadcast from
    /// memory, folded into vpmullq's operand).
    pub(in super::super) struct Avx512;

    const MR512: usize = 8;

    /// rows x (8 * NV) tile; the A panel's stride is MR512 whatever R is.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn tile512<const R: usize, const NV: usize>(
        kc: usize,
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        ldc: usize,
        cols: usize,
    ) {
        // The C tile is only read after the k loop: asking for it now hides its latency
        // (with a short k, C is most of the memory traffic).
        for i in 0..R {
            for v in 0..NV {
                // SAFETY: a prefetch never faults; the address is in row i of the tile.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + v * 8) as *const i8) };
            }
        }
        let mut acc = [[_mm512_setzero_si512(); NV]; R];
        let mut bv = [_mm512_setzero_si512(); NV];
        for kk in 0..kc {
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: kk < kc and v * 8 + 8 <= 16: inside the kc x 16 B panel.
                *x = unsafe { _mm512_loadu_si512(b.add(kk * 16 + v * 8) as *const __m512i) };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: kk < kc and i < R <= MR512: inside the kc x MR512 A panel.
                let ai = _mm512_set1_epi64(unsafe { *a.add(kk * MR512 + i) } as i64);
                for (x, &bx) in row.iter_mut().zip(&bv) {
                    *x = _mm512_add_epi64(*x, _mm512_mullo_epi64(ai, bx));
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let lanes = cols.saturating_sub(v * 8).min(8);
                // cols > 8 * (NV - 1) (the caller picks NV so), hence lanes >= 1.
                let mask: __mmask8 = if lanes == 8 { 0xff } else { (1u8 << lanes) - 1 };
                // SAFETY: only the lanes below `cols` are touched (masked), within row i < R.
                unsafe {
                    let p = c.add(i * ldc + v * 8) as *mut i64;
                    let old = _mm512_maskz_loadu_epi64(mask, p);
                    _mm512_mask_storeu_epi64(p, mask, _mm512_add_epi64(old, x));
                }
            }
        }
    }

    /// Picks the instance for a tile's rows and columns, so edge tiles cost no more than
    /// their size.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn tile512_any(
        kc: usize,
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        ldc: usize,
        rows: usize,
        cols: usize,
    ) {
        macro_rules! go {
            ($($r:literal)*) => {
                match (rows, cols > 8) {
                    $(
                        // SAFETY: forwarded from the caller; rows == R, cols <= 8 * NV.
                        ($r, true) => unsafe { tile512::<$r, 2>(kc, a, b, c, ldc, cols) },
                        // SAFETY: as above.
                        ($r, false) => unsafe { tile512::<$r, 1>(kc, a, b, c, ldc, cols) },
                    )*
                    _ => unreachable!("tile rows {rows} outside 1..=8"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8)
    }

    impl Kernel for Avx512 {
        const MR: usize = MR512;
        const NR: usize = 16;
        unsafe fn tile(
            kc: usize,
            a: *const u64,
            b: *const u64,
            c: *mut u64,
            ldc: usize,
            rows: usize,
            cols: usize,
        ) {
            // SAFETY: forwarded; the caller guarantees AVX-512F/DQ.
            unsafe { tile512_any(kc, a, b, c, ldc, rows, cols) }
        }
    }

    /// AVX2 kernel: 4 rows x 4 columns (one ymm per row). AVX2 has no 64-bit low multiply;
    /// a * b mod 2^64 = lo(a) lo(b) + 2^32 (lo(a) hi(b) + hi(a) lo(b)), and the second term
    /// only needs its low 32 bits. So per vector: vpmuludq gives lo(a) lo(b) exactly, and
    /// vpmulld of a against b with its halves swapped gives both cross products' low 32 bits
    /// in the two halves of each lane. Both are accumulated as they are (the cross sums in
    /// 32-bit lanes) and combined once per tile: two multiplies per 4 MACs instead of three,
    /// and no shifts in the loop. On Zen 4 this ran at 6.6-8.7 G MAC/s on one core where
    /// LLVM's own vectorisation of the portable kernel for AVX2 (three vpmuludq and shifts
    /// per product, 4 x 8 tile) ran at 3.6-5.3.
    pub(in super::super) struct Avx2;

    const MR2: usize = 4;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2(
        kc: usize,
        a: *const u64,
        b: *const u64,
        c: *mut u64,
        ldc: usize,
        rows: usize,
        cols: usize,
    ) {
        // As in the AVX-512 kernel: fetch the C tile while the k loop runs.
        for i in 0..rows {
            // SAFETY: a prefetch never faults; the address is in row i of the tile.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8) };
        }
        let mut lo = [_mm256_setzero_si256(); MR2];
        let mut cross = [_mm256_setzero_si256(); MR2];
        for kk in 0..kc {
            // SAFETY: kk < kc: inside the kc x 4 B panel.
            let bv = unsafe { _mm256_loadu_si256(b.add(kk * 4) as *const __m256i) };
            let bs = _mm256_shuffle_epi32::<0b1011_0001>(bv);
            for i in 0..MR2 {
                // SAFETY: kk < kc, i < MR2: inside the kc x 4 A panel.
                let ai = _mm256_set1_epi64x(unsafe { *a.add(kk * MR2 + i) } as i64);
                lo[i] = _mm256_add_epi64(lo[i], _mm256_mul_epu32(ai, bv));
                cross[i] = _mm256_add_epi32(cross[i], _mm256_mullo_epi32(ai, bs));
            }
        }
        let mut acc = [[0u64; 4]; MR2];
        for i in 0..MR2 {
            let x = cross[i];
            let x = _mm256_slli_epi64::<32>(_mm256_add_epi64(x, _mm256_srli_epi64::<32>(x)));
            let r = _mm256_add_epi64(lo[i], x);
            // SAFETY: acc[i] is 4 u64, 32 bytes.
            unsafe { _mm256_storeu_si256(acc[i].as_mut_ptr() as *mut __m256i, r) };
        }
        // SAFETY: forwarded from the caller.
        unsafe { add_tile(&acc, c, ldc, rows, cols) }
    }

    impl Kernel for Avx2 {
        const MR: usize = MR2;
        const NR: usize = 4;
        unsafe fn tile(
            kc: usize,
            a: *const u64,
            b: *const u64,
            c: *mut u64,
            ldc: usize,
            rows: usize,
            cols: usize,
        ) {
            // SAFETY: forwarded; the caller guarantees AVX2.
            unsafe { tile_avx2(kc, a, b, c, ldc, rows, cols) }
        }
    }
}
