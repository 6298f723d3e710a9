//! The right-hand matrix of a product: row-major values, or a convolution's columns made
//! while they are packed.
//!
//! A convolution's columns (im2col) repeat every input value once per tap: materialised,
//! a 3 x 3 layer's columns are nine copies of its map, written to memory and read back by
//! the packing. [`ConvCols`] describes them instead, and the packing reads each tap's
//! values straight from the map into the kernel's panels, so the map (read 9 times from
//! cache) is the only thing that comes from memory. Several maps may be stacked as one
//! matrix's row groups: a Beaver product's [cols(V + B); cols(V)] against [U | A].

use std::borrow::Cow;
use std::ops::Range;

/// The columns of a convolution's output rows `y0..y0 + rows` over maps stacked
/// vertically. Row (s, ci, ky, kx) of the matrix, column (y - y0) * ow + x, is
/// `maps[s][ci][y * stride[0] + ky * dilation[0] - pads[0]][x * stride[1] + kx * dilation[1]
/// - pads[1]]`, 0 where that lies outside the h x w map (padding is public: the same zero
/// in every share). This is [`crate::inference::im2col::im2col`] (same padding, stride 1)
/// and the graphs' `columns` (any stride, dilation and pads), without the copy.
#[derive(Clone, Debug)]
pub struct ConvCols<'a> {
    /// Each map's first `chans` channels, channel-major (chans x h x w at least).
    pub maps: Vec<&'a [u64]>,
    pub chans: usize,
    pub h: usize,
    pub w: usize,
    /// Taps per window (rows, columns).
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Padding before the first row and before the first column.
    pub pads: [usize; 2],
    /// First output row and output rows.
    pub y0: usize,
    pub rows: usize,
    /// Output columns per row.
    pub ow: usize,
}

impl<'a> ConvCols<'a> {
    /// A same-padded k x k convolution at stride 1 (k odd) over rows `y0..y0 + rows`: the
    /// columns `im2col` writes, of each map in turn.
    #[allow(clippy::too_many_arguments)]
    pub fn same(
        maps: Vec<&'a [u64]>,
        chans: usize,
        h: usize,
        w: usize,
        k: usize,
        y0: usize,
        rows: usize,
    ) -> Self {
        // A "same" convolution's callers pass whole maps and rows inside them (a row past
        // the end would silently read as padding).
        assert!(y0 + rows <= h, "output rows {y0}..{} of {h}", y0 + rows);
        assert!(maps.iter().all(|m| m.len() == chans * h * w));
        ConvCols {
            maps,
            chans,
            h,
            w,
            kernel: [k, k],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [k / 2, k / 2],
            y0,
            rows,
            ow: w,
        }
    }

    /// Rows of the matrix.
    pub fn k(&self) -> usize {
        self.maps.len() * self.chans * self.kernel[0] * self.kernel[1]
    }

    /// Columns of the matrix.
    pub fn n(&self) -> usize {
        self.rows * self.ow
    }

    /// Panics unless every map holds at least `chans` channels and stride and dilation are
    /// positive.
    pub(super) fn check(&self) {
        let len = self.chans * self.h * self.w;
        assert!(
            self.maps.iter().all(|m| m.len() >= len),
            "a map of fewer than {} x {} x {} values",
            self.chans,
            self.h,
            self.w
        );
        assert!(self.stride.iter().all(|&s| s > 0) && self.dilation.iter().all(|&d| d > 0));
    }

