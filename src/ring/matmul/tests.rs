//! Known answers from a naive triple loop, on every path this CPU supports.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn naive(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            let mut s = c[i * n + j];
            for t in 0..k {
                s = s.wrapping_add(a[i * k + t].wrapping_mul(b[t * n + j]));
            }
            c[i * n + j] = s;
        }
    }
}

fn rand_vec(rng: &mut ChaCha8Rng, len: usize) -> Vec<u64> {
    (0..len).map(|_| rng.gen()).collect()
}

fn isas() -> Vec<Isa> {
    let v: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.supported()).collect();
    assert!(v.contains(&Isa::Portable));
    v
}

/// Runs `f` in a pool of `threads` threads (1: the serial path; more: the parallel one).
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// A packed for the blocked path whatever m (`PackedA` streams m <= STREAM_MAX_M).
fn packed(isa: Isa, a: &[u64], m: usize, k: usize) -> Vec<u64> {
    let mut ap = vec![0u64; mp(isa, m) * k];
    pack_a_parts(
        panel_shape(isa).0,
        false,
        &[a],
        &[k],
        m,
        &kb(k),
        mp(isa, m),
        &mut ap,
    );
    ap
}

fn kb(k: usize) -> Vec<(usize, usize)> {
    k_blocks(k, BLOCKS.kc)
}

fn mp(isa: Isa, m: usize) -> usize {
    m.div_ceil(panel_shape(isa).0) * panel_shape(isa).0
}

fn rows<'a>(parts: &'a [&'a [u64]], n: usize) -> Rhs<'a> {
    Rhs::Rows { parts, n }
}

/// c0 + a * b on `isa` against the naive loop, from the same non-zero c0.
fn check(isa: Isa, rng: &mut ChaCha8Rng, m: usize, k: usize, n: usize) {
    let a = rand_vec(rng, m * k);
    let b = rand_vec(rng, k * n);
    let c0 = rand_vec(rng, m * n);
    let mut want = c0.clone();
    naive(&a, &b, &mut want, m, k, n);
    let mut got = c0;
    gemm_acc_isa(isa, &a, &b, &mut got, m, k, n);
    if let Some(p) = got.iter().zip(&want).position(|(x, y)| x != y) {
        panic!(
            "{} {m}x{k}x{n}: first difference at ({}, {})",
            isa.name(),
            p / n,
            p % n
        );
    }
}

#[test]
fn every_small_shape_on_every_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for isa in isas() {
        for m in 1..=20 {
            for n in 1..=20 {
                for k in [1, 2, 3, 5, 8, 16, 17] {
                    check(isa, &mut rng, m, k, n);
                }
            }
        }
    }
}

#[test]
fn packed_path_for_few_rows() {
    // m <= STREAM_MAX_M streams B; the packed path must still be right for such m.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for isa in isas() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 300, 37),
            (2, 17, 300),
            (3, 5, 16),
            (4, 257, 33),
        ] {
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let mut want = rand_vec(&mut rng, m * n);
            let mut got = want.clone();
            naive(&a, &b, &mut want, m, k, n);
            let pa = packed(isa, &a, m, k);
            run_packed(
                isa,
                false,
                &pa,
                &kb(k),
                mp(isa, m),
                rows(&[&b], n),
                &mut got,
                m,
                n,
            );
            assert_eq!(got, want, "{} {m}x{k}x{n}", isa.name());
        }
    }
}

#[test]
fn shapes_past_the_cache_blocks() {
    // Each crosses at least one of KC (256), MC (64), NC (256) and leaves a ragged edge;
    // n >= m goes the column-split way, n < m the row-split way.
    let shapes = [
        (70, 700, 300),
        (9, 513, 257),
        (65, 257, 530),
        (300, 100, 40),
        (129, 300, 17),
        (1, 576, 5000),
        (4, 576, 1000),
        (3, 1, 2000),
        (2000, 1, 3),
        (17, 1000, 1),
        (1, 1000, 17),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for isa in isas() {
        for threads in [1, 2, 3] {
            in_pool(threads, || {
                for &(m, k, n) in &shapes {
                    check(isa, &mut rng.clone(), m, k, n);
                }
            });
        }
        rng = ChaCha8Rng::seed_from_u64(rng.gen());
    }
}

#[test]
fn random_shapes_property() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for case in 0..120 {
        // Mostly small, now and then large enough for the parallel split.
        let big = case % 8 == 0;
        let lim = if big { 300 } else { 40 };
        let (m, k, n) = (
            rng.gen_range(1..=lim),
            rng.gen_range(1..=lim),
            rng.gen_range(1..=lim),
        );
        for isa in isas() {
            check(isa, &mut rng, m, k, n);
        }
    }
}

