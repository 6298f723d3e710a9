//! The offline phase's products: each relation checked by putting both parties' outputs
//! together, and what the key's holder sees checked with a failing control for each of the
//! three steps that make a returned ciphertext safe.

use rand09::rngs::StdRng;
use rand09::{Rng, SeedableRng};

use super::he::{flood_bits, noise_bound_bits, Guard, He, TERMS_LOG2};
use super::packing::Blocks;
use super::product::{evaluate_guarded, request};
use super::triple::{transpose, Evaluator, KeyHolder, TripleShape};
use crate::ring::matmul::gemm;
use crate::twopc::channel::{mem_pair, Channel, Expect};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn uniform(r: &mut StdRng, n: usize) -> Vec<u64> {
    (0..n).map(|_| r.random()).collect()
}

#[test]
fn a_triple_made_by_the_two_servers_satisfies_its_relation() {
    for (shape, seed) in [
        (
            TripleShape {
                dout: 5,
                din: 37,
                n: 9,
                bits: 33,
            },
            1,
        ),
        (
            TripleShape {
                dout: 16,
                din: 49,
                n: 8,
                bits: 20,
            },
            2,
        ),
        (
            TripleShape {
                dout: 3,
                din: 300,
                n: 70,
                bits: 50,
            },
            3,
        ),
        (
            TripleShape {
                dout: 9,
                din: 40,
                n: 33,
                bits: 55,
            },
            4,
        ),
    ] {
        let TripleShape { dout, din, n, bits } = shape;
        let mut r = rng(seed);
        let (a0, a1) = (uniform(&mut r, dout * din), uniform(&mut r, dout * din));
        let (b0, b1) = (uniform(&mut r, din * n), uniform(&mut r, din * n));
        let c0 = uniform(&mut r, dout * n);
        let he = He::new(bits).unwrap();
        let (mut ch0, mut ch1) = mem_pair();
        let he0 = he.clone();
        let c0_for_party0 = c0.clone();
        let party0 = std::thread::spawn(move || {
            let mut r = rng(seed + 100);
            let mut ev = Evaluator::start(&mut ch0, he0).unwrap();
            ev.triple(&mut ch0, shape, (&a0, &b0, &c0_for_party0), &mut r)
                .unwrap();
            (a0, b0)
        });
        let mut r1 = rng(seed + 200);
        let mut kh = KeyHolder::start(&mut ch1, he, &mut r1).unwrap();
        let c1 = kh.triple(&mut ch1, shape, &a1, &b1, &mut r1).unwrap();
        let (a0, b0) = party0.join().unwrap();
        let a: Vec<u64> = a0
            .iter()
            .zip(&a1)
            .map(|(x, y)| x.wrapping_add(*y))
            .collect();
        let b: Vec<u64> = b0
            .iter()
            .zip(&b1)
            .map(|(x, y)| x.wrapping_add(*y))
            .collect();
        let mask = (1u64 << bits) - 1;
        let want: Vec<u64> = gemm(&a, &b, dout, din, n)
            .iter()
            .map(|v| v & mask)
            .collect();
        let got: Vec<u64> = c0
            .iter()
            .zip(&c1)
            .map(|(x, y)| x.wrapping_add(*y) & mask)
            .collect();
        assert_eq!(
            got, want,
            "{shape:?}: C0 + C1 = (A0 + A1)(B0 + B1) mod 2^{bits}"
        );
    }
}

/// What the key's holder receives for one product: the returned ciphertexts as bytes, with
/// the key to look into them. X is sent as `request` sends it.
struct Seen {
    he: He,
    sk: fhe::bfv::SecretKey,
    returned: Vec<Vec<u8>>,
    blocks: Blocks,
}

