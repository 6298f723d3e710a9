//! The lattice encryption the offline phase's linear products run under: BFV from the `fhe`
//! crate, one parameter set, coefficient (polynomial) encoding with a power-of-two plaintext
//! modulus, so that a product read mod 2^k is the ring's product mod 2^k exactly
//! (docs/protocol.md, "Dealer-free products"). The scheme is the crate's; the parameters, the
//! noise bounds, the flooding and the level a result is returned at are ours.

use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use fhe::bfv::{dot_product_scalar, SecretKey};
use fhe::bfv::{BfvParameters, BfvParametersBuilder, Ciphertext, Encoding, Plaintext, PublicKey};
use fhe_math::rq::{traits::TryConvertFrom, Poly, Representation};
use fhe_traits::{
    DeserializeParametrized, FheDecoder, FheDecrypter, FheEncoder, FheEncrypter, Serialize,
};
#[cfg(test)]
use num_bigint::BigUint;
use rand09::{CryptoRng, Rng};

/// A parameter set: the ring degree N and the ciphertext modulus q as NTT-friendly primes.
/// Each q is the largest the HomomorphicEncryption.org standard's Table 1 allows at its N
/// for 128-bit classical security (the same for uniform, error-distributed and ternary
/// secrets; the crate's secret and errors are centred binomial with variance 10, sigma ~3.2,
/// the standard's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set {
    pub degree: usize,
    pub moduli_bits: &'static [usize],
}

/// N = 8192, q = 218 bits: products up to [`NARROW_MAX_BITS`] (each prime exceeds t, as the
/// crate's decryption needs).
pub const NARROW: Set = Set {
    degree: 8192,
    moduli_bits: &[54, 54, 55, 55],
};
/// N = 16384, q = 434 bits (the standard allows 438): the wider products, up to 61 bits
/// (the crate's plaintext modulus is below 2^62, and each prime must exceed t: seven of 62
/// bits). Twice the coefficients per polynomial at 1.75 times the primes: under twice the
/// work per value of [`NARROW`].
pub const WIDE: Set = Set {
    degree: 16384,
    moduli_bits: &[62, 62, 62, 62, 62, 62, 62],
};
pub const NARROW_MAX_BITS: u32 = 50;

impl Set {
    pub fn for_bits(bits: u32) -> Set {
        if bits <= NARROW_MAX_BITS {
            NARROW
        } else {
            WIDE
        }
    }
    fn q_bits(&self) -> u32 {
        self.moduli_bits.iter().sum::<usize>() as u32
    }
    fn n_log2(&self) -> u32 {
        self.degree.trailing_zeros()
    }
}

/// Statistical security of the flooding: the ciphertexts returned under one key are within
/// 2^-STAT_BITS of ones that do not depend on the evaluating party's plaintexts (a run has a
/// key per party and product width: a few keys, each adding its 2^-STAT_BITS).
pub const STAT_BITS: u32 = 40;
/// log2 of the most ciphertexts one job returns that the flooding bound covers (2^24; a job
/// returning more is refused by [`He::check_returns`]).
pub const RETURNS_LOG2: u32 = 24;
/// The widest product the parameters carry (checked by [`He::new`]).
pub const MAX_BITS: u32 = 61;
/// log2 of the most ciphertext x plaintext products one returned ciphertext sums (4096:
/// the inner dimension of the widest layer at one value per block).
pub const TERMS_LOG2: u32 = 12;

/// One plaintext modulus t = 2^bits and the parameters built for it.
#[derive(Clone)]
pub struct He {
    pub bits: u32,
    pub set: Set,
    par: Arc<BfvParameters>,
    /// The level a returned ciphertext is switched down to before it is sent.
    pub return_level: usize,
}

/// An upper bound (bits) on the noise of a sum of 2^terms_log2 ciphertext x plaintext
/// products, each ciphertext a fresh secret-key encryption: each product's noise is at most
/// N * ||e|| * t with ||e|| <= 2 * variance = 20 (centred binomial), the plaintext's
/// coefficients in [0, t), plus the scaling's rounding of the same order; one more bit for it.
pub fn noise_bound_bits(set: Set, bits: u32, terms_log2: u32) -> u32 {
    bits + set.n_log2() + 5 + 1 + terms_log2
}

/// Bits of the flooding noise added to a returned ciphertext: its magnitude hides a product
/// noise of `noise_bound_bits` in each of its N coefficients and each of up to 2^RETURNS_LOG2
/// ciphertexts of a job, to 2^-STAT_BITS (a uniform shift of width 2^f moves the distribution
/// by at most |e| / 2^f per coefficient).
pub fn flood_bits(set: Set, bits: u32, terms_log2: u32) -> u32 {
    noise_bound_bits(set, bits, terms_log2) + set.n_log2() + RETURNS_LOG2 + STAT_BITS
}