#[test]
fn extreme_values_wrap() {
    // All ones: each product is 1 (mod 2^64), the sums wrap in the accumulators.
    for isa in isas() {
        for &(m, k, n) in &[(9, 300, 33), (1, 1, 1), (8, 16, 16)] {
            let a = vec![u64::MAX; m * k];
            let b = vec![u64::MAX; k * n];
            let mut c = vec![u64::MAX; m * n];
            gemm_acc_isa(isa, &a, &b, &mut c, m, k, n);
            assert!(
                c.iter().all(|&v| v == (k as u64).wrapping_sub(1)),
                "{isa:?}"
            );
        }
    }
}

#[test]
fn empty_products_leave_c_alone() {
    for isa in isas() {
        let mut c = vec![7u64; 6];
        gemm_acc_isa(isa, &[], &[], &mut c, 2, 0, 3);
        assert_eq!(c, vec![7u64; 6]);
        gemm_acc_isa(isa, &[], &[1, 2, 3], &mut [], 0, 1, 3);
        gemm_acc_isa(isa, &[1, 2, 3], &[], &mut [], 3, 1, 0);
    }
    assert_eq!(gemm(&[], &[], 2, 0, 2), vec![0u64; 4]);
    assert!(gemm(&[], &[], 0, 0, 0).is_empty());
}

#[test]
fn gemm_and_reference_match_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for &(m, k, n) in &[(3, 7, 5), (8, 9, 1), (1, 1, 1), (17, 33, 13), (64, 45, 700)] {
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let mut want = vec![0u64; m * n];
        naive(&a, &b, &mut want, m, k, n);
        assert_eq!(gemm(&a, &b, m, k, n), want);
        let mut r = vec![0u64; m * n];
        gemm_acc_reference(&a, &b, &mut r, m, k, n);
        assert_eq!(r, want);
    }
}

/// The serial entry point on products large enough that `gemm_acc` would split them, packed
/// and streamed, inside a two-thread pool.
#[test]
fn serial_product_matches_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for &(m, k, n) in &[(64, 576, 72), (2, 576, 1100), (9, 5, 3)] {
        assert!(m * k * n < 1000 || m * k * n >= PAR_MIN_MACS);
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let c0 = rand_vec(&mut rng, m * n);
        let mut want = c0.clone();
        naive(&a, &b, &mut want, m, k, n);
        let mut got = c0;
        in_pool(2, || gemm_acc_serial(&a, &b, &mut got, m, k, n));
        assert_eq!(got, want, "{m}x{k}x{n}");
    }
}

#[test]
fn detected_path_is_supported() {
    assert!(Isa::detected().supported());
}

#[test]
fn splits_cover_exactly() {
    for len in 0..100 {
        for unit in [1, 4, 8, 16] {
            for parts in 1..7 {
                let r = split(len, unit, parts);
                let mut at = 0;
                for x in &r {
                    assert_eq!(x.start, at);
                    assert_eq!(x.start % unit, 0);
                    at = x.end;
                }
                assert_eq!(at, len);
                assert!(r.len() <= parts);
            }
        }
    }
    for k in 0..1000 {
        let kb = k_blocks(k, 256);
        assert_eq!(kb.iter().map(|b| b.1).sum::<usize>(), k);
        assert!(kb.iter().all(|b| (1..=256).contains(&b.1)));
    }
}

/// Splits `total` into `parts` random widths (some may be 0).
fn widths(rng: &mut ChaCha8Rng, total: usize, parts: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (1..parts).map(|_| rng.gen_range(0..=total)).collect();
    cuts.sort();
    let mut w = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([total]) {
        w.push(c - at);
        at = c;
    }
    w
}