fn one_product(w: Vec<u64>, x: Vec<u64>, (m, k, n): (usize, usize, usize), guard: Guard) -> Seen {
    let he = He::new(33).unwrap();
    let blocks = Blocks::choose(he.set.degree, m, k, n);
    let (mut ch0, mut ch1) = mem_pair();
    let mut r1 = rng(9);
    let sk = he.secret_key(&mut r1);
    let pk = he.public_key(&sk, &mut r1);
    let he0 = he.clone();
    let party0 = std::thread::spawn(move || {
        let add = vec![0u64; m * n];
        evaluate_guarded(&mut ch0, &he0, &pk, &w, &add, &blocks, guard, &mut rng(10)).unwrap();
    });
    for cb in 0..blocks.col_blocks() {
        for kb in 0..blocks.inner_blocks() {
            let ct = he.encrypt(&sk, &blocks.x_poly(&x, kb, cb, he.modulus() - 1), &mut r1);
            ch1.send_owned(ct.unwrap()).unwrap();
        }
    }
    let returned = (0..blocks.returns())
        .map(|_| ch1.recv(Expect::AtMost(he.max_ciphertext_bytes())).unwrap())
        .collect();
    party0.join().unwrap();
    Seen {
        he,
        sk,
        returned,
        blocks,
    }
}

const SHAPE: (usize, usize, usize) = (4, 20, 3);

fn random_w(seed: u64) -> Vec<u64> {
    uniform(&mut rng(seed), SHAPE.0 * SHAPE.1)
}

fn random_x(seed: u64) -> Vec<u64> {
    uniform(&mut rng(seed), SHAPE.1 * SHAPE.2)
}

/// Without re-randomisation the second component of a returned ciphertext is a * W~, with
/// a the key holder's own: W = 0 shows as a zero component.
fn second_component_shows_w(guard: Guard) -> bool {
    let seen = one_product(vec![0; SHAPE.0 * SHAPE.1], random_x(1), SHAPE, guard);
    seen.returned.iter().any(|bytes| {
        let (ct, _) = seen.he.inspect(&seen.sk, bytes);
        Vec::<u64>::from(&ct[1]).iter().all(|&v| v == 0)
    })
}

#[test]
fn a_returned_ciphertext_is_re_randomised() {
    assert!(!second_component_shows_w(Guard::ALL));
    let broken = Guard::ALL.without(Guard::RERANDOMISE);
    assert!(second_component_shows_w(broken), "the control must see W");
}

/// The noise of a returned ciphertext (before the switch down, which the test leaves out to
/// look at it) for W = 0 and for W uniform: without flooding, far apart.
fn noise_shows_w(guard: Guard) -> bool {
    let guard = guard.without(Guard::SWITCH);
    let noise = |w: Vec<u64>| {
        let seen = one_product(w, random_x(2), SHAPE, guard);
        seen.he.inspect(&seen.sk, &seen.returned[0]).1
    };
    let (zero, random) = (noise(vec![0; SHAPE.0 * SHAPE.1]), noise(random_w(3)));
    zero.abs_diff(random) > 2
}

#[test]
fn a_returned_ciphertext_is_flooded() {
    assert!(!noise_shows_w(Guard::ALL));
    // And flooded as wide as the bound says: a flood narrower than `flood_bits` would hide
    // less than the statistical argument of he.rs claims.
    let seen = one_product(
        random_w(5),
        random_x(6),
        SHAPE,
        Guard::ALL.without(Guard::SWITCH),
    );
    let noise = seen.he.inspect(&seen.sk, &seen.returned[0]).1 as u32;
    let want = flood_bits(seen.he.set, 33, TERMS_LOG2);
    assert!(
        (want - 1..=want + 1).contains(&noise),
        "noise {noise} bits, flood {want}"
    );
    let broken = Guard::ALL.without(Guard::FLOOD);
    assert!(noise_shows_w(broken), "the control's noise must show W");
}

/// X a unit vector: the product polynomial is W~ itself, so every coefficient that is not
/// a result holds one of W's values unless masked.
fn other_coefficients_show_w(guard: Guard) -> bool {
    let mut x = vec![0u64; SHAPE.1 * SHAPE.2];
    x[0] = 1;
    let w = random_w(4);
    let seen = one_product(w.clone(), x, SHAPE, guard);
    let b = seen.blocks;
    let mask = seen.he.modulus() - 1;
    let mut shown = 0;
    for (i, bytes) in seen.returned.iter().enumerate() {
        let (rb, cb) = (i / b.col_blocks(), i % b.col_blocks());
        let got = seen.he.decrypt_return(&seen.sk, bytes, "a block").unwrap();
        let wp = b.w_poly(&w, rb, 0, mask);
        let results: Vec<usize> = b.results(rb, cb).map(|(c, _)| c).collect();
        shown += (0..got.len())
            .filter(|c| !results.contains(c) && wp[*c] != 0 && got[*c] == wp[*c])
            .count();
    }
    shown > 0
}

