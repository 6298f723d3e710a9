//! A matrix triple made by the two servers alone: C = A B mod 2^bits with A = A0 + A1
//! (dout x din) and B = B0 + B1 (din x n) each party's own shares, party 0's share of C
//! its own too (`C0`, from its seed's stream as the dealer's files have it), and party 1
//! leaving with C1 = C - C0: exactly what a dealer knowing both seeds writes in party 1's
//! file, so the online phase is unchanged.
//!
//! C - C0 = A0 B0 + A0 B1 + A1 B0 + A1 B1 - C0. Party 1 holds the key (`KeyHolder`), party 0
//! evaluates (`Evaluator`); two products (`product.rs`):
//! 1. W = A0, X = B1, added: A0 B0 - C0 - R. Party 1 reads A0 B1 + A0 B0 - C0 - R.
//! 2. W = B0^T, X = A1^T (the transposed product (A1 B0)^T), added: R^T. Party 1 reads
//!    (A1 B0)^T + R^T.
//!
//! R (dout x n) is fresh and uniform, drawn by party 0 for this triple and forgotten: the
//! second result alone would show party 1 A1 B0, a function of party 0's mask share; C0 hides
//! the first (uniform, never sent, used once: its stream is the triple's own). Party 1 adds
//! A1 B1 to the sum of the two.

use anyhow::{ensure, Context, Result};
use fhe::bfv::{PublicKey, SecretKey};
use rand09::{CryptoRng, Rng};

use super::he::He;
use super::he::{Guard, Set};
use super::packing::Blocks;
use super::product::{evaluate_guarded, request};
use crate::ring::matmul::gemm;
use crate::twopc::channel::{Channel, Expect};

/// The shape of one triple: A is dout x din, B din x n, read mod 2^bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TripleShape {
    pub dout: usize,
    pub din: usize,
    pub n: usize,
    pub bits: u32,
}

impl TripleShape {
    /// The two products' cuts at the parameters of its width: A0 x B1, then B0^T x A1^T.
    pub fn blocks(&self) -> [Blocks; 2] {
        let degree = Set::for_bits(self.bits).degree;
        [
            Blocks::choose(degree, self.dout, self.din, self.n),
            Blocks::choose(degree, self.n, self.din, self.dout),
        ]
    }
}

/// Party 1's side of the offline phase for one product width: the parameters and the
/// secret key its products are encrypted under, and how many results it has taken back.
pub struct KeyHolder {
    pub(super) he: He,
    pub(super) sk: SecretKey,
    pub(super) returns: usize,
}

/// Party 0's side for one product width: party 1's public key, for the re-randomisation of
/// what it returns, and how many results it has returned under it.
pub struct Evaluator {
    pub(super) he: He,
    pub(super) pk: PublicKey,
    pub(super) returns: usize,
    pub(super) guard: Guard,
}

impl KeyHolder {
    /// A fresh key for `he`'s width (made for one run, never kept) and the public key sent
    /// to party 0.
    pub fn start(
        ch: &mut dyn Channel,
        he: He,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<KeyHolder> {
        let sk = he.secret_key(rng);
        let pk = he.public_key(&sk, rng);
        ch.send_owned(he.public_key_bytes(&pk))
            .context("sending the public key")?;
        Ok(KeyHolder { he, sk, returns: 0 })
    }

    /// Party 1's share C1 = C - C0 mod 2^bits (dout x n) of the triple for its shares A1
    /// (dout x din) and B1 (din x n).
    pub fn triple(
        &mut self,
        ch: &mut dyn Channel,
        shape: TripleShape,
        a1: &[u64],
        b1: &[u64],
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<u64>> {
        let TripleShape { dout, din, n, .. } = shape;
        check_shape(&self.he, shape, a1.len(), b1.len())?;
        let [first, second] = shape.blocks();
        self.returns += first.returns() + second.returns();
        self.he.check_returns(self.returns)?;
        let he = &self.he;
        let t1 = request(ch, he, &self.sk, b1, &first, rng).context("the product A0 B1")?;
        let t2 = request(ch, he, &self.sk, &transpose(a1, dout, din), &second, rng)
            .context("the product (A1 B0)^T")?;
        let mut c1 = gemm(a1, b1, dout, din, n);
        for i in 0..dout {
            for j in 0..n {
                let v = &mut c1[i * n + j];
                *v = v.wrapping_add(t1[i * n + j]).wrapping_add(t2[j * dout + i])
                    & (he.modulus() - 1);
            }
        }
        Ok(c1)
    }
}

impl Evaluator {
    /// Receives party 1's public key for `he`'s width.
    pub fn start(ch: &mut dyn Channel, he: He) -> Result<Evaluator> {
        let bytes = ch
            .recv(Expect::AtMost(he.max_ciphertext_bytes()))
            .context("receiving the peer's public key")?;
        Ok(Evaluator {
            pk: he.public_key_from(&bytes)?,
            he,
            returns: 0,
            guard: Guard::ALL,
        })
    }

    /// The negative controls' evaluator, with a step left out.
    #[cfg(test)]
    pub(crate) fn weakened(mut self, guard: Guard) -> Evaluator {
        self.guard = guard;
        self
    }

    /// Party 0's side of the triple for its shares A0 (dout x din), B0 (din x n) and C0
    /// (dout x n): nothing is returned, party 0's share is the C0 it came with.
    pub fn triple(
        &mut self,
        ch: &mut dyn Channel,
        shape: TripleShape,
        (a0, b0, c0): (&[u64], &[u64], &[u64]),
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<()> {
        let TripleShape { dout, din, n, .. } = shape;
        check_shape(&self.he, shape, a0.len(), b0.len())?;
        ensure!(c0.len() == dout * n, "a triple's C0 of {} values", c0.len());
        let [first, second] = shape.blocks();
        self.returns += first.returns() + second.returns();
        self.he.check_returns(self.returns)?;
        let r: Vec<u64> = if self.guard.runs(Guard::FRESH_R) {
            (0..dout * n).map(|_| rng.random::<u64>()).collect()
        } else {
            vec![0; dout * n]
        };
        let a0b0 = gemm(a0, b0, dout, din, n);
        let add1: Vec<u64> = (0..dout * n)
            .map(|i| a0b0[i].wrapping_sub(c0[i]).wrapping_sub(r[i]))
            .collect();
        let (he, pk, guard) = (&self.he, &self.pk, self.guard);
        evaluate_guarded(ch, he, pk, a0, &add1, &first, guard, rng).context("the product A0 B1")?;
        let (b0t, rt) = (transpose(b0, din, n), transpose(&r, dout, n));
        evaluate_guarded(ch, he, pk, &b0t, &rt, &second, guard, rng)
            .context("the product (A1 B0)^T")
    }
}

/// A triple's width and operands against the parameters it runs under.
fn check_shape(he: &He, shape: TripleShape, a: usize, b: usize) -> Result<()> {
    let TripleShape { dout, din, n, bits } = shape;
    ensure!(
        he.bits == bits,
        "a triple mod 2^{bits} under parameters for 2^{}",
        he.bits
    );
    ensure!(
        a == dout * din && b == din * n,
        "a triple's shares of {a} and {b} values for {dout} x {din} x {n}"
    );
    Ok(())
}

/// A rows x cols row-major matrix transposed.
pub(crate) fn transpose(a: &[u64], rows: usize, cols: usize) -> Vec<u64> {
    let mut t = vec![0u64; a.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}
