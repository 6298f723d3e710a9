//! The weight mask A of the linear layers' Beaver products: each party's share is expanded
//! from the seed that owns it (a job's seed, or a model mask's seed; never both for one A).

use crate::ring::plan::Plan;
use crate::ring::share::{Prg, Seed, Stream};

/// One party's share of layer `layer`'s weight mask A (`n` values), from the seed that owns
/// it: a job's seed, or a model mask's seed (never both for one A).
pub fn mask_share(seed: &Seed, layer: u32, n: usize) -> Vec<u64> {
    Prg::new(seed, Stream::WeightMask(layer)).vec(n)
}

/// This party's share of every layer's weight mask A.
pub fn mask_shares(seed: &Seed, plan: &Plan) -> Vec<Vec<u64>> {
    plan.layers
        .iter()
        .enumerate()
        .map(|(l, ly)| mask_share(seed, l as u32, ly.inputs * ly.outputs))
        .collect()
}

/// Number of weights (not biases) of all layers: the length of U.
pub fn weight_count(plan: &Plan) -> usize {
    plan.layers.iter().map(|l| l.inputs * l.outputs).sum()
}

/// The triplet header's entry naming, for a job against a model mask, a digest of each
/// party's mask seed: what lets a server check the seed its opened weights file holds.
pub const MASK_SEEDS: &str = "model_mask_seeds";

/// A digest of one party's mask seed. The seed is 32 uniform bytes, so the digest tells
/// the other server (which sees both, as with the base-OT digests) nothing of it.
pub fn mask_seed_digest(seed: &Seed) -> String {
    hex::encode(blake3::derive_key("ppdenoise model mask seed v1", seed))
}

/// The [`MASK_SEEDS`] entry: S0's seed's digest, a comma, S1's.
pub fn mask_seed_digests(seeds: &[Seed; 2]) -> String {
    format!(
        "{},{}",
        mask_seed_digest(&seeds[0]),
        mask_seed_digest(&seeds[1])
    )
}

/// A digest of the opened weights U, the same on both servers after `open-weights`: bound
/// into the session tag, so that two servers agree on U before any randomness is consumed.
pub fn opened_digest(u: &[u64]) -> [u8; 32] {
    *words_hash(
        blake3::Hasher::new_derive_key("ppdenoise opened weights v1"),
        u,
    )
    .as_bytes()
}

/// The opened weights file's entry holding [`opened_mac`], in hex.
pub const OPENED_MAC: &str = "opened_mac";

/// A MAC of the opened weights U under a key derived from this server's mask seed: the
/// seed is checked against the dealer's signed digest, so U is then authenticated to the
/// server that opened it (and the dealer); a peer, which lacks the seed, cannot forge it.
pub fn opened_mac(seed: &Seed, u: &[u64]) -> blake3::Hash {
    let key = blake3::derive_key("ppdenoise opened weights mac v1", seed);
    words_hash(blake3::Hasher::new_keyed(&key), u)
}

/// Hashes the words' little-endian bytes, a block at a time: BLAKE3 fed eight bytes a call
/// runs serially (no SIMD across its chunks), several times slower over a paper MLP's U.
fn words_hash(mut h: blake3::Hasher, u: &[u64]) -> blake3::Hash {
    let mut buf = vec![0u8; 8 * 8192];
    for block in u.chunks(8192) {
        let bytes = &mut buf[..8 * block.len()];
        for (b, x) in bytes.chunks_exact_mut(8).zip(block) {
            b.copy_from_slice(&x.to_le_bytes());
        }
        h.update(bytes);
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked hashing is the hash of the words' little-endian bytes, whatever the
    /// length against the block: files written by the word-at-a-time version still check.
    #[test]
    fn words_are_hashed_as_their_little_endian_bytes() {
        for n in [0usize, 1, 8191, 8192, 8193, 20_000] {
            let u: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let bytes: Vec<u8> = u.iter().flat_map(|x| x.to_le_bytes()).collect();
            let key = [7u8; 32];
            assert_eq!(
                words_hash(blake3::Hasher::new_keyed(&key), &u),
                blake3::keyed_hash(&key, &bytes),
                "{n} words"
            );
        }
    }

    /// Known answers, computed apart from this crate (Python's blake3 binding over the
    /// words' little-endian bytes, with these derivation contexts): the digest is bound into
    /// the session tag and the MAC stored in opened-weights files, so a build that derived
    /// either otherwise would refuse its peer's or its own earlier files.
    #[test]
    fn opened_digest_and_mac_known_answers() {
        let u: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        assert_eq!(
            hex::encode(opened_digest(&u)),
            "61fd40256783c013594ff4cad8bbca0f04de1df8abff378af1e97aac854182f3"
        );
        assert_eq!(
            opened_mac(&[7; 32], &u).to_hex().as_str(),
            "9dd77b0c4449da12449b940d2c0e1c094b47b0a0c27187c218cf216b771038a6"
        );
    }
}