impl He {
    /// Parameters for products mod 2^bits summed over up to 2^TERMS_LOG2 products. Refuses
    /// a width the noise budget cannot carry: the flooded noise must stay below q / (2t).
    /// Both parties build them from the product's public width; a key is made for one.
    pub fn new(bits: u32) -> Result<He> {
        let terms_log2 = TERMS_LOG2;
        ensure!(
            (1..=MAX_BITS).contains(&bits),
            "a dealer-free product mod 2^{bits}: this offline phase carries 1 to {MAX_BITS} \
             bits (a 64-bit product is made from narrower ones)"
        );
        let set = Set::for_bits(bits);
        let q_bits = set.q_bits();
        let flood = flood_bits(set, bits, terms_log2);
        // The lowest level whose modulus still decrypts a returned ciphertext after the
        // switch down: the noise there is the flooded noise scaled down by the dropped moduli
        // plus the switch's rounding, at most (1 + N ||s||) / 2 < 2^(log2 N + 4) (||s|| <= 20);
        // both under 2^(max + 1), which must stay below q' / 2t >= 2^(kept - bits - 2). Level
        // 0 (no switch) qualifies when the flood fits q at all; none qualifying is refused.
        let rounding = set.n_log2() + 4;
        let moduli = set.moduli_bits;
        let return_level = (0..moduli.len())
            .filter(|&level| {
                let kept: u32 = moduli[..moduli.len() - level].iter().sum::<usize>() as u32;
                let scaled = (flood + 1).saturating_sub(q_bits - kept);
                kept > bits + 3 + scaled.max(rounding)
            })
            .max()
            .ok_or_else(|| {
                anyhow!(
                    "a dealer-free product mod 2^{bits} summed over 2^{terms_log2} terms needs \
                     {} bits of ciphertext modulus, the parameters have {q_bits}",
                    flood + bits + 5
                )
            })?;
        let par = BfvParametersBuilder::new()
            .set_degree(set.degree)
            .set_plaintext_modulus(1u64 << bits)
            .set_moduli_sizes(set.moduli_bits)
            .build_arc()
            .map_err(|e| anyhow!("BFV parameters for t = 2^{bits}: {e}"))?;
        Ok(He {
            bits,
            set,
            par,
            return_level,
        })
    }

    pub fn modulus(&self) -> u64 {
        1u64 << self.bits
    }

    /// Refuses a job that would return more ciphertexts than the flooding bound covers.
    pub fn check_returns(&self, count: usize) -> Result<()> {
        ensure!(
            (count as u64) <= 1u64 << RETURNS_LOG2,
            "a dealer-free product returning {count} ciphertexts: the flooding covers 2^{RETURNS_LOG2}"
        );
        Ok(())
    }

    pub fn secret_key(&self, rng: &mut (impl Rng + CryptoRng)) -> SecretKey {
        SecretKey::random(&self.par, rng)
    }

    pub fn public_key(&self, sk: &SecretKey, rng: &mut (impl Rng + CryptoRng)) -> PublicKey {
        PublicKey::new(sk, rng)
    }

    /// A polynomial's coefficients (each below t, at most N of them) as a plaintext.
    pub fn encode(&self, coeffs: &[u64]) -> Result<Plaintext> {
        Plaintext::try_encode(coeffs, Encoding::poly(), &self.par)
            .map_err(|e| anyhow!("encoding a plaintext: {e}"))
    }

