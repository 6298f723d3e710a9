//! The garbled-circuit engine's 128 base OTs made by the two servers, no dealer. Party 0
//! (the IKNP receiver, here the base OTs' sender) draws 128 pairs of seeds (k0_i, k1_i);
//! party 1 (the IKNP sender) draws Δ and must leave with k_{i, Δ_i}, and neither may learn
//! more. That is one product of `product.rs`, party 1 holding the key:
//!
//!   X = Δ's bits (128 x 1, party 1's, encrypted),
//!   W (512 x 128, party 0's, in the clear): row 4i + l holds limb l of k1_i - k0_i in
//!     column i and zero elsewhere,
//!   added: limb l of k0_i at row 4i + l,
//!
//! so party 1 decrypts k0_i + Δ_i (k1_i - k0_i) = k_{i, Δ_i}, limb by limb mod 2^32: one
//! seed of each pair, chosen by Δ. What each side sees is what the product's protocol lets
//! it see (docs/protocol.md, "Dealer-free products"): party 0, ciphertexts under a key it does
//! not have; party 1, the chosen limbs on the results' coefficients and uniform values on
//! every other (the other seed's limbs would show there unmasked: the test
//! `the_unchosen_seeds_never_reach_party_1` fails without the mask), in a re-randomised,
//! flooded ciphertext.
//!
//! Why not an OT crate: the maintained one (`cryprot-ot`) runs its base OTs only over its
//! own QUIC connection (docs/dealer-free-plan.md, section 3), and this is the lattice
//! encryption and product protocol the servers already run for the products, not a new one.

use anyhow::{Context, Result};
use rand09::{CryptoRng, Rng};
use zeroize::Zeroize;

use super::he::{Guard, He};
use super::packing::Blocks;
use super::product::{evaluate_guarded, request};
use super::triple::{Evaluator, KeyHolder};
use crate::corr::base_ots::{BaseOtForReceiver, BaseOtForSender, KAPPA};
use crate::corr::block::Block;
use crate::twopc::channel::Channel;

/// Bits of a limb: a seed's 128 bits are four products mod 2^32.
pub const LIMB_BITS: u32 = 32;
const LIMBS: usize = 128 / LIMB_BITS as usize;

/// The product's cut: W is KAPPA * LIMBS x KAPPA, X KAPPA x 1.
pub(super) fn blocks(he: &He) -> Blocks {
    Blocks::choose(he.set.degree, KAPPA * LIMBS, KAPPA, 1)
}

fn limbs(b: Block) -> [u64; LIMBS] {
    std::array::from_fn(|l| (b.0 >> (LIMB_BITS as usize * l)) as u64 & 0xffff_ffff)
}

fn from_limbs(v: &[u64]) -> Block {
    Block(v.iter().enumerate().fold(0u128, |acc, (l, &x)| {
        acc | (u128::from(x & 0xffff_ffff) << (LIMB_BITS as usize * l))
    }))
}

/// Party 0's W and addend for its pairs (row-major, `blocks`' shapes).
pub(super) fn sender_operands(seeds: &[(Block, Block); KAPPA]) -> (Vec<u64>, Vec<u64>) {
    let m = KAPPA * LIMBS;
    let (mut w, mut add) = (vec![0u64; m * KAPPA], vec![0u64; m]);
    for (i, (k0, k1)) in seeds.iter().enumerate() {
        let (a, b) = (limbs(*k0), limbs(*k1));
        for l in 0..LIMBS {
            let row = i * LIMBS + l;
            w[row * KAPPA + i] = b[l].wrapping_sub(a[l]) & 0xffff_ffff;
            add[row] = a[l];
        }
    }
    (w, add)
}

/// Δ's bits, party 1's X.
pub(super) fn receiver_operand(delta: Block) -> Vec<u64> {
    (0..KAPPA).map(|i| ((delta.0 >> i) & 1) as u64).collect()
}

/// Party 0's side: 128 fresh pairs of seeds, of which party 1 leaves with one each, chosen
/// by its Δ; party 0 learns nothing of Δ.
pub fn send(ch: &mut dyn Channel, rng: &mut (impl Rng + CryptoRng)) -> Result<BaseOtForReceiver> {
    send_guarded(ch, Guard::ALL, rng)
}

/// [`send`] with the evaluator's steps as `guard` says ([`Guard::ALL`] outside the
/// negative controls).
pub(super) fn send_guarded(
    ch: &mut dyn Channel,
    guard: Guard,
    rng: &mut (impl Rng + CryptoRng),
) -> Result<BaseOtForReceiver> {
    let he = He::new(LIMB_BITS)?;
    let mut ev = Evaluator::start(ch, he).context("the base OTs' key")?;
    let seeds: [(Block, Block); KAPPA] =
        std::array::from_fn(|_| (Block(rng.random()), Block(rng.random())));
    let (mut w, mut add) = sender_operands(&seeds);
    let b = blocks(&ev.he);
    ev.returns += b.returns();
    ev.he.check_returns(ev.returns)?;
    let done = evaluate_guarded(ch, &ev.he, &ev.pk, &w, &add, &b, guard, rng);
    w.zeroize();
    add.zeroize();
    done.context("the base OTs")?;
    Ok(BaseOtForReceiver { seeds })
}

