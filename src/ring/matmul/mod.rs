//! Wrapping u64 matrix products (Z_2^64). ndarray has no integer GEMM, so this is one in the
//! way BLIS does it: B is packed into NR-column panels a block of KC x NC at a time, A into
//! MR-row panels, and a register-tiled MR x NR micro-kernel (`kernels`) runs over the blocks
//! while they are in cache. The micro-kernel is chosen at run time: AVX-512 (vpmullq), AVX2
//! or portable. The arithmetic is exact, so every path gives the same bits.

mod cols;
mod kernels;
mod pack;
mod reference;
mod stream;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;
use std::thread::LocalKey;

use rayon::prelude::*;

pub use cols::{ConvCols, Rhs};
use kernels::Kernel;
pub use reference::gemm_acc_reference;

/// Which micro-kernel a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F/DQ: 8 x 16 tiles of vpmullq.
    Avx512,
    /// AVX2: 4 x 4 tiles, each 64-bit product from two 32-bit multiplies.
    Avx2,
    /// Any CPU: 4 x 4 scalar tiles.
    Portable,
}

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            Isa::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest path this CPU supports (detected once).
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            Isa::ALL
                .into_iter()
                .find(|i| i.supported())
                .unwrap_or(Isa::Portable)
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// Cache blocks, in values. KC x NR of B (one packed panel) is read by every A panel of a
/// block in turn, KC x NC of B (a packed block) is reused across the rows of C, MC x KC of A
/// across the columns of a block.
#[derive(Clone, Copy, Debug)]
struct Blocks {
    kc: usize,
    mc: usize,
    nc: usize,
}

/// The micro-kernels are bound by their multiplies and adds (the 8 x 16 kernel reads 192
/// bytes of packed A and B per 16 vpmullq), so the blocks only have to keep the packed data
/// out of DRAM: a B block of 256 x 256 u64 (512 KiB) and an A block of 64 x 256 (128 KiB) fit
/// a 1 MiB L2. KC from 128 to 512, MC from 64 to 256 and NC from 128 to 1024 measured the
/// same within the noise of a shared machine; larger NC was slower on the convolution.
const BLOCKS: Blocks = Blocks {
    kc: 256,
    mc: 64,
    nc: 256,
};

/// Below this many multiply-adds a product runs on the calling thread: splitting it would
/// cost more than it saves.
const PAR_MIN_MACS: usize = 1 << 20;

/// c += a * b with a: m x k, b: k x n, c: m x n (row-major, wrapping).
pub fn gemm_acc(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    gemm_acc_isa(Isa::detected(), a, b, c, m, k, n)
}

/// [`gemm_acc`] on the calling thread alone, for callers that already keep every thread
/// busy with blocks of their own (the plaintext convolutions): a product split again inside
/// each block would only add hand-offs.
pub fn gemm_acc_serial(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    product(Isa::detected(), false, a, b, c, m, k, n)
}

/// a * b as a new matrix.
pub fn gemm(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    gemm_acc(a, b, &mut c, m, k, n);
    c
}

/// [`gemm_acc`] on a given path (tests and `bench-kernels` run each one).
///
/// Panics if the CPU does not support `isa`.
pub fn gemm_acc_isa(isa: Isa, a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    let threads = rayon::current_num_threads();
    let par = threads > 1 && m.saturating_mul(k).saturating_mul(n) >= PAR_MIN_MACS;
    product(isa, par, a, b, c, m, k, n)
}