    /// Calls `f(j, run)` for the runs of row `r`'s columns `cols` in column order: `j`
    /// counts from `cols.start`; a run reads the map (its values every `stride[1]`-th of
    /// the slice from its first) or padding.
    #[inline(always)]
    fn runs(&self, r: usize, cols: Range<usize>, mut f: impl FnMut(usize, Run<'_>)) {
        let [kh, kw] = self.kernel;
        let per_map = self.chans * kh * kw;
        let (s, rest) = (r / per_map, r % per_map);
        let (ci, ky, kx) = (rest / (kh * kw), rest / kw % kh, rest % kw);
        let plane = &self.maps[s][ci * self.h * self.w..][..self.h * self.w];
        let s1 = self.stride[1];
        // Input column of output column 0, and the output columns whose input is inside.
        let off = (kx * self.dilation[1]) as isize - self.pads[1] as isize;
        let lo = ((-off).max(0) as usize).div_ceil(s1).min(self.ow);
        let hi = ((self.w as isize - off).max(0) as usize)
            .div_ceil(s1)
            .min(self.ow);
        let mut j = cols.start;
        while j < cols.end {
            let (yy, x0) = (j / self.ow, j % self.ow);
            let x1 = (x0 + cols.end - j).min(self.ow);
            let at = j - cols.start;
            let iy = ((self.y0 + yy) * self.stride[0] + ky * self.dilation[0]) as isize
                - self.pads[0] as isize;
            if iy < 0 || iy >= self.h as isize || lo >= hi {
                f(at, Run::Zero(x1 - x0));
            } else {
                // Zeros over x0..a, the map over a..b, zeros over b..x1.
                let a = x0.max(lo).min(x1);
                let b = x1.min(hi).max(a);
                if a > x0 {
                    f(at, Run::Zero(a - x0));
                }
                if b > a {
                    let row = &plane[iy as usize * self.w..][..self.w];
                    let first = ((a * s1) as isize + off) as usize;
                    let last = first + (b - a - 1) * s1;
                    f(at + a - x0, Run::Map(&row[first..=last]));
                }
                if x1 > b {
                    f(at + b - x0, Run::Zero(x1 - b));
                }
            }
            j += x1 - x0;
        }
    }

    /// Row `r`'s columns `cols` into `out` (cols.len() values).
    pub(super) fn row_into(&self, r: usize, cols: Range<usize>, out: &mut [u64]) {
        let s1 = self.stride[1];
        self.runs(r, cols, |j, run| match run {
            Run::Map(src) if s1 == 1 => out[j..j + src.len()].copy_from_slice(src),
            Run::Map(src) => {
                for (d, &v) in out[j..].iter_mut().zip(src.iter().step_by(s1)) {
                    *d = v;
                }
            }
            Run::Zero(len) => out[j..j + len].fill(0),
        });
    }

    /// Packs rows `ks`, columns `cols` into NR-column panels (as `pack::pack_b`): each tap's
    /// runs are copied from the map straight into the panels, split at panel edges.
    pub(super) fn pack<const NR: usize>(
        &self,
        ks: Range<usize>,
        cols: Range<usize>,
        dst: &mut [u64],
    ) {
        let kc = ks.len();
        debug_assert_eq!(dst.len(), cols.len().div_ceil(NR) * NR * kc);
        let s1 = self.stride[1];
        let ncols = cols.len();
        let pad = ncols.div_ceil(NR) * NR - ncols;
        for (t, r) in ks.enumerate() {
            self.runs(r, cols.clone(), |j, run| match run {
                Run::Map(src) => put_panels::<NR>(dst, kc, t, j, src, s1),
                Run::Zero(len) => zero_panels::<NR>(dst, kc, t, j, len),
            });
            // Columns past the last one up to the panel's edge read as zeros.
            zero_panels::<NR>(dst, kc, t, ncols, pad);
        }
    }

    /// Rows `ks` as a k x n row-major matrix (products that stream B in place).
    pub(super) fn materialise(&self, ks: Range<usize>) -> Vec<u64> {
        let n = self.n();
        let mut out = vec![0u64; ks.len() * n];
        for (t, r) in ks.enumerate() {
            self.row_into(r, 0..n, &mut out[t * n..][..n]);
        }
        out
    }
}

/// A run of one row's columns: values of the map, or padding.
enum Run<'s> {
    Map(&'s [u64]),
    Zero(usize),
}

/// Columns j.. of row t of a k-block packed in NR-column panels (column j at
/// (j / NR) * NR * kc + t * NR + j % NR) from `src`, every `s1`-th value.
#[inline(always)]
fn put_panels<const NR: usize>(
    dst: &mut [u64],
    kc: usize,
    t: usize,
    mut j: usize,
    mut src: &[u64],
    s1: usize,
) {
    while !src.is_empty() {
        let (q, o) = (j / NR, j % NR);
        let d = &mut dst[q * NR * kc + t * NR..][..NR];
        let take = (NR - o).min(src.len().div_ceil(s1));
        if s1 == 1 {
            if take == NR {
                // A whole panel row: a fixed-size move, not a call to memcpy.
                let s: &[u64; NR] = src[..NR].try_into().expect("NR values");
                *<&mut [u64; NR]>::try_from(d).expect("NR values") = *s;
            } else {
                d[o..o + take].copy_from_slice(&src[..take]);
            }
            src = &src[take..];
        } else {
            for (x, &v) in d[o..o + take].iter_mut().zip(src.iter().step_by(s1)) {
                *x = v;
            }
            src = &src[(take * s1).min(src.len())..];
        }
        j += take;
    }
}

/// Zeros over columns j..j + len of row t (as [`put_panels`]).
#[inline(always)]
fn zero_panels<const NR: usize>(
    dst: &mut [u64],
    kc: usize,
    t: usize,
    mut j: usize,
    mut len: usize,
) {
    while len > 0 {
        let (q, o) = (j / NR, j % NR);
        let take = (NR - o).min(len);
        dst[q * NR * kc + t * NR + o..][..take].fill(0);
        j += take;
        len -= take;
    }
}

/// The right-hand matrix (k x n) of a product.
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    /// Row-major values, in parts stacked vertically: each part holds whole rows of n.
    Rows { parts: &'a [&'a [u64]], n: usize },
    /// A convolution's columns, made as they are packed.
    Cols(&'a ConvCols<'a>),
}