/// Party 1's side: a fresh Δ (its lowest bit 1, as free XOR needs) and the seed of each
/// pair its bit chooses.
pub fn receive(ch: &mut dyn Channel, rng: &mut (impl Rng + CryptoRng)) -> Result<BaseOtForSender> {
    let he = He::new(LIMB_BITS)?;
    let mut kh = KeyHolder::start(ch, he, rng).context("the base OTs' key")?;
    let delta = Block(rng.random::<u128>() | 1);
    let x = receiver_operand(delta);
    let b = blocks(&kh.he);
    kh.returns += b.returns();
    kh.he.check_returns(kh.returns)?;
    let mut got = request(ch, &kh.he, &kh.sk, &x, &b, rng).context("the base OTs")?;
    let seeds = std::array::from_fn(|i| from_limbs(&got[i * LIMBS..(i + 1) * LIMBS]));
    got.zeroize();
    Ok(BaseOtForSender { delta, seeds })
}

#[cfg(test)]
mod tests {
    use rand09::rngs::StdRng;
    use rand09::SeedableRng;

    use super::*;
    use crate::twopc::channel::{mem_pair, Expect};

    /// Party 1's Δ and chosen seeds are one seed of each of party 0's pairs, the one Δ's
    /// bit names, and a second run draws everything afresh.
    #[test]
    fn the_servers_base_ots_are_one_seed_of_each_pair_chosen_by_delta() {
        let run = |seed: u64| {
            let (mut c0, mut c1) = mem_pair();
            let s0 = std::thread::spawn(move || {
                send(&mut c0, &mut StdRng::seed_from_u64(seed)).unwrap()
            });
            let r = receive(&mut c1, &mut StdRng::seed_from_u64(seed + 1)).unwrap();
            (s0.join().unwrap(), r)
        };
        let (s, r) = run(1);
        assert!(r.delta.lsb(), "Δ's lowest bit is 1");
        let mut ones = 0;
        for i in 0..KAPPA {
            let bit = (r.delta.0 >> i) & 1 == 1;
            ones += bit as usize;
            let (k0, k1) = s.seeds[i];
            assert_ne!(k0, k1);
            assert_eq!(r.seeds[i], if bit { k1 } else { k0 }, "pair {i}");
        }
        assert!((20..108).contains(&ones), "Δ has {ones} ones");
        let (s2, r2) = run(3);
        assert_ne!(r2.delta, r.delta);
        assert!(s2.seeds.iter().zip(&s.seeds).all(|(a, b)| a != b));
    }

    /// Every coefficient party 1 decrypts, with party 0's evaluator as `guard` says, and how
    /// many of them are a difference k1_i - k0_i of party 0's limbs (from which the seed party 1
    /// did not choose follows).
    fn differences_party_1_sees(guard: Guard) -> usize {
        let (mut c0, mut c1) = mem_pair();
        let s0 = std::thread::spawn(move || {
            send_guarded(&mut c0, guard, &mut StdRng::seed_from_u64(5)).unwrap()
        });
        let mut r = StdRng::seed_from_u64(6);
        let he = He::new(LIMB_BITS).unwrap();
        let kh = KeyHolder::start(&mut c1, he, &mut r).unwrap();
        let delta = Block(r.random::<u128>() | 1);
        let x = receiver_operand(delta);
        let b = blocks(&kh.he);
        let mask = kh.he.modulus() - 1;
        for cb in 0..b.col_blocks() {
            for kb in 0..b.inner_blocks() {
                let ct = kh.he.encrypt(&kh.sk, &b.x_poly(&x, kb, cb, mask), &mut r);
                c1.send_owned(ct.unwrap()).unwrap();
            }
        }
        let seen: Vec<u64> = (0..b.returns())
            .flat_map(|_| {
                let bytes = c1
                    .recv(Expect::AtMost(kh.he.max_ciphertext_bytes()))
                    .unwrap();
                kh.he.decrypt_return(&kh.sk, &bytes, "a block").unwrap()
            })
            .collect();
        let s = s0.join().unwrap();
        let (w, _) = sender_operands(&s.seeds);
        let diffs: std::collections::HashSet<u64> = w.into_iter().filter(|&v| v != 0).collect();
        seen.iter().filter(|v| diffs.contains(v)).count()
    }

    /// Party 1 sees no difference of party 0's limbs (it would give it the seed Δ did not
    /// choose); without the mask on the coefficients that are not results (the negative
    /// control) it sees hundreds.
    #[test]
    fn the_unchosen_seeds_never_reach_party_1() {
        assert_eq!(differences_party_1_sees(Guard::ALL), 0);
        let shown = differences_party_1_sees(Guard::ALL.without(Guard::MASK_ALL));
        assert!(shown > 100, "the control shows {shown} differences");
    }
}