    /// A secret-key encryption, serialised with its seed (the second component is the
    /// seed's expansion, so it travels as 32 bytes).
    pub fn encrypt(
        &self,
        sk: &SecretKey,
        coeffs: &[u64],
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<u8>> {
        let ct: Ciphertext = sk
            .try_encrypt(&self.encode(coeffs)?, rng)
            .map_err(|e| anyhow!("encrypting: {e}"))?;
        Ok(ct.to_bytes())
    }

    /// Reads a peer's ciphertext at the top level (as it was sent for evaluation).
    pub fn ciphertext(&self, bytes: &[u8], what: &str) -> Result<Ciphertext> {
        let ct = Ciphertext::from_bytes(bytes, &self.par)
            .map_err(|e| anyhow!("{what}: not a ciphertext of these parameters: {e}"))?;
        ensure!(ct.len() == 2, "{what}: a ciphertext of {} parts", ct.len());
        let level = self.level_of(&ct)?;
        ensure!(
            level == 0,
            "{what}: a ciphertext at level {level}, not at the top"
        );
        ensure!(
            ct.iter()
                .all(|c| *c.representation() == Representation::Ntt),
            "{what}: a ciphertext not in the NTT form products take"
        );
        Ok(ct)
    }

    pub fn public_key_bytes(&self, pk: &PublicKey) -> Vec<u8> {
        pk.to_bytes()
    }

    pub fn public_key_from(&self, bytes: &[u8]) -> Result<PublicKey> {
        PublicKey::from_bytes(bytes, &self.par)
            .map_err(|e| anyhow!("the peer's public key: not one of these parameters: {e}"))
    }

    /// The largest serialised ciphertext a message may carry (both components at the top
    /// level, with the serialisation's framing): what a receive reserves at most.
    pub fn max_ciphertext_bytes(&self) -> usize {
        2 * self.set.degree * self.set.moduli_bits.len() * 8 + 4096
    }

    /// sum_i cts[i] * pts[i]: the products summed in the NTT domain, reduced once.
    pub fn dot(&self, cts: &[&Ciphertext], pts: &[&Plaintext]) -> Result<Ciphertext> {
        ensure!(
            cts.len() == pts.len() && !cts.is_empty(),
            "a product sum of {} ciphertexts and {} plaintexts",
            cts.len(),
            pts.len()
        );
        ensure!(
            cts.len() as u64 <= 1u64 << TERMS_LOG2,
            "a product sum of {} terms where the noise bound covers 2^{TERMS_LOG2}",
            cts.len(),
        );
        dot_product_scalar(cts.iter().copied(), pts.iter().copied())
            .map_err(|e| anyhow!("a product sum: {e}"))
    }

    /// What makes a returned ciphertext safe to send to the key's holder: `mask` (uniform
    /// mod t where the key's holder must learn nothing, its share's complement where it
    /// learns a share) added as plaintext; a fresh public-key encryption of zero added (the
    /// second component no longer a function of the evaluator's plaintexts); noise of
    /// [`flood_bits`] added to the first (the product noise hidden); switched down to the
    /// return level. `guard` is [`Guard::ALL`] outside the tests' negative controls.
    pub(crate) fn seal_return(
        &self,
        mut ct: Ciphertext,
        mask: &[u64],
        pk: &PublicKey,
        guard: Guard,
        rng: &mut (impl Rng + CryptoRng),
    ) -> Result<Vec<u8>> {
        ensure!(
            mask.len() == self.set.degree,
            "a return mask of {} values",
            mask.len()
        );
        ct += &self.encode(mask)?;
        if guard.runs(Guard::RERANDOMISE) {
            let zero = Plaintext::zero(Encoding::poly(), &self.par)
                .map_err(|e| anyhow!("a zero plaintext: {e}"))?;
            let z: Ciphertext = pk
                .try_encrypt(&zero, rng)
                .map_err(|e| anyhow!("an encryption of zero: {e}"))?;
            ct += &z;
        }
        if guard.runs(Guard::FLOOD) {
            let f = self.flood_poly(&ct, rng)?;
            ct[0] += &f;
        }
        if guard.runs(Guard::SWITCH) {
            ct.switch_to_level(self.return_level)
                .map_err(|e| anyhow!("switching a returned ciphertext down: {e}"))?;
        }
        Ok(ct.to_bytes())
    }

    /// Uniform noise in [-2^f, 2^f) in each coefficient, f = [`flood_bits`], at the
    /// ciphertext's level, in the NTT domain the ciphertext is in. Each coefficient is
    /// U - 2^f with U uniform in [0, 2^(f+1)), drawn as 64-bit limbs (the top one masked to
    /// its bits) and reduced limb by limb into each prime of the level: the same integer in
    /// every residue, with no big-integer arithmetic per coefficient.
    fn flood_poly(&self, ct: &Ciphertext, rng: &mut (impl Rng + CryptoRng)) -> Result<Poly> {
        let f = flood_bits(self.set, self.bits, TERMS_LOG2) as usize;
        let ctx = ct[0].ctx().clone();
        let primes = ctx.moduli_operators();
        let n = self.set.degree;
        let limbs = (f + 1).div_ceil(64);
        let top_bits = f + 1 - 64 * (limbs - 1);
        let top_mask = if top_bits == 64 {
            u64::MAX
        } else {
            (1u64 << top_bits) - 1
        };
        // Per prime: 2^(64 j) for each limb j, and 2^f.
        let two = |q: &fhe_math::zq::Modulus, e: usize| q.pow(2, e as u64);
        let limb_weights: Vec<Vec<u64>> = primes
            .iter()
            .map(|q| (0..limbs).map(|j| two(q, 64 * j)).collect())
            .collect();
        let shifts: Vec<u64> = primes.iter().map(|q| two(q, f)).collect();
        let mut flat = vec![0u64; primes.len() * n];
        let mut u = vec![0u64; limbs];
        for c in 0..n {
            u.iter_mut().for_each(|l| *l = rng.random());
            u[limbs - 1] &= top_mask;
            for (i, q) in primes.iter().enumerate() {
                let mut acc = 0u64;
                for (l, w) in u.iter().zip(&limb_weights[i]) {
                    acc = q.add(acc, q.mul(q.reduce(*l), *w));
                }
                flat[i * n + c] = q.sub(acc, shifts[i]);
            }
        }
        let mut p = Poly::try_convert_from(flat, &ctx, false, Representation::PowerBasis)
            .map_err(|e| anyhow!("flooding noise: {e}"))?;
        p.change_representation(Representation::Ntt);
        Ok(p)
    }

    /// The flood's coefficients as integers, for the test that it is what it says.
    #[cfg(test)]
    pub(crate) fn flood_sample(&self, rng: &mut (impl Rng + CryptoRng)) -> Vec<BigUint> {
        let ct: Ciphertext = self
            .secret_key(rng)
            .try_encrypt(&self.encode(&[0]).unwrap(), rng)
            .unwrap();
        let mut p = self.flood_poly(&ct, rng).unwrap();
        p.change_representation(Representation::PowerBasis);
        Vec::<BigUint>::from(&p)
    }

    /// Decrypts a returned ciphertext (which must be at the return level) into its N
    /// coefficients mod t.
    pub fn decrypt_return(&self, sk: &SecretKey, bytes: &[u8], what: &str) -> Result<Vec<u64>> {
        let ct = Ciphertext::from_bytes(bytes, &self.par)
            .map_err(|e| anyhow!("{what}: not a ciphertext of these parameters: {e}"))?;
        ensure!(ct.len() == 2, "{what}: a ciphertext of {} parts", ct.len());
        let level = self.level_of(&ct)?;
        if level != self.return_level {
            bail!(
                "{what}: returned at level {level}, the parameters return at {}",
                self.return_level
            );
        }
        self.decrypt_at(sk, &ct, level)
            .with_context(|| format!("{what}: decrypting"))
    }

    fn level_of(&self, ct: &Ciphertext) -> Result<usize> {
        self.par
            .level_of_context(ct[0].ctx())
            .map_err(|e| anyhow!("a ciphertext's level: {e}"))
    }

    fn decrypt_at(&self, sk: &SecretKey, ct: &Ciphertext, level: usize) -> Result<Vec<u64>> {
        let pt = sk.try_decrypt(ct).map_err(|e| anyhow!("{e}"))?;
        Vec::<u64>::try_decode(&pt, Encoding::poly_at_level(level)).map_err(|e| anyhow!("{e}"))
    }

    /// Test-only views of a returned ciphertext, for the negative controls.
    #[cfg(test)]
    pub(crate) fn inspect(&self, sk: &SecretKey, bytes: &[u8]) -> (Ciphertext, usize) {
        let ct = Ciphertext::from_bytes(bytes, &self.par).unwrap();
        // SAFETY: measure_noise only runs in variable time; a test's own key.
        let noise = unsafe { sk.measure_noise(&ct).unwrap() };
        (ct, noise)
    }
}

/// The steps that make what party 1 decrypts safe. In the crate's own build every step
/// always runs: the switch to leave one out exists only in test builds, for the negative
/// controls that show each masking test fails without its step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Guard {
    #[cfg(test)]
    off: u8,
}

impl Guard {
    pub(crate) const ALL: Guard = Guard {
        #[cfg(test)]
        off: 0,
    };
    /// A fresh public-key encryption of zero added to a returned ciphertext.
    pub(crate) const RERANDOMISE: u8 = 1;
    /// Noise of [`flood_bits`] added to it.
    pub(crate) const FLOOD: u8 = 2;
    /// Switched down to the return level (left out only to look at the flooded noise).
    pub(crate) const SWITCH: u8 = 4;
    /// Uniform masks on the coefficients that are not results.
    pub(crate) const MASK_ALL: u8 = 8;
    /// A fresh R on the triple's second product.
    pub(crate) const FRESH_R: u8 = 16;

    #[cfg(test)]
    pub(crate) const fn without(self, steps: u8) -> Guard {
        Guard {
            off: self.off | steps,
        }
    }

    pub(crate) fn runs(self, step: u8) -> bool {
        #[cfg(test)]
        {
            self.off & step == 0
        }
        #[cfg(not(test))]
        {
            let _ = step;
            true
        }
    }
}