#[test]
fn the_coefficients_that_are_not_results_are_masked() {
    assert!(!other_coefficients_show_w(Guard::ALL));
    let broken = Guard::ALL.without(Guard::MASK_ALL);
    assert!(other_coefficients_show_w(broken), "the control must see W");
}

#[test]
fn the_product_noise_stays_under_its_bound_and_the_flooded_noise_decrypts() {
    for bits in [20, 33, 50, 55, 61] {
        let he = He::new(bits).unwrap();
        let (m, k, n) = (2, 4096, 16); // eight inner blocks of 512 x 16 at N = 8192, fewer above
        let b = Blocks::choose(he.set.degree, m, k, n);
        assert!(b.inner_blocks() <= 8, "{b:?}");
        let mut r = rng(u64::from(bits));
        // The worst operands: every coefficient t - 1.
        let w = vec![u64::MAX; m * k];
        let x = vec![u64::MAX; k * n];
        let (mut ch0, mut ch1) = mem_pair();
        let sk = he.secret_key(&mut r);
        let pk = he.public_key(&sk, &mut r);
        let he0 = he.clone();
        let bare = Guard::ALL.without(Guard::RERANDOMISE | Guard::FLOOD | Guard::SWITCH);
        let t = std::thread::spawn(move || {
            let add = vec![0u64; m * n];
            evaluate_guarded(&mut ch0, &he0, &pk, &w, &add, &b, bare, &mut rng(5)).unwrap();
            evaluate_guarded(&mut ch0, &he0, &pk, &w, &add, &b, Guard::ALL, &mut rng(6)).unwrap();
        });
        let send_x = |ch1: &mut dyn Channel, r: &mut StdRng| {
            for cb in 0..b.col_blocks() {
                for kb in 0..b.inner_blocks() {
                    let ct = he
                        .encrypt(&sk, &b.x_poly(&x, kb, cb, he.modulus() - 1), r)
                        .unwrap();
                    ch1.send_owned(ct).unwrap();
                }
            }
        };
        send_x(&mut ch1, &mut r);
        let noise = (0..b.returns())
            .map(|_| {
                let bytes = ch1.recv(Expect::AtMost(he.max_ciphertext_bytes())).unwrap();
                he.inspect(&sk, &bytes).1 as u32
            })
            .max()
            .unwrap();
        println!(
            "2^{bits}: worst-case product noise {noise} bits, bound {}",
            noise_bound_bits(he.set, bits, 3)
        );
        assert!(
            noise <= noise_bound_bits(he.set, bits, 3),
            "2^{bits}: noise {noise} bits"
        );
        // The same product through `request`: flooded, switched down, decrypted exactly.
        let mut out = vec![0u64; m * n];
        send_x(&mut ch1, &mut r);
        for rb in 0..b.row_blocks() {
            for cb in 0..b.col_blocks() {
                let bytes = ch1.recv(Expect::AtMost(he.max_ciphertext_bytes())).unwrap();
                let got = he.decrypt_return(&sk, &bytes, "a block").unwrap();
                for (coef, at) in b.results(rb, cb) {
                    out[at] = got[coef];
                }
            }
        }
        t.join().unwrap();
        let want = (k as u64)
            .wrapping_mul(he.modulus() - 1)
            .wrapping_mul(he.modulus() - 1)
            & (he.modulus() - 1);
        assert!(
            out.iter().all(|&v| v == want),
            "2^{bits}: flooded and switched, still exact"
        );
    }
}

