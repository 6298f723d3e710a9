//! `bench-kernels`: the matrix-product kernels alone (`make bench-kernels`). For the layer
//! shapes of the CNN (im2col products) and of the MLP, G multiply-adds per second on one core
//! and on all of them: the u64 product on Z_2^64 (the blocked kernels, and the previous row
//! kernel for comparison) and float products through ndarray (the matrixmultiply crate),
//! against this core's peak: its clock, measured, times the documented throughput.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, LinalgScalar};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::{json, Value};

use super::Summary;
use crate::inference::im2col::im2col;
use crate::ring::matmul::{gemm_acc_isa, gemm_acc_reference, ConvCols, Isa, PackedA, Rhs};

/// Measure the matrix-product kernels (u64 on Z_2^64, f64 and f32) on the CNN's and the
/// MLP's layer shapes, per core and on all cores, against the core's peak.
#[derive(Args)]
pub struct BenchKernelsArgs {
    /// Small sizes and one repetition (seconds): checks that the benchmark runs.
    #[arg(long)]
    pub quick: bool,
    /// The u64 path to measure: avx512, avx2 or portable (default: the fastest this CPU has).
    #[arg(long)]
    pub isa: Option<String>,
    /// Repeat each measurement for at least this long and keep the best run.
    #[arg(long, default_value_t = 0.25)]
    pub min_secs: f64,
    /// Leave out the previous u64 kernel (the slowest part of the run).
    #[arg(long)]
    pub skip_reference: bool,
    /// Leave out the float products.
    #[arg(long)]
    pub skip_float: bool,
    /// Other shapes instead of the layers', as MxKxN,MxKxN,...
    #[arg(long, value_delimiter = ',')]
    pub shapes: Vec<String>,
}

/// A layer shape: C (m x n) += A (m x k) B (k x n).
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
}

/// The CNN's products are W (cout x cin*9) times an im2col block of 2^14 pixels (a 128-row
/// block of a 128-pixel-wide image); the MLP's are W (out x in) times a batch of 256 patches.
const SHAPES: [Shape; 7] = [
    Shape {
        name: "cnn 64->64 3x3",
        m: 64,
        k: 576,
        n: 16384,
    },
    Shape {
        name: "cnn 5->64 3x3",
        m: 64,
        k: 45,
        n: 16384,
    },
    Shape {
        name: "cnn 64->4 3x3",
        m: 4,
        k: 576,
        n: 16384,
    },
    Shape {
        name: "cnn 64->1 3x3",
        m: 1,
        k: 576,
        n: 16384,
    },
    Shape {
        name: "mlp 1521->512",
        m: 512,
        k: 1521,
        n: 256,
    },
    Shape {
        name: "mlp 512->512",
        m: 512,
        k: 512,
        n: 256,
    },
    Shape {
        name: "mlp 512->289",
        m: 289,
        k: 512,
        n: 256,
    },
];