impl<'a> Rhs<'a> {
    pub fn k(&self) -> usize {
        match self {
            Rhs::Rows { parts, n } => parts.iter().map(|p| p.len() / (*n).max(1)).sum(),
            Rhs::Cols(c) => c.k(),
        }
    }

    pub fn n(&self) -> usize {
        match self {
            Rhs::Rows { n, .. } => *n,
            Rhs::Cols(c) => c.n(),
        }
    }

    /// Panics unless the shape holds together (whole rows; maps large enough).
    pub(super) fn check(&self) {
        match self {
            Rhs::Rows { parts, n } => assert!(
                parts.iter().all(|p| p.len() % (*n).max(1) == 0),
                "a part of B that is not whole rows of {n}"
            ),
            Rhs::Cols(c) => c.check(),
        }
    }

    /// Row r of a row-major B (None for columns).
    #[inline]
    pub(super) fn row(&self, mut r: usize) -> Option<&'a [u64]> {
        match self {
            Rhs::Rows { parts, n } => {
                for p in parts.iter() {
                    let rows = p.len() / n;
                    if r < rows {
                        return Some(&p[r * n..][..*n]);
                    }
                    r -= rows;
                }
                unreachable!("row past the end of B")
            }
            Rhs::Cols(_) => None,
        }
    }

    /// Packs rows `ks`, columns `cols` into NR-column panels.
    pub(super) fn pack<const NR: usize>(
        &self,
        ks: Range<usize>,
        cols: Range<usize>,
        dst: &mut [u64],
    ) {
        match self {
            Rhs::Rows { .. } => {
                let kc = ks.len();
                let full = cols.len() / NR;
                let rest = cols.len() % NR;
                for (t, r) in ks.enumerate() {
                    let row = self.row(r).expect("rows");
                    let src = &row[cols.clone()];
                    for q in 0..full {
                        let s: &[u64; NR] = src[q * NR..][..NR].try_into().expect("NR values");
                        let d = &mut dst[q * NR * kc + t * NR..][..NR];
                        *<&mut [u64; NR]>::try_from(d).expect("NR values") = *s;
                    }
                    if rest > 0 {
                        let d = &mut dst[full * NR * kc + t * NR..][..NR];
                        d[..rest].copy_from_slice(&src[full * NR..]);
                        d[rest..].fill(0);
                    }
                }
            }
            Rhs::Cols(c) => c.pack::<NR>(ks, cols, dst),
        }
    }

    /// Rows `ks` as one k x n row-major slice: borrowed when they lie in one part.
    pub(super) fn contiguous(&self, ks: Range<usize>) -> Cow<'a, [u64]> {
        match self {
            Rhs::Rows { parts, n } => {
                let mut at = 0;
                for p in parts.iter() {
                    let rows = p.len() / n;
                    if ks.start >= at && ks.end <= at + rows {
                        return Cow::Borrowed(&p[(ks.start - at) * n..(ks.end - at) * n]);
                    }
                    at += rows;
                }
                Cow::Owned(
                    ks.flat_map(|r| self.row(r).expect("rows").iter().copied())
                        .collect(),
                )
            }
            Rhs::Cols(c) => Cow::Owned(c.materialise(ks)),
        }
    }
}
