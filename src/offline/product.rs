//! One matrix product W (m x k) x X (k x n) mod 2^bits between the two servers, W held by
//! the evaluator in the clear, X by the key's holder: the key's holder sends X encrypted
//! under its own secret key, the evaluator multiplies by W's plaintext polynomials
//! (`packing.rs`), adds a plaintext of its choosing (`add` on the results, uniform masks on
//! every other coefficient) and returns the sums made safe (`He::seal_return`); the key's
//! holder decrypts W X + add. What each side sees: the evaluator, ciphertexts under a key it
//! does not have (IND-CPA, the RLWE assumption at the parameters of `he.rs`); the key's
//! holder, W X + add on the results (a share, when `add` is the evaluator's share
//! negated) and uniform values elsewhere, in a ciphertext whose second component and noise do
//! not depend on W (re-randomised, flooded).

use anyhow::{ensure, Context, Result};
use fhe::bfv::{Ciphertext, PublicKey, SecretKey};
use rand09::{CryptoRng, Rng};

use super::he::{Guard, He};
use super::packing::Blocks;
use crate::twopc::channel::{Channel, Expect};

/// The key holder's half: sends X (k x n, row-major) encrypted block by block, receives and
/// decrypts the m x n result W X + add.
pub(crate) fn request(
    ch: &mut dyn Channel,
    he: &He,
    sk: &SecretKey,
    x: &[u64],
    b: &Blocks,
    rng: &mut (impl Rng + CryptoRng),
) -> Result<Vec<u64>> {
    ensure!(
        x.len() == b.k * b.n,
        "X of {} values for {} x {}",
        x.len(),
        b.k,
        b.n
    );
    he.check_returns(b.returns())?;
    let mask = he.modulus() - 1;
    for cb in 0..b.col_blocks() {
        for kb in 0..b.inner_blocks() {
            let ct = he.encrypt(sk, &b.x_poly(x, kb, cb, mask), rng)?;
            ch.send_owned(ct).context("sending an encrypted block")?;
        }
    }
    let mut out = vec![0u64; b.m * b.n];
    for rb in 0..b.row_blocks() {
        for cb in 0..b.col_blocks() {
            let bytes = ch
                .recv(Expect::AtMost(he.max_ciphertext_bytes()))
                .context("receiving a product block")?;
            let coeffs = he.decrypt_return(sk, &bytes, "the peer's product block")?;
            for (coef, at) in b.results(rb, cb) {
                out[at] = coeffs[coef];
            }
        }
    }
    Ok(out)
}

/// The evaluator's half: W (m x k, row-major) in the clear, `add` (m x n) added to the
/// results the key's holder decrypts; `guard` is [`Guard::ALL`] (the only value outside
/// test builds).
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_guarded(
    ch: &mut dyn Channel,
    he: &He,
    pk: &PublicKey,
    w: &[u64],
    add: &[u64],
    b: &Blocks,
    guard: Guard,
    rng: &mut (impl Rng + CryptoRng),
) -> Result<()> {
    ensure!(
        w.len() == b.m * b.k,
        "W of {} values for {} x {}",
        w.len(),
        b.m,
        b.k
    );
    ensure!(
        add.len() == b.m * b.n,
        "an addend of {} values for {} x {}",
        add.len(),
        b.m,
        b.n
    );
    he.check_returns(b.returns())?;
    let mask = he.modulus() - 1;
    // Every block of X arrives before any result leaves: the key's holder sends them all
    // first, so neither side waits on the other mid-stream.
    let mut xs: Vec<Ciphertext> = Vec::with_capacity(b.x_blocks());
    for i in 0..b.x_blocks() {
        let bytes = ch
            .recv(Expect::AtMost(he.max_ciphertext_bytes()))
            .context("receiving an encrypted block")?;
        xs.push(he.ciphertext(&bytes, &format!("the peer's encrypted block {i}"))?);
    }
    let x_at = |kb: usize, cb: usize| &xs[cb * b.inner_blocks() + kb];
    for rb in 0..b.row_blocks() {
        // W's plaintexts of a row block, encoded once for all its column blocks.
        let pts = (0..b.inner_blocks())
            .map(|kb| he.encode(&b.w_poly(w, rb, kb, mask)))
            .collect::<Result<Vec<_>>>()?;
        for cb in 0..b.col_blocks() {
            let cts: Vec<&Ciphertext> = (0..b.inner_blocks()).map(|kb| x_at(kb, cb)).collect();
            let sum = he.dot(&cts, &pts.iter().collect::<Vec<_>>())?;
            let mut m = vec![0u64; he.set.degree];
            if guard.runs(Guard::MASK_ALL) {
                m.iter_mut().for_each(|v| *v = rng.random::<u64>() & mask);
            }
            for (coef, at) in b.results(rb, cb) {
                m[coef] = add[at] & mask;
            }
            ch.send_owned(he.seal_return(sum, &m, pk, guard, rng)?)
                .context("sending a product block")?;
        }
    }
    Ok(())
}