/// c += a * b on `isa`, split between the pool's threads when `par`.
#[allow(clippy::too_many_arguments)]
fn product(isa: Isa, par: bool, a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    assert!(
        isa.supported(),
        "{} is not supported on this CPU",
        isa.name()
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    if m <= STREAM_MAX_M {
        return run_stream(isa, par, a, b, c, m, k, n);
    }
    let kb = k_blocks(k, BLOCKS.kc);
    let (mr, _) = panel_shape(isa);
    let mp = m.div_ceil(mr) * mr;
    with_scratch(&PACKED_A, mp * k, |ap| {
        pack_a_parts(mr, par, &[a], &[k], m, &kb, mp, ap);
        let rhs = Rhs::Rows { parts: &[b], n };
        run_packed(isa, par, ap, &kb, mp, rhs, c, m, n)
    })
}

/// (MR, NR) of `isa`'s micro-kernel.
fn panel_shape(isa: Isa) -> (usize, usize) {
    fn of<K: Kernel>() -> (usize, usize) {
        (K::MR, K::NR)
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => of::<kernels::Avx512>(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => of::<kernels::Avx2>(),
        _ => of::<kernels::Portable>(),
    }
}

/// k-blocks of A's parts side by side: each part split on its own, so that no block
/// straddles two parts (a block is packed from one part's rows).
fn part_blocks(widths: &[usize], kc: usize) -> Vec<(usize, usize)> {
    let mut off = 0;
    let mut kb = Vec::new();
    for &w in widths {
        kb.extend(k_blocks(w, kc).into_iter().map(|(k0, c)| (off + k0, c)));
        off += w;
    }
    kb
}

/// Packs A = [parts[0] | parts[1] | ...] (each m x widths[p], row-major) k-block by
/// k-block into `dst` (mp * k values), as `pack_all` lays it out.
#[allow(clippy::too_many_arguments)]
fn pack_a_parts(
    mr: usize,
    par: bool,
    parts: &[&[u64]],
    widths: &[usize],
    m: usize,
    kb: &[(usize, usize)],
    mp: usize,
    dst: &mut [u64],
) {
    pack_all(mr, m, kb, mp, par, dst, |ks, rows, d| {
        let mut off = 0;
        for (p, &w) in parts.iter().zip(widths) {
            if ks.start < off + w {
                debug_assert!(ks.end <= off + w, "a k-block straddles two parts of A");
                return pack::pack_a(mr, p, w, ks.start - off..ks.end - off, rows, d);
            }
            off += w;
        }
        unreachable!("a k-block past A's columns")
    });
}

/// A matrix A = [A_0 | A_1 | ...] packed once for every product it takes part in: a
/// layer's [U | A_i] of a Beaver product, used by each block of the layer's output rows
/// (and, for an MLP, by every batch of the job), so its packing is paid once.
#[derive(Debug)]
pub struct PackedA {
    isa: Isa,
    m: usize,
    k: usize,
    widths: Vec<usize>,
    kb: Vec<(usize, usize)>,
    mp: usize,
    /// The panels (empty for m <= STREAM_MAX_M).
    data: Vec<u64>,
    /// The parts as given, for m <= STREAM_MAX_M (streamed, not packed).
    raw: Vec<Vec<u64>>,
}

impl PackedA {
    /// [parts[0] | parts[1] | ...], each m x widths[p] row-major, packed for this CPU.
    pub fn new(parts: &[&[u64]], m: usize, widths: &[usize]) -> PackedA {
        PackedA::with_isa(Isa::detected(), parts, m, widths)
    }

    /// [`PackedA::new`] for a given path (tests).
    ///
    /// Panics if the CPU does not support `isa` or a part is not m x its width.
    pub fn with_isa(isa: Isa, parts: &[&[u64]], m: usize, widths: &[usize]) -> PackedA {
        assert!(
            isa.supported(),
            "{} is not supported on this CPU",
            isa.name()
        );
        assert_eq!(parts.len(), widths.len());
        for (p, &w) in parts.iter().zip(widths) {
            assert_eq!(p.len(), m * w, "a part of A that is not m x its width");
        }
        let k = widths.iter().sum::<usize>();
        let kb = part_blocks(widths, BLOCKS.kc);
        let (mr, _) = panel_shape(isa);
        let mp = m.div_ceil(mr) * mr;
        let (mut data, mut raw) = (Vec::new(), Vec::new());
        if m <= STREAM_MAX_M {
            raw = parts.iter().map(|p| p.to_vec()).collect();
        } else {
            data = vec![0u64; mp * k];
            let par = rayon::current_num_threads() > 1 && mp * k >= PAR_MIN_MACS / 16;
            pack_a_parts(mr, par, parts, widths, m, &kb, mp, &mut data);
        }
        PackedA {
            isa,
            m,
            k,
            widths: widths.to_vec(),
            kb,
            mp,
            data,
            raw,
        }
    }

    /// Rows of A.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Columns of A.
    pub fn k(&self) -> usize {
        self.k
    }

    /// c += A * b with c: m x b.n() (row-major, wrapping), split between the pool's
    /// threads when large enough.
    ///
    /// Panics if b does not have A's k rows or c is not m x b.n().
    pub fn gemm_acc(&self, b: Rhs<'_>, c: &mut [u64]) {
        let n = b.n();
        let threads = rayon::current_num_threads();
        let macs = self.m.saturating_mul(self.k).saturating_mul(n);
        self.product(threads > 1 && macs >= PAR_MIN_MACS, b, c)
    }

    fn product(&self, par: bool, b: Rhs<'_>, c: &mut [u64]) {
        let n = b.n();
        assert_eq!(c.len(), self.m * n);
        if n == 0 {
            // Row parts of no columns have no row count to check.
            return;
        }
        b.check();
        assert_eq!(b.k(), self.k, "B's rows are not A's columns");
        if self.m == 0 || self.k == 0 {
            return;
        }
        if self.m <= STREAM_MAX_M {
            // Part by part, each against its own rows of B (made whole when they are a
            // convolution's columns: products of so few rows are bound by reading B).
            let mut off = 0;
            for (a, &w) in self.raw.iter().zip(&self.widths) {
                if w > 0 {
                    let bp = b.contiguous(off..off + w);
                    run_stream(self.isa, par, a, &bp, c, self.m, w, n);
                }
                off += w;
            }
            return;
        }
        run_packed(
            self.isa, par, &self.data, &self.kb, self.mp, b, c, self.m, n,
        )
    }
}

/// The blocked product on `isa` (supported, shapes checked, none of m, k, n zero) with A
/// packed (`ap`: `kb`'s blocks of mp rows).
#[allow(clippy::too_many_arguments)]
fn run_packed(
    isa: Isa,
    par: bool,
    ap: &[u64],
    kb: &[(usize, usize)],
    mp: usize,
    b: Rhs<'_>,
    c: &mut [u64],
    m: usize,
    n: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run::<kernels::Avx512>(par, ap, kb, mp, b, c, m, n, BLOCKS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run::<kernels::Avx2>(par, ap, kb, mp, b, c, m, n, BLOCKS),
        _ => run::<kernels::Portable>(par, ap, kb, mp, b, c, m, n, BLOCKS),
    }
}

/// Products with at most this many rows stream B instead of packing it (`stream`).
const STREAM_MAX_M: usize = 4;

/// A product with m <= STREAM_MAX_M, by strips of columns (split between the threads).
#[allow(clippy::too_many_arguments)]
fn run_stream(
    isa: Isa,
    par: bool,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
    m: usize,
    k: usize,
    n: usize,
) {
    let threads = rayon::current_num_threads();
    let cp = CPtr(c.as_mut_ptr());
    let strip_cols = stream::strip_cols(m);
    let task = |cols: Range<usize>| {
        for s in cols.clone().step_by(strip_cols) {
            let strip = s..(s + strip_cols).min(cols.end);
            // SAFETY: each task has its own columns of C; `isa` is supported (checked by
            // the caller).
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => stream::strip_avx512(a, b, cp.get(), m, k, n, strip),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => stream::strip_avx2(a, b, cp.get(), m, k, n, strip),
                    _ => stream::strip_portable(a, b, cp.get(), m, k, n, strip),
                }
            }
        }
    };
    if par {
        // At least one task per thread, even when n is a single strip (m = 1).
        let tasks = split(n, 64, n.div_ceil(strip_cols).max(threads));
        tasks.into_par_iter().for_each(task);
    } else {
        task(0..n);
    }
}

