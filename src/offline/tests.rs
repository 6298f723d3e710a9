//! The offline phase's products: each relation checked by putting both parties' outputs
//! together, and what the key's holder sees checked with a failing control for each of the
//! three steps that make a returned ciphertext safe.

use rand09::rngs::StdRng as ChaCha20Rng;
use rand09::{Rng, SeedableRng};

use super::he::{noise_bound_bits, Guard, He};
use super::packing::Blocks;
use super::product::{evaluate_guarded, request};
use super::triple::{Evaluator, KeyHolder, TripleShape};
use crate::ring::matmul::gemm;
use crate::twopc::channel::{mem_pair, Channel, Expect};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha20Rng, n: usize) -> Vec<u64> {
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
    ] {
        let TripleShape { dout, din, n, bits } = shape;
        let mut r = rng(seed);
        let (a0, a1) = (uniform(&mut r, dout * din), uniform(&mut r, dout * din));
        let (b0, b1) = (uniform(&mut r, din * n), uniform(&mut r, din * n));
        let c0 = uniform(&mut r, dout * n);
        let he = shape.he().unwrap();
        let (mut ch0, mut ch1) = mem_pair();
        let he0 = he.clone();
        let c0_for_party0 = c0.clone();
        let party0 = std::thread::spawn(move || {
            let mut r = rng(seed + 100);
            let ev = Evaluator::start(&mut ch0, &he0).unwrap();
            ev.triple(&mut ch0, &he0, shape, &a0, &b0, &c0_for_party0, &mut r)
                .unwrap();
            (a0, b0)
        });
        let mut r1 = rng(seed + 200);
        let kh = KeyHolder::start(&mut ch1, &he, &mut r1).unwrap();
        let c1 = kh.triple(&mut ch1, &he, shape, &a1, &b1, &mut r1).unwrap();
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
    let he = He::new(33, 1).unwrap();
    let blocks = Blocks::choose(m, k, n);
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
    let broken = Guard {
        rerandomise: false,
        ..Guard::ALL
    };
    assert!(second_component_shows_w(broken), "the control must see W");
}

/// The noise of a returned ciphertext (before the switch down, which the test leaves out to
/// look at it) for W = 0 and for W uniform: without flooding, far apart.
fn noise_shows_w(guard: Guard) -> bool {
    let guard = Guard {
        switch: false,
        ..guard
    };
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
    let broken = Guard {
        flood: false,
        ..Guard::ALL
    };
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
    let broken = Guard {
        mask_all: false,
        ..Guard::ALL
    };
    assert!(other_coefficients_show_w(broken), "the control must see W");
}

#[test]
fn the_product_noise_stays_under_its_bound_and_the_flooded_noise_decrypts() {
    for bits in [20, 33, 50] {
        let he = He::new(bits, 3).unwrap();
        let (m, k, n) = (2, 8 * 8192 / 16, 16); // eight inner blocks of 512 x 16
        let b = Blocks::choose(m, k, n);
        assert!(b.inner_blocks() <= 8, "{b:?}");
        let mut r = rng(u64::from(bits));
        // The worst operands: every coefficient t - 1.
        let w = vec![u64::MAX; m * k];
        let x = vec![u64::MAX; k * n];
        let (mut ch0, mut ch1) = mem_pair();
        let sk = he.secret_key(&mut r);
        let pk = he.public_key(&sk, &mut r);
        let he0 = he.clone();
        let bare = Guard {
            rerandomise: false,
            flood: false,
            switch: false,
            mask_all: true,
        };
        let t = std::thread::spawn(move || {
            let add = vec![0u64; m * n];
            evaluate_guarded(&mut ch0, &he0, &pk, &w, &add, &b, bare, &mut rng(5)).unwrap();
            evaluate_guarded(&mut ch0, &he0, &pk, &w, &add, &b, Guard::ALL, &mut rng(6)).unwrap();
        });
        let send_x = |ch1: &mut dyn Channel, r: &mut ChaCha20Rng| {
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
            noise_bound_bits(bits, 3)
        );
        assert!(
            noise <= noise_bound_bits(bits, 3),
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
        let he = He::new(24, 4).unwrap();
        let b = Blocks::choose(m, k, n);
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
            super::product::evaluate(&mut ch0, &he0, &pk, &w0, &add0, &b, &mut rng(12)).unwrap()
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
fn parameters_refuse_a_width_or_a_sum_they_cannot_carry() {
    assert!(He::new(0, 1).is_err());
    assert!(He::new(51, 1).is_err());
    assert!(He::new(64, 1).is_err());
    let e = He::new(50, 30).err().expect("too many terms for 50 bits");
    assert!(e.to_string().contains("bits of ciphertext modulus"), "{e}");
    assert!(He::new(33, 6).is_ok());
}