#[test]
fn a_product_request_and_its_evaluation_agree_on_every_cut() {
    for (m, k, n) in [(1, 1, 1), (7, 3, 130), (65, 2, 2)] {
        let he = He::new(24).unwrap();
        let b = Blocks::choose(he.set.degree, m, k, n);
        let mut r = rng(11);
        let (w, x, add) = (
            uniform(&mut r, m * k),
            uniform(&mut r, k * n),
            uniform(&mut r, m * n),
        );
        let (mut ch0, mut ch1) = mem_pair();
        let sk = he.secret_key(&mut r);
        let pk = he.public_key(&sk, &mut r);
        let (he0, w0, add0) = (he.clone(), w.clone(), add.clone());
        let t = std::thread::spawn(move || {
            evaluate_guarded(
                &mut ch0,
                &he0,
                &pk,
                &w0,
                &add0,
                &b,
                Guard::ALL,
                &mut rng(12),
            )
            .unwrap()
        });
        let got = request(&mut ch1, &he, &sk, &x, &b, &mut r).unwrap();
        t.join().unwrap();
        let want: Vec<u64> = gemm(&w, &x, m, k, n)
            .iter()
            .zip(&add)
            .map(|(p, a)| p.wrapping_add(*a) & (he.modulus() - 1))
            .collect();
        assert_eq!(got, want, "{m} x {k} x {n} cut as {b:?}");
    }
}

#[test]
fn parameters_refuse_a_width_they_cannot_carry() {
    for bits in [0, 62, 64] {
        let e = He::new(bits).err().expect("refused");
        assert!(e.to_string().contains("carries 1 to 61 bits"), "{e}");
    }
    for bits in [1, 20, 33, 50, 51, 61] {
        assert!(He::new(bits).is_ok(), "2^{bits}");
    }
}

/// What party 1 decrypts from the triple's second product, with party 0's evaluator as
/// `guard` leaves it: without a fresh R it is (A1 B0)^T, a function of party 0's B0.
fn second_result_shows_a1_b0(guard: Guard) -> bool {
    let shape = TripleShape {
        dout: 6,
        din: 10,
        n: 4,
        bits: 24,
    };
    let TripleShape { dout, din, n, .. } = shape;
    let mut r = rng(21);
    let (a0, a1) = (uniform(&mut r, dout * din), uniform(&mut r, dout * din));
    let (b0, b1) = (uniform(&mut r, din * n), uniform(&mut r, din * n));
    let c0 = uniform(&mut r, dout * n);
    let he = He::new(24).unwrap();
    let (mut ch0, mut ch1) = mem_pair();
    let (he0, b0c) = (he.clone(), b0.clone());
    let party0 = std::thread::spawn(move || {
        let mut ev = Evaluator::start(&mut ch0, he0).unwrap().weakened(guard);
        ev.triple(&mut ch0, shape, (&a0, &b0c, &c0), &mut rng(22))
            .unwrap();
    });
    // Party 1 as `KeyHolder::triple` runs it, keeping the second result.
    let sk = he.secret_key(&mut r);
    let pk = he.public_key(&sk, &mut r);
    ch1.send_owned(he.public_key_bytes(&pk)).unwrap();
    let [first, second] = shape.blocks();
    request(&mut ch1, &he, &sk, &b1, &first, &mut r).unwrap();
    let a1t = transpose(&a1, dout, din);
    let t2 = request(&mut ch1, &he, &sk, &a1t, &second, &mut r).unwrap();
    party0.join().unwrap();
    let a1b0 = gemm(&a1, &b0, dout, din, n);
    let mask = he.modulus() - 1;
    (0..dout).all(|i| (0..n).all(|j| t2[j * dout + i] == a1b0[i * n + j] & mask))
}

#[test]
fn the_triples_second_product_is_masked_by_a_fresh_r() {
    assert!(!second_result_shows_a1_b0(Guard::ALL));
    let broken = Guard::ALL.without(Guard::FRESH_R);
    assert!(
        second_result_shows_a1_b0(broken),
        "the control must see A1 B0"
    );
}