/// C's base pointer, shared by the threads that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct CPtr(*mut u64);

// SAFETY: every task writes only its own rectangle of C (`run` hands out disjoint ones), and
// the borrow of C outlives the parallel section.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// A method, not `.0`: a closure that names the field would capture the bare pointer,
    /// which is not Send.
    fn get(self) -> *mut u64 {
        self.0
    }
}

/// Where a block's packed B comes from.
enum BSrc<'a> {
    /// Packed by the task itself, a block at a time, into its own buffer.
    Raw { b: Rhs<'a>, buf: &'a mut [u64] },
    /// Packed once for everyone (`pack_all`); `np` is n rounded up to NR.
    Packed { bp: &'a [u64], np: usize },
}

/// Splits 0..k into near-equal blocks of at most kc (none for k = 0).
fn k_blocks(k: usize, kc: usize) -> Vec<(usize, usize)> {
    let nb = k.div_ceil(kc);
    (0..nb)
        .map(|i| {
            let (s, e) = (i * k / nb, (i + 1) * k / nb);
            (s, e - s)
        })
        .collect()
}

/// Splits 0..len into `parts` ranges (or fewer) whose starts are multiples of `unit`.
fn split(len: usize, unit: usize, parts: usize) -> Vec<Range<usize>> {
    let units = len.div_ceil(unit);
    let parts = parts.clamp(1, units.max(1));
    (0..parts)
        .map(|p| ((p * units / parts) * unit)..((p + 1) * units / parts * unit).min(len))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Panels packed per parallel task: about 64 KiB of values.
fn panels_per_task(panel_len: usize) -> usize {
    (8192 / panel_len).max(1)
}

/// A (or B) packed whole, k-block after k-block: block (k0, kc) at k0 * padded, its panel
/// for rows (columns) i.. at k0 * padded + i * kc. `width` is the panel width (MR or NR),
/// `len` the rows of A (columns of B), `pack(ks, range, dst)` packs one run of panels.
fn pack_all(
    width: usize,
    len: usize,
    kb: &[(usize, usize)],
    padded: usize,
    par: bool,
    dst: &mut [u64],
    pack: impl Fn(Range<usize>, Range<usize>, &mut [u64]) + Sync,
) {
    let k = kb.iter().map(|&(_, kc)| kc).sum::<usize>();
    let mut rest = &mut dst[..padded * k];
    for &(k0, kc) in kb {
        let (blk, r) = rest.split_at_mut(padded * kc);
        rest = r;
        let g = panels_per_task(width * kc) * width;
        let task = |(t, d): (usize, &mut [u64])| {
            let i0 = t * g;
            pack(k0..k0 + kc, i0..(i0 + g).min(len), d)
        };
        if par {
            blk.par_chunks_mut(g * kc).enumerate().for_each(task);
        } else {
            blk.chunks_mut(g * kc).enumerate().for_each(task);
        }
    }
}

/// Splits the product into tasks over C and runs them, A packed (`ap`).
///
/// Long, flat products (a convolution: m = 64 output channels, n = 16,384 pixels) are split
/// along n: each task packs its own columns of B, block by block, while they are hot, and
/// all share A, packed once. Tall ones (an MLP layer: m = 512, n = 256) are split along m:
/// B is packed once and shared, and each task takes its own rows. Either way no value of A
/// or B is packed twice.
#[allow(clippy::too_many_arguments)]
fn run<K: Kernel>(
    par: bool,
    ap: &[u64],
    kb: &[(usize, usize)],
    mp: usize,
    b: Rhs<'_>,
    c: &mut [u64],
    m: usize,
    n: usize,
    bl: Blocks,
) {
    let threads = rayon::current_num_threads();
    let cp = CPtr(c.as_mut_ptr());
    let buf_len = bl.kc * bl.nc.div_ceil(K::NR) * K::NR;
    if !par {
        with_scratch(&BLOCK_B, buf_len, |buf| {
            let mut src = BSrc::Raw { b, buf };
            // SAFETY: one task over the whole of C, which the caller lent us mutably.
            unsafe { block::<K>(ap, mp, &mut src, cp, m, n, kb, 0..m, 0..n, bl) };
        });
    } else if n >= m {
        // Whole NC blocks, a few per task: a task prefetches its next block while it
        // works on one (see `block`), and a few tasks per thread even out a busy core.
        let tasks = split(n, bl.nc, 4 * threads);
        tasks.into_par_iter().for_each(|cols| {
            with_scratch(&BLOCK_B, buf_len, |buf| {
                let mut src = BSrc::Raw { b, buf };
                // SAFETY: the tasks' column ranges are disjoint.
                unsafe { block::<K>(ap, mp, &mut src, cp, m, n, kb, 0..m, cols, bl) };
            })
        });
    } else {
        let np = n.div_ceil(K::NR) * K::NR;
        let k = kb.iter().map(|&(_, kc)| kc).sum::<usize>();
        with_scratch(&PACKED_B, np * k, |bp| {
            pack_all(K::NR, n, kb, np, par, bp, |ks, cols, d| {
                pack_b(K::NR, &b, ks, cols, d)
            });
            let bp = &*bp;
            // MC-row tasks, as many for each thread (289 rows in 5 tasks kept one
            // thread idle for a fifth of the time).
            let tasks = split(m, K::MR, m.div_ceil(bl.mc).div_ceil(threads) * threads);
            tasks.into_par_iter().for_each(|rows| {
                let mut src = BSrc::Packed { bp, np };
                // SAFETY: the tasks' row ranges are disjoint.
                unsafe { block::<K>(ap, mp, &mut src, cp, m, n, kb, rows, 0..n, bl) };
            });
        });
    }
}

/// Packs rows `ks`, columns `cols` of b into `nr`-column panels (`nr` a kernel's NR).
fn pack_b(nr: usize, b: &Rhs<'_>, ks: Range<usize>, cols: Range<usize>, dst: &mut [u64]) {
    // A constant panel width in each arm: whole panel rows are fixed-size moves.
    match nr {
        16 => b.pack::<16>(ks, cols, dst),
        4 => b.pack::<4>(ks, cols, dst),
        _ => unreachable!("no kernel has {nr}-column panels"),
    }
}

thread_local! {
    /// A packed whole (`pack_all`).
    static PACKED_A: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// B packed whole (`pack_all`).
    static PACKED_B: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// One block of B, packed by a task (`BSrc::Raw`).
    static BLOCK_B: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Buffers up to this many values are kept for the thread's next product.
const SCRATCH_KEEP: usize = 1 << 22;

/// Runs `f` on `len` values of the thread's buffer `slot`, kept for the next product: a
/// fresh allocation of a few MB per product cost its page faults and zeroing (4% of an MLP
/// product). The values are stale; every caller writes all it reads. The buffer is moved
/// out while in use, so a product nested in `f` (rayon may run another task on this thread
/// while it waits) gets a buffer of its own.
fn with_scratch<R>(
    slot: &'static LocalKey<RefCell<Vec<u64>>>,
    len: usize,
    f: impl FnOnce(&mut [u64]) -> R,
) -> R {
    let mut v = slot.take();
    if v.len() < len {
        v.resize(len, 0);
    }
    let r = f(&mut v[..len]);
    if v.len() <= SCRATCH_KEEP {
        slot.set(v);
    }
    r
}

/// C[rows, cols] += A[rows, :] * B[:, cols], blocked. `rows.start` is a multiple of MR and
/// `cols.start` of NR.
///
/// # Safety
/// `c` points to the m x n matrix C, and no one else reads or writes C[rows, cols] meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn block<K: Kernel>(
    ap: &[u64],
    mp: usize,
    src: &mut BSrc,
    c: CPtr,
    m: usize,
    n: usize,
    kb: &[(usize, usize)],
    rows: Range<usize>,
    cols: Range<usize>,
    bl: Blocks,
) {
    debug_assert!(rows.start.is_multiple_of(K::MR) && cols.start.is_multiple_of(K::NR));
    let c = c.get();
    // The blocks of B in the order they are used: (jc, nc, k0, kc).
    let steps: Vec<(usize, usize, usize, usize)> = cols
        .clone()
        .step_by(bl.nc)
        .flat_map(|jc| {
            kb.iter()
                .map(move |&(k0, kc)| (jc, bl.nc.min(cols.end - jc), k0, kc))
        })
        .collect();
    let raw_b = match src {
        BSrc::Raw { b, .. } => Some(*b),
        BSrc::Packed { .. } => None,
    };
    let tiles_per_block = |nc: usize| nc.div_ceil(K::NR) * rows.len().div_ceil(K::MR);
    for (si, &(jc, nc, k0, kc)) in steps.iter().enumerate() {
        let bblk: &[u64] = match src {
            BSrc::Raw { b, buf } => {
                let len = nc.div_ceil(K::NR) * K::NR * kc;
                pack_b(K::NR, b, k0..k0 + kc, jc..jc + nc, &mut buf[..len]);
                &buf[..len]
            }
            BSrc::Packed { bp, np } => &bp[k0 * *np + jc * kc..][..nc.div_ceil(K::NR) * K::NR * kc],
        };
        // While this block is multiplied, the next one's rows of B are prefetched, a few
        // per tile, so that packing it reads from cache: packing straight from memory ran
        // at a third of the memory's streaming speed (short runs of many rows).
        let next = match (raw_b, steps.get(si + 1)) {
            (Some(b), Some(&(jn, ncn, kn, kcn))) => Some((b, jn, ncn, kn, kcn)),
            _ => None,
        };
        let ntiles = tiles_per_block(nc);
        let mut tile_i = 0;
        let ablk = &ap[k0 * mp..][..mp * kc];
        for ic in rows.clone().step_by(bl.mc) {
            let mc = bl.mc.min(rows.end - ic);
            for jr in (0..nc).step_by(K::NR) {
                let bpan = &bblk[jr * kc..][..K::NR * kc];
                let cols_here = K::NR.min(n - jc - jr);
                for ir in (ic..ic + mc).step_by(K::MR) {
                    if let Some((b, jn, ncn, kn, kcn)) = next {
                        for t in (tile_i * kcn / ntiles)..((tile_i + 1) * kcn / ntiles) {
                            // Row-major B only: a convolution's columns read its map (a
                            // ninth of the bytes), which stays in cache across the taps.
                            if let Some(row) = b.row(kn + t) {
                                prefetch_l2(&row[jn..][..ncn]);
                            }
                        }
                    }
                    tile_i += 1;
                    let apan = &ablk[ir * kc..][..K::MR * kc];
                    // SAFETY: the panels are whole slices of kc x MR and kc x NR; the
                    // tile is rows ir.. (fewer than MR past m: clipped) and columns
                    // jc + jr.. (clipped at n), inside C[rows, cols], which the caller
                    // gives us alone; `run` chose K only for a CPU that supports it.
                    unsafe {
                        K::tile(
                            kc,
                            apan.as_ptr(),
                            bpan.as_ptr(),
                            c.add(ir * n + jc + jr),
                            n,
                            K::MR.min(m - ir),
                            cols_here,
                        )
                    };
                }
            }
        }
    }
}

/// Asks for the cache lines of `s` to be brought into L2 (nothing on other targets).
#[inline]
fn prefetch_l2(s: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    for l in (0..s.len()).step_by(8) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: a prefetch is only a hint and never faults; the address is inside `s`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(s.as_ptr().add(l) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}
