//! Coefficient packing of a matrix product W (m x k) times X (k x n) into polynomial
//! products, as CHEETAH does (Huang et al., USENIX Security 2022, section 4): no rotations,
//! no slots. A block of X (d inner rows by c columns) and a block of W (r rows by the same d)
//! become polynomials
//!
//!   X~(t) = sum_{col < c} sum_{j < d} X[j][col] t^(col d + j)
//!   W~(t) = sum_{row < r} sum_{j < d} W[row][j] t^(row d c + d - 1 - j)
//!
//! with r d c <= N, and the coefficient of t^(row d c + col d + d - 1) in W~ X~ (mod t^N + 1)
//! is sum_j W[row][j] X[j][col]: every other pair (j, j') lands elsewhere, and the products
//! that wrap past t^N (with a sign) land below t^(d - 1), where no result lies. Blocks along
//! k are summed in the ciphertext; the other coefficients hold partial sums of W's and X's
//! values and are masked before a result is returned (`product.rs`).

/// How a product W (m x k) x X (k x n) is cut into polynomial products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// N, the polynomials' degree.
    pub degree: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// W's rows per polynomial (r), the inner dimension per polynomial (d), X's columns per
    /// polynomial (c); r d c <= N.
    pub rows: usize,
    pub inner: usize,
    pub cols: usize,
}

impl Blocks {
    /// The cut that costs the least time, each step weighed by its measured time relative to
    /// one ciphertext x plaintext product (docs/benchmarks.md, "Dealer-free offline": at
    /// either parameter set an encryption and its bytes weigh ~60 products, a returned block
    /// ~115 (the re-randomisation and the flood), a plaintext's encoding ~6). Public: both
    /// parties compute it from the shapes.
    pub fn choose(degree: usize, m: usize, k: usize, n: usize) -> Blocks {
        assert!(m > 0 && k > 0 && n > 0, "an empty product");
        let mut best: Option<(usize, Blocks)> = None;
        let mut inner = 1;
        while inner <= degree && inner < 2 * k {
            let mut cols = 1;
            while inner * cols <= degree && cols < 2 * n {
                let rows = (degree / (inner * cols)).min(m);
                let b = Blocks {
                    degree,
                    m,
                    k,
                    n,
                    rows,
                    inner: inner.min(k),
                    cols: cols.min(n),
                };
                let cost = 60 * b.x_blocks() + 115 * b.returns() + 6 * b.encodes() + b.products();
                if best.is_none_or(|(c, _)| cost < c) {
                    best = Some((cost, b));
                }
                cols *= 2;
            }
            inner *= 2;
        }
        best.expect("at least one cut").1
    }

    pub fn inner_blocks(&self) -> usize {
        self.k.div_ceil(self.inner)
    }
    pub fn row_blocks(&self) -> usize {
        self.m.div_ceil(self.rows)
    }
    pub fn col_blocks(&self) -> usize {
        self.n.div_ceil(self.cols)
    }
    /// Ciphertexts of X sent for evaluation.
    pub fn x_blocks(&self) -> usize {
        self.inner_blocks() * self.col_blocks()
    }
    /// Ciphertexts of results returned.
    pub fn returns(&self) -> usize {
        self.row_blocks() * self.col_blocks()
    }
    /// W's plaintexts encoded (each once, for all its column blocks).
    pub fn encodes(&self) -> usize {
        self.row_blocks() * self.inner_blocks()
    }
    /// Ciphertext x plaintext products.
    pub fn products(&self) -> usize {
        self.returns() * self.inner_blocks()
    }

    /// X's block (inner block `kb`, column block `cb`) as a polynomial; X row-major k x n.
    pub fn x_poly(&self, x: &[u64], kb: usize, cb: usize, modulus_mask: u64) -> Vec<u64> {
        let mut p = vec![0u64; self.degree];
        for col in 0..self.cols {
            let gc = cb * self.cols + col;
            if gc >= self.n {
                break;
            }
            for j in 0..self.inner {
                let gj = kb * self.inner + j;
                if gj >= self.k {
                    break;
                }
                p[col * self.inner + j] = x[gj * self.n + gc] & modulus_mask;
            }
        }
        p
    }