/// Each operation's time at both parameter sets, for docs/benchmarks.md ("Dealer-free
/// offline"): `cargo test --release --lib -- --ignored --nocapture he_operation_figures`.
#[test]
#[ignore]
fn he_operation_figures() {
    use std::time::Instant;
    for bits in [33, 55] {
        let he = He::new(bits).unwrap();
        let n = he.set.degree;
        let mut r = rng(30);
        let sk = he.secret_key(&mut r);
        let pk = he.public_key(&sk, &mut r);
        let reps = 16;
        let polys: Vec<Vec<u64>> = (0..reps)
            .map(|_| {
                uniform(&mut r, n)
                    .iter()
                    .map(|v| v & (he.modulus() - 1))
                    .collect()
            })
            .collect();
        let t = Instant::now();
        let cts: Vec<Vec<u8>> = polys
            .iter()
            .map(|p| he.encrypt(&sk, p, &mut r).unwrap())
            .collect();
        let enc = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        let cts: Vec<_> = cts
            .iter()
            .map(|c| he.ciphertext(c, "ct").unwrap())
            .collect();
        let read = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        let pts: Vec<_> = polys.iter().map(|p| he.encode(p).unwrap()).collect();
        let encode = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        let sum = he
            .dot(
                &cts.iter().collect::<Vec<_>>(),
                &pts.iter().collect::<Vec<_>>(),
            )
            .unwrap();
        let dot = t.elapsed().as_secs_f64() / reps as f64;
        let mask = vec![0u64; n];
        let t = Instant::now();
        let back = he.seal_return(sum, &mask, &pk, Guard::ALL, &mut r).unwrap();
        let seal = t.elapsed().as_secs_f64();
        let t = Instant::now();
        he.decrypt_return(&sk, &back, "back").unwrap();
        let dec = t.elapsed().as_secs_f64();
        println!(
            "2^{bits} (N = {n}): encrypt {:.2} ms ({} B sent), read {:.2} ms, encode {:.2} ms, \
             product in a sum {:.3} ms, seal a return {:.1} ms ({} B back), decrypt {:.2} ms",
            enc * 1e3,
            cts_len(&he, &polys[0]),
            read * 1e3,
            encode * 1e3,
            dot * 1e3,
            seal * 1e3,
            back.len(),
            dec * 1e3
        );
    }
}

fn cts_len(he: &He, p: &[u64]) -> usize {
    he.encrypt(&he.secret_key(&mut rng(31)), p, &mut rng(32))
        .unwrap()
        .len()
}

#[test]
fn the_flood_is_uniform_in_its_range_at_both_sets() {
    // 19 bits: f + 1 = 128, a whole top limb; 33 and 55: a partial one, at each set.
    for bits in [19, 33, 55] {
        let he = He::new(bits).unwrap();
        let f = flood_bits(he.set, bits, TERMS_LOG2);
        let mut r = rng(40);
        let sample = he.flood_sample(&mut r);
        let q = {
            let ct = he.encrypt(&he.secret_key(&mut r), &[0], &mut r).unwrap();
            he.ciphertext(&ct, "ct").unwrap()[0].ctx().modulus().clone()
        };
        let half = num_bigint::BigUint::from(1u8) << f;
        let (mut negative, mut top) = (0usize, 0usize);
        for v in &sample {
            // Centred: v - q when above q / 2.
            let (mag, neg) = if v > &(&q >> 1) {
                (&q - v, true)
            } else {
                (v.clone(), false)
            };
            if neg {
                negative += 1;
                assert!(mag <= half, "2^{bits}: {mag} below -2^{f}");
            } else {
                assert!(mag < half, "2^{bits}: {mag} at or above 2^{f}");
            }
            if mag.bits() == f as u64 {
                top += 1;
            }
        }
        let n = sample.len();
        // U = v + 2^f is uniform in [0, 2^(f+1)): each of its bits, one in every limb
        // included, is set in about half of the coefficients.
        let us: Vec<num_bigint::BigUint> = sample.iter().map(|v| (v + &half) % &q).collect();
        for bit in [0, 1, 31, 63, 64, 65, 100, 127, f as u64 - 1, f as u64] {
            if bit > f as u64 {
                continue;
            }
            let set = us.iter().filter(|u| u.bit(bit)).count();
            assert!(
                set.abs_diff(n / 2) < n / 20,
                "2^{bits}: bit {bit} set in {set} of {n}"
            );
        }
        // Half below zero, half of the magnitudes in the top bit's range, to a few sigma.
        assert!(
            negative.abs_diff(n / 2) < n / 20,
            "2^{bits}: {negative} of {n} negative"
        );
        assert!(
            top.abs_diff(n / 2) < n / 20,
            "2^{bits}: {top} of {n} in the top bit"
        );
    }
}