/// Column blocks of a row-major m x k matrix, side by side.
fn col_parts(a: &[u64], m: usize, k: usize, widths: &[usize]) -> Vec<Vec<u64>> {
    let mut off = 0;
    widths
        .iter()
        .map(|&w| {
            off += w;
            (0..m)
                .flat_map(|i| a[i * k + off - w..i * k + off].iter().copied())
                .collect()
        })
        .collect()
}

/// [A_0 | A_1 | ...] packed once, times B in row parts split elsewhere, on every path,
/// serial and split between threads: the naive product of the whole matrices.
#[test]
fn packed_a_in_parts_times_b_in_parts() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for case in 0..60 {
        let big = case % 6 == 0;
        let lim = if big { 400 } else { 40 };
        let (m, k, n) = (
            rng.gen_range(1..=lim / 4 + 8),
            rng.gen_range(1..=lim),
            rng.gen_range(1..=lim),
        );
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let c0 = rand_vec(&mut rng, m * n);
        let mut want = c0.clone();
        naive(&a, &b, &mut want, m, k, n);
        let np = rng.gen_range(1..4);
        let aw = widths(&mut rng, k, np);
        let a_parts = col_parts(&a, m, k, &aw);
        let a_refs: Vec<&[u64]> = a_parts.iter().map(|p| p.as_slice()).collect();
        let nb = rng.gen_range(1..4);
        let bw = widths(&mut rng, k, nb);
        let mut at = 0;
        let b_refs: Vec<&[u64]> = bw
            .iter()
            .map(|&w| {
                at += w;
                &b[(at - w) * n..at * n]
            })
            .collect();
        for isa in isas() {
            let pa = PackedA::with_isa(isa, &a_refs, m, &aw);
            for threads in [1, 2] {
                let mut got = c0.clone();
                in_pool(threads, || pa.gemm_acc(rows(&b_refs, n), &mut got));
                assert!(
                    got == want,
                    "{} {m}x{k}x{n}, A {aw:?}, B {bw:?}",
                    isa.name()
                );
            }
        }
    }
}

/// A convolution's columns written out by the definition, tap by tap.
fn explicit_cols(c: &ConvCols) -> Vec<u64> {
    let n = c.n();
    let mut out = vec![0u64; c.k() * n];
    let [kh, kw] = c.kernel;
    for (s, map) in c.maps.iter().enumerate() {
        for ci in 0..c.chans {
            for ky in 0..kh {
                for kx in 0..kw {
                    let r = ((s * c.chans + ci) * kh + ky) * kw + kx;
                    for j in 0..n {
                        let (y, x) = (c.y0 + j / c.ow, j % c.ow);
                        let iy =
                            (y * c.stride[0] + ky * c.dilation[0]) as isize - c.pads[0] as isize;
                        let ix =
                            (x * c.stride[1] + kx * c.dilation[1]) as isize - c.pads[1] as isize;
                        if (0..c.h as isize).contains(&iy) && (0..c.w as isize).contains(&ix) {
                            out[r * n + j] = map[ci * c.h * c.w + iy as usize * c.w + ix as usize];
                        }
                    }
                }
            }
        }
    }
    out
}

/// Same-padded columns (the CNN's) are `im2col`'s, block by block of rows, odd and even
/// widths, channels not a multiple of anything.
#[test]
fn same_padded_columns_are_im2col() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..80 {
        let (c, h, w) = (
            rng.gen_range(1..6),
            rng.gen_range(1..12),
            rng.gen_range(1..20),
        );
        let k = [1, 3, 5][rng.gen_range(0..3)];
        let x = rand_vec(&mut rng, c * h * w);
        let row0 = rng.gen_range(0..h);
        let r = rng.gen_range(1..=h - row0);
        let mut want = Vec::new();
        crate::inference::im2col::im2col(&x, c, h, w, k, row0, r, &mut want);
        let cc = ConvCols::same(vec![&x], c, h, w, k, row0, r);
        assert!(
            cc.materialise(0..cc.k()) == want,
            "{c}x{h}x{w} k {k} rows {row0}+{r}"
        );
        assert!(explicit_cols(&cc) == want);
    }
}