    /// W's block (row block `rb`, inner block `kb`) as a polynomial; W row-major m x k.
    pub fn w_poly(&self, w: &[u64], rb: usize, kb: usize, modulus_mask: u64) -> Vec<u64> {
        let mut p = vec![0u64; self.degree];
        for row in 0..self.rows {
            let gr = rb * self.rows + row;
            if gr >= self.m {
                break;
            }
            for j in 0..self.inner {
                let gj = kb * self.inner + j;
                if gj >= self.k {
                    break;
                }
                p[row * self.inner * self.cols + self.inner - 1 - j] =
                    w[gr * self.k + gj] & modulus_mask;
            }
        }
        p
    }

    /// The coefficients of a returned block (row block `rb`, column block `cb`) that hold
    /// results, with the result's index in the m x n row-major product.
    pub fn results(&self, rb: usize, cb: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows).flat_map(move |row| {
            (0..self.cols).filter_map(move |col| {
                let (gr, gc) = (rb * self.rows + row, cb * self.cols + col);
                (gr < self.m && gc < self.n).then_some((
                    row * self.inner * self.cols + col * self.inner + self.inner - 1,
                    gr * self.n + gc,
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEGREE: usize = 8192;

    /// a * b mod (t^N + 1), coefficients mod 2^64.
    fn negacyclic(a: &[u64], b: &[u64]) -> Vec<u64> {
        let mut out = vec![0u64; DEGREE];
        let nz: Vec<usize> = (0..DEGREE).filter(|&i| a[i] != 0).collect();
        for (j, &bj) in b.iter().enumerate() {
            if bj == 0 {
                continue;
            }
            for &i in &nz {
                let v = a[i].wrapping_mul(bj);
                let d = i + j;
                if d < DEGREE {
                    out[d] = out[d].wrapping_add(v);
                } else {
                    out[d - DEGREE] = out[d - DEGREE].wrapping_sub(v);
                }
            }
        }
        out
    }

    #[test]
    fn every_cut_puts_each_result_where_it_says() {
        let mut s = 7u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s
        };
        for &(m, k, n) in &[
            (5, 37, 9),
            (3, 1, 1),
            (1, 300, 2),
            (40, 17, 64),
            (3072, 1521, 64),
        ] {
            let b = Blocks::choose(DEGREE, m, k, n);
            assert!(b.rows * b.inner * b.cols <= DEGREE, "{b:?}");
            if m * k * n > 1 << 16 {
                continue; // the paper network's first layer: its cut, not its schoolbook
            }
            let w: Vec<u64> = (0..m * k).map(|_| next()).collect();
            let x: Vec<u64> = (0..k * n).map(|_| next()).collect();
            let mut want = vec![0u64; m * n];
            for i in 0..m {
                for c in 0..n {
                    want[i * n + c] = (0..k).fold(0u64, |s, j| {
                        s.wrapping_add(w[i * k + j].wrapping_mul(x[j * n + c]))
                    });
                }
            }
            let mut got = vec![0u64; m * n];
            let mut seen = vec![0u32; m * n];
            for rb in 0..b.row_blocks() {
                for cb in 0..b.col_blocks() {
                    let mut acc = vec![0u64; DEGREE];
                    for kb in 0..b.inner_blocks() {
                        let p = negacyclic(
                            &b.w_poly(&w, rb, kb, u64::MAX),
                            &b.x_poly(&x, kb, cb, u64::MAX),
                        );
                        acc.iter_mut()
                            .zip(&p)
                            .for_each(|(a, v)| *a = a.wrapping_add(*v));
                    }
                    for (coef, at) in b.results(rb, cb) {
                        got[at] = acc[coef];
                        seen[at] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&s| s == 1),
                "{m}x{k}x{n}: each result once"
            );
            assert_eq!(got, want, "{m}x{k}x{n} cut as {b:?}");
        }
    }
}