/// Best time of `f` over at least `min_secs` (and at least two runs), after one warm-up run.
fn best_secs(min_secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 2 || start.elapsed().as_secs_f64() < min_secs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

/// c += a b through ndarray, split over the pool's threads along the longer side of C (one
/// thread: a single call).
fn float_product<T: LinalgScalar + Send + Sync>(a: &Array2<T>, b: &Array2<T>, c: &mut Array2<T>) {
    let threads = rayon::current_num_threads();
    if threads == 1 {
        general_mat_mul(T::one(), a, b, T::one(), c);
        return;
    }
    let (m, n) = c.dim();
    if n >= m {
        let w = n.div_ceil(threads);
        let parts: Vec<(ArrayView2<T>, ArrayViewMut2<T>)> = b
            .axis_chunks_iter(Axis(1), w)
            .zip(c.axis_chunks_iter_mut(Axis(1), w))
            .collect();
        parts
            .into_par_iter()
            .for_each(|(bb, mut cc)| general_mat_mul(T::one(), a, &bb, T::one(), &mut cc));
    } else {
        let h = m.div_ceil(threads);
        let parts: Vec<(ArrayView2<T>, ArrayViewMut2<T>)> = a
            .axis_chunks_iter(Axis(0), h)
            .zip(c.axis_chunks_iter_mut(Axis(0), h))
            .collect();
        parts
            .into_par_iter()
            .for_each(|(aa, mut cc)| general_mat_mul(T::one(), &aa, b, T::one(), &mut cc));
    }
}

fn gmacs(s: &Shape, secs: f64) -> f64 {
    (s.m * s.k * s.n) as f64 / secs / 1e9
}

/// Per-core peaks and what they come from.
struct Peak {
    clock_ghz: Option<f64>,
    /// u64 multiply-adds per cycle (documented), and what it rests on.
    u64_per_cycle: Option<(f64, &'static str)>,
    f64_per_cycle: f64,
    f32_per_cycle: f64,
    /// Measured issue rates, per cycle: vpmullq zmm, vfmadd231pd ymm.
    measured: Vec<(&'static str, f64)>,
    /// Measured u64 multiply-adds per cycle of vpmullq + vpaddq pairs (no memory).
    u64_mix_per_cycle: Option<f64>,
}

fn peak() -> Peak {
    #[cfg(target_arch = "x86_64")]
    {
        let clock = x86::clock_ghz();
        let mut measured = Vec::new();
        let (u64_per_cycle, u64_mix_per_cycle) = if Isa::Avx512.supported() {
            measured.push(("vpmullq zmm", x86::vpmullq_per_cycle(clock)));
            (
                Some((8.0, "documented: vpmullq zmm 1 per cycle x 8 lanes, Zen 4")),
                Some(x86::mul_add_macs_per_cycle(clock)),
            )
        } else {
            (None, None)
        };
        if std::is_x86_feature_detected!("fma") {
            measured.push(("vfmadd231pd ymm", x86::fma_per_cycle(clock)));
        }
        Peak {
            clock_ghz: Some(clock),
            u64_per_cycle,
            f64_per_cycle: 8.0,
            f32_per_cycle: 16.0,
            measured,
            u64_mix_per_cycle,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Peak {
        clock_ghz: None,
        u64_per_cycle: None,
        f64_per_cycle: 8.0,
        f32_per_cycle: 16.0,
        measured: Vec::new(),
        u64_mix_per_cycle: None,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::time::Instant;

    /// Runs of the timing loops: each is short (under a millisecond) and the best is kept,
    /// so that a run the scheduler shared with another process does not count.
    const RUNS: usize = 100;

    /// The best of [`RUNS`] measurements (the least disturbed by the other core).
    fn best(mut f: impl FnMut() -> f64) -> f64 {
        (0..RUNS).map(|_| f()).fold(0.0, f64::max)
    }

    /// Seconds for `iters` dependent adds (one per cycle).
    fn adds(iters: u64) -> f64 {
        let t = Instant::now();
        let mut x = 0u64;
        // SAFETY: register arithmetic only; no memory, no stack.
        unsafe {
            asm!(
                "2:",
                "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) x,
                n = inout(reg) iters / 8 => _,
                options(nomem, nostack),
            );
        }
        std::hint::black_box(x);
        t.elapsed().as_secs_f64()
    }

    /// The core's clock while busy: a chain of dependent adds runs one per cycle. The best of
    /// many short runs, after a long one (about 50 ms) that lets the clock ramp up.
    pub fn clock_ghz() -> f64 {
        adds(200_000_000);
        let iters = 2_000_000;
        best(|| iters as f64 / adds(iters) / 1e9)
    }

    /// Issue rate of an instruction on 12 independent registers, per cycle at `clock` GHz.
    macro_rules! rate {
        ($ins:literal, $r:literal, $clock:expr) => {{
            best(|| {
            let iters: u64 = 200_000;
            let t = Instant::now();
            // SAFETY: register arithmetic only; the caller checked the CPU's features.
            unsafe {
                asm!(
                    // A VEX xor of the xmm half clears the whole register.
                    "vpxor xmm0, xmm0, xmm0",
                    "vpxor xmm1, xmm1, xmm1",
                    "2:",
                    concat!($ins, " ", $r, "2, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "3, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "4, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "5, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "6, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "7, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "8, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "9, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "10, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "11, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "12, ", $r, "0, ", $r, "1"),
                    concat!($ins, " ", $r, "13, ", $r, "0, ", $r, "1"),
                    "dec {n}",
                    "jnz 2b",
                    n = inout(reg) iters => _,
                    out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                    out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                    out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                    out("xmm12") _, out("xmm13") _,
                    options(nomem, nostack),
                );
            }
            (iters * 12) as f64 / t.elapsed().as_secs_f64() / 1e9 / $clock
            })
        }};
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    fn vpmullq_rate(clock: f64) -> f64 {
        rate!("vpmullq", "zmm", clock)
    }

    #[target_feature(enable = "avx,fma")]
    fn fma_rate(clock: f64) -> f64 {
        rate!("vfmadd231pd", "ymm", clock)
    }

    /// The kernel's own instruction mix without memory: 12 independent vpmullq, each
    /// followed by the vpaddq that accumulates it. On Zen 4 the adds take issue slots from
    /// the multiplies, so this is what a u64 kernel can reach: 8 lanes x pairs per cycle.
    #[target_feature(enable = "avx512f,avx512dq")]
    fn mul_add_rate(clock: f64) -> f64 {
        best(|| mul_add_run(clock))
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    fn mul_add_run(clock: f64) -> f64 {
        let iters: u64 = 200_000;
        let t = Instant::now();
        // SAFETY: register arithmetic only; the caller checked the CPU's features.
        unsafe {
            asm!(
                "vpxor xmm0, xmm0, xmm0",
                "vpxor xmm1, xmm1, xmm1",
                "2:",
                "vpmullq zmm2, zmm0, zmm1", "vpaddq zmm14, zmm14, zmm2",
                "vpmullq zmm3, zmm0, zmm1", "vpaddq zmm15, zmm15, zmm3",
                "vpmullq zmm4, zmm0, zmm1", "vpaddq zmm16, zmm16, zmm4",
                "vpmullq zmm5, zmm0, zmm1", "vpaddq zmm17, zmm17, zmm5",
                "vpmullq zmm6, zmm0, zmm1", "vpaddq zmm18, zmm18, zmm6",
                "vpmullq zmm7, zmm0, zmm1", "vpaddq zmm19, zmm19, zmm7",
                "vpmullq zmm8, zmm0, zmm1", "vpaddq zmm20, zmm20, zmm8",
                "vpmullq zmm9, zmm0, zmm1", "vpaddq zmm21, zmm21, zmm9",
                "vpmullq zmm10, zmm0, zmm1", "vpaddq zmm22, zmm22, zmm10",
                "vpmullq zmm11, zmm0, zmm1", "vpaddq zmm23, zmm23, zmm11",
                "vpmullq zmm12, zmm0, zmm1", "vpaddq zmm24, zmm24, zmm12",
                "vpmullq zmm13, zmm0, zmm1", "vpaddq zmm25, zmm25, zmm13",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _,
                options(nomem, nostack),
            );
        }
        (iters * 12 * 8) as f64 / t.elapsed().as_secs_f64() / 1e9 / clock
    }

    pub fn mul_add_macs_per_cycle(clock: f64) -> f64 {
        // SAFETY: only called where AVX-512F/DQ were detected.
        unsafe { mul_add_rate(clock) }
    }

    pub fn vpmullq_per_cycle(clock: f64) -> f64 {
        // SAFETY: only called where AVX-512F/DQ were detected.
        unsafe { vpmullq_rate(clock) }
    }

    pub fn fma_per_cycle(clock: f64) -> f64 {
        // SAFETY: only called where FMA (hence AVX) was detected.
        unsafe { fma_rate(clock) }
    }
}

fn rand_f<T: From<f32>>(rng: &mut ChaCha8Rng, r: usize, c: usize) -> Array2<T> {
    Array2::from_shape_simple_fn((r, c), || T::from(rng.gen_range(-1.0f32..1.0)))
}

pub fn bench_kernels(a: BenchKernelsArgs) -> Result<Summary> {
    let isa = match a.isa.as_deref() {
        None => Isa::detected(),
        Some(s) => match Isa::ALL.into_iter().find(|i| i.name() == s) {
            Some(i) if i.supported() => i,
            Some(_) => bail!("--isa {s}: this CPU does not support it"),
            None => bail!("--isa {s}: expected avx512, avx2 or portable"),
        },
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = pool(1)?;
    let all = pool(threads)?;
    let min_secs = if a.quick { 0.0 } else { a.min_secs };
    let pk = peak();

    let mut lines = Vec::new();
    let per_core = |per_cycle: f64| pk.clock_ghz.map(|g| g * per_cycle);
    let u64_peak = pk.u64_per_cycle.and_then(|(p, _)| per_core(p));
    let f64_peak = per_core(pk.f64_per_cycle);
    let f32_peak = per_core(pk.f32_per_cycle);
    match pk.clock_ghz {
        Some(g) => lines.push(format!(
            "clock {g:.2} GHz (dependent adds), {threads} threads, u64 path {}",
            isa.name()
        )),
        None => lines.push(format!(
            "clock not measured on this architecture; {threads} threads, u64 path {}",
            isa.name()
        )),
    }
    let u64_mix = pk.u64_mix_per_cycle.and_then(per_core);
    if let (Some(p), Some((_, why))) = (u64_peak, pk.u64_per_cycle) {
        lines.push(format!("peak per core, u64: {p:.1} G MAC/s ({why})"));
    }
    if let (Some(x), Some(r)) = (u64_mix, pk.u64_mix_per_cycle) {
        lines.push(format!(
            "attainable per core, u64: {x:.1} G MAC/s (measured: vpmullq + vpaddq pairs, {r:.2} MAC per cycle)"
        ));
    }
    if let (Some(p64), Some(p32)) = (f64_peak, f32_peak) {
        lines.push(format!(
            "peak per core, float: f64 {p64:.1}, f32 {p32:.1} G MAC/s (documented: 2 FMA x 256 bits per cycle, Zen 4)"
        ));
    }
    for (ins, r) in &pk.measured {
        lines.push(format!("measured issue rate: {ins} {r:.2} per cycle"));
    }
    lines.push(String::new());
    lines.push(format!(
        "G multiply-adds per second; 1c: one core, {threads}c: all; %pk, %att: of the per-core peak, attainable"
    ));
    lines.push(format!(
        "{:<16} {:>17} | {:>10} {:>5} {:>5} {:>6} | {:>13} | {:>13} | {:>13}",
        "shape",
        "m x k x n",
        "u64 new 1c",
        "%pk",
        "%att",
        format!("{threads}c"),
        format!("u64 old 1c/{threads}c"),
        format!("f64 1c/{threads}c"),
        format!("f32 1c/{threads}c")
    ));

    let mut rng = ChaCha8Rng::seed_from_u64(26);
    let mut rows = Vec::new();
    let custom: Vec<Shape> = a
        .shapes
        .iter()
        .map(|t| {
            let d: Vec<usize> = t.split('x').filter_map(|x| x.parse().ok()).collect();
            match d[..] {
                [m, k, n] => Ok(Shape {
                    name: "custom",
                    m,
                    k,
                    n,
                }),
                _ => Err(anyhow::anyhow!("--shapes {t}: expected MxKxN")),
            }
        })
        .collect::<Result<_>>()?;
    let shapes = if custom.is_empty() {
        &SHAPES[..]
    } else {
        &custom[..]
    };
    for s in shapes {
        // --quick keeps the shapes' m and k but only 256 columns of the CNN's.
        let n = if a.quick { s.n.min(256) } else { s.n };
        let s = Shape { n, ..*s };
        let (m, k, n) = (s.m, s.k, s.n);
        let au: Vec<u64> = (0..m * k).map(|_| rng.gen()).collect();
        let bu: Vec<u64> = (0..k * n).map(|_| rng.gen()).collect();
        let mut cu = vec![0u64; m * n];
        let mut u64_run = |p: &rayon::ThreadPool, new: bool| {
            p.install(|| {
                best_secs(min_secs, || {
                    if new {
                        gemm_acc_isa(isa, &au, &bu, &mut cu, m, k, n)
                    } else {
                        gemm_acc_reference(&au, &bu, &mut cu, m, k, n)
                    }
                })
            })
        };
        let new1 = gmacs(&s, u64_run(&one, true));
        let newn = gmacs(&s, u64_run(&all, true));
        let old = if a.skip_reference {
            None
        } else {
            Some((
                gmacs(&s, u64_run(&one, false)),
                gmacs(&s, u64_run(&all, false)),
            ))
        };
        // The same product on both pools, on one set of operands.
        fn both<T: LinalgScalar + Send + Sync + From<f32>>(
            rng: &mut ChaCha8Rng,
            s: &Shape,
            pools: [&rayon::ThreadPool; 2],
            min_secs: f64,
        ) -> (f64, f64) {
            let (x, y) = (rand_f::<T>(rng, s.m, s.k), rand_f::<T>(rng, s.k, s.n));
            let mut z = Array2::<T>::zeros((s.m, s.n));
            let mut run = |p: &rayon::ThreadPool| {
                gmacs(
                    s,
                    p.install(|| best_secs(min_secs, || float_product(&x, &y, &mut z))),
                )
            };
            (run(pools[0]), run(pools[1]))
        }
        let (f64s, f32s) = if a.skip_float {
            ((f64::NAN, f64::NAN), (f64::NAN, f64::NAN))
        } else {
            (
                both::<f64>(&mut rng, &s, [&one, &all], min_secs),
                both::<f32>(&mut rng, &s, [&one, &all], min_secs),
            )
        };
        let pct = |p: Option<f64>| p.map_or("-".into(), |p| format!("{:.0}%", 100.0 * new1 / p));
        let pair = |x: (f64, f64)| format!("{:.2} / {:.2}", x.0, x.1);
        lines.push(format!(
            "{:<16} {:>17} | {:>10.2} {:>5} {:>5} {:>6.2} | {:>13} | {:>13} | {:>13}",
            s.name,
            format!("{m}x{k}x{n}"),
            new1,
            pct(u64_peak),
            pct(u64_mix),
            newn,
            old.map_or("-".into(), pair),
            pair(f64s),
            pair(f32s),
        ));
        rows.push(json!({
            "shape": s.name, "m": m, "k": k, "n": n,
            "u64": {"isa": isa.name(), "one_core": new1, "all_cores": newn},
            "u64_previous": old.map(|o| json!({"one_core": o.0, "all_cores": o.1})),
            "f64": {"one_core": f64s.0, "all_cores": f64s.1},
            "f32": {"one_core": f32s.0, "all_cores": f32s.1},
        }));
    }
    let (beaver_lines, beaver) = beaver_conv(isa, a.quick, min_secs, [&one, &all], &mut rng);
    lines.extend(beaver_lines);
    let peaks: Value = json!({
        "clock_ghz": pk.clock_ghz,
        "u64_per_core": u64_peak,
        "u64_basis": pk.u64_per_cycle.map(|p| p.1),
        "u64_attainable_per_core": u64_mix,
        "f64_per_core": f64_peak,
        "f32_per_core": f32_peak,
        "measured_issue_per_cycle": pk.measured.iter().map(|(i, r)| json!({"instruction": i, "rate": r})).collect::<Vec<_>>(),
    });
    Ok(Summary {
        lines,
        json: json!({
            "ok": true, "command": "bench-kernels", "unit": "G multiply-adds per second",
            "threads": threads, "quick": a.quick, "peak": peaks, "shapes": rows,
            "beaver_conv": beaver,
        }),
    })
}

/// A server's Beaver product for one 64 -> 64 3x3 layer on a 128 x 128 map (both parts of
/// its share: U cols(own) + A_i cols(V), 2 x 64 x 576 x 16384 multiply-adds), two ways:
/// im2col of both maps and two products (as before issue 51), and one product of [U | A_i],
/// packed once, with the columns packed straight from the maps. G multiply-adds per second
/// counting both parts' work, so the figures compare with the bare kernel's above.
fn beaver_conv(
    isa: Isa,
    quick: bool,
    min_secs: f64,
    pools: [&rayon::ThreadPool; 2],
    rng: &mut ChaCha8Rng,
) -> (Vec<String>, Value) {
    let (c, k) = (64, 3);
    let (h, w) = if quick { (8, 32) } else { (128, 128) };
    let (fan, n) = (c * k * k, h * w);
    let r = |rng: &mut ChaCha8Rng, len: usize| (0..len).map(|_| rng.gen()).collect::<Vec<u64>>();
    let (u, a_i, own, v) = (
        r(rng, c * fan),
        r(rng, c * fan),
        r(rng, c * n),
        r(rng, c * n),
    );
    let mut z = vec![0u64; c * n];
    let macs = 2.0 * (c * fan * n) as f64;
    let mut run = |p: &rayon::ThreadPool, folded: bool| {
        let (mut oc, mut vc) = (Vec::new(), Vec::new());
        let secs = p.install(|| {
            best_secs(min_secs, || {
                if folded {
                    let ua = PackedA::with_isa(isa, &[&u, &a_i], c, &[fan, fan]);
                    let cols = ConvCols::same(vec![&own, &v], c, h, w, k, 0, h);
                    ua.gemm_acc(Rhs::Cols(&cols), &mut z);
                } else {
                    im2col(&own, c, h, w, k, 0, h, &mut oc);
                    im2col(&v, c, h, w, k, 0, h, &mut vc);
                    gemm_acc_isa(isa, &u, &oc, &mut z, c, fan, n);
                    gemm_acc_isa(isa, &a_i, &vc, &mut z, c, fan, n);
                }
            })
        });
        macs / secs / 1e9
    };
    let two = [run(pools[0], false), run(pools[1], false)];
    let one = [run(pools[0], true), run(pools[1], true)];
    let lines = vec![
        String::new(),
        format!(
            "Beaver conv share, 64->64 3x3 on {h}x{w} (2 x 64x576x{n}), G multiply-adds/s 1c / all:"
        ),
        format!(
            "  im2col of both maps + two products: {:.2} / {:.2}",
            two[0], two[1]
        ),
        format!(
            "  one product, columns packed from the maps: {:.2} / {:.2}",
            one[0], one[1]
        ),
    ];
    let json = json!({
        "layer": format!("64->64 3x3 on {h}x{w}"),
        "two_products": {"one_core": two[0], "all_cores": two[1]},
        "one_product": {"one_core": one[0], "all_cores": one[1]},
    });
    (lines, json)
}