/// A random window (strides, dilations, pads, output widths) over 1 to 3 stacked maps.
fn random_cols<'a>(
    rng: &mut ChaCha8Rng,
    maps: &'a [Vec<u64>],
    chans: usize,
    h: usize,
    w: usize,
) -> ConvCols<'a> {
    ConvCols {
        maps: maps.iter().map(|m| m.as_slice()).collect(),
        chans,
        h,
        w,
        kernel: [rng.gen_range(1..4), rng.gen_range(1..4)],
        stride: [rng.gen_range(1..3), rng.gen_range(1..4)],
        dilation: [rng.gen_range(1..3), rng.gen_range(1..3)],
        pads: [rng.gen_range(0..3), rng.gen_range(0..3)],
        y0: rng.gen_range(0..4),
        rows: rng.gen_range(1..6),
        ow: rng.gen_range(1..w + 3),
    }
}

/// Packed straight from the maps, any window: the product with the written-out columns,
/// on every path, serial and split (n past NC, k past KC in some cases), with A in parts
/// that match the stacked maps as a Beaver product's [U | A_i] does.
#[test]
fn products_with_columns_packed_from_the_maps() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for case in 0..80 {
        let big = case % 8 == 0;
        let (chans, h, w) = if big {
            (
                rng.gen_range(20..40),
                rng.gen_range(8..20),
                rng.gen_range(40..90),
            )
        } else {
            (
                rng.gen_range(1..5),
                rng.gen_range(1..10),
                rng.gen_range(1..20),
            )
        };
        let nmaps = rng.gen_range(1..4);
        let maps: Vec<Vec<u64>> = (0..nmaps)
            .map(|_| rand_vec(&mut rng, chans * h * w))
            .collect();
        let mut cc = random_cols(&mut rng, &maps, chans, h, w);
        if big {
            cc.rows = rng.gen_range(4..12);
        }
        let m = if case % 5 == 0 {
            rng.gen_range(1..5)
        } else {
            rng.gen_range(5..30)
        };
        packed_cols_product_is_the_naive_one(&mut rng, &cc, m);
    }
    // Tall products (n < m, a bottleneck conv on a small map) big enough to run on both
    // threads; the second takes the path that packs B once, whole, from the maps
    // (`pack_all`), each task its own rows (watched failing with its last column dropped).
    for (chans, h, w, m) in [(40, 6, 20, 64), (37, 5, 13, 90)] {
        let maps: Vec<Vec<u64>> = (0..3).map(|_| rand_vec(&mut rng, chans * h * w)).collect();
        let cc = ConvCols::same(
            maps.iter().map(|m| m.as_slice()).collect(),
            chans,
            h,
            w,
            3,
            1,
            1,
        );
        let (k, n) = (cc.k(), cc.n());
        assert!(n < m && m * k * n >= super::PAR_MIN_MACS, "{m} x {k} x {n}");
        packed_cols_product_is_the_naive_one(&mut rng, &cc, m);
    }
}

/// C + A cols, with A (m rows, random) in one part per map as [U | A_i] is, against the
/// naive product with the written-out columns, on every ISA, serial and on two threads.
fn packed_cols_product_is_the_naive_one(rng: &mut ChaCha8Rng, cc: &ConvCols<'_>, m: usize) {
    let (k, n, nmaps) = (cc.k(), cc.n(), cc.maps.len());
    let cols = explicit_cols(cc);
    assert!(cc.materialise(0..k) == cols, "{cc:?}");
    let a = rand_vec(rng, m * k);
    let c0 = rand_vec(rng, m * n);
    let mut want = c0.clone();
    naive(&a, &cols, &mut want, m, k, n);
    let aw = vec![k / nmaps; nmaps];
    let a_parts = col_parts(&a, m, k, &aw);
    let a_refs: Vec<&[u64]> = a_parts.iter().map(|p| p.as_slice()).collect();
    for isa in isas() {
        let pa = PackedA::with_isa(isa, &a_refs, m, &aw);
        for threads in [1, 2] {
            let mut got = c0.clone();
            in_pool(threads, || pa.gemm_acc(Rhs::Cols(cc), &mut got));
            assert!(got == want, "{} m {m}: {cc:?}", isa.name());
        }
    }
}
