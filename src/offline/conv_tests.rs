//! A graph's product steps made by the two servers: the rewriting as valid convolutions
//! against the ring's own products, CHEETAH's packing against the valid convolution in the
//! clear, the triple's relation by putting both parties' outputs together, and a failing
//! control for the masking of the coefficients that are not results.

use rand09::rngs::StdRng;
use rand09::{Rng, SeedableRng};

use super::conv::{ConvBlocks, ConvShape, Keys, Valid};
use super::he::{Guard, He};
use crate::inference::map::Map;
use crate::model::graph::random::win;
use crate::model::graph::{ConvOp, Window};
use crate::ring::graph::uses::{product, Dims};
use crate::ring::graph::Kind;
use crate::ring::Party;
use crate::twopc::channel::{bytes_to_u64s, mem_pair};

/// One party's weight mask share and map mask share.
type Operands = (Vec<u64>, Map<u64>);

fn uniform(r: &mut StdRng, n: usize) -> Vec<u64> {
    (0..n).map(|_| r.random()).collect()
}

fn conv(cin: usize, cout: usize, groups: usize, window: Window, transposed: bool) -> Kind {
    conv_padded(cin, cout, groups, window, transposed, [0, 0])
}

fn conv_padded(
    cin: usize,
    cout: usize,
    groups: usize,
    window: Window,
    transposed: bool,
    output_padding: [usize; 2],
) -> Kind {
    Kind::Conv {
        op: ConvOp {
            cin,
            cout,
            groups,
            window,
            output_padding,
            transposed,
            w: Vec::new(),
            b: Vec::new(),
        },
        w: Vec::new(),
        b: Vec::new(),
    }
}

/// Product steps of every form, each with the map it reads: plain, strided, dilated,
/// grouped, depthwise, asymmetrically padded, transposed (strided, with output padding),
/// 1 x 1, and the per-channel scales (one value per channel, one for all).
fn steps() -> Vec<(Kind, Dims, usize)> {
    let mut dilated = win(3, 1, 2);
    dilated.dilation = [2, 2];
    let mut odd = win(3, 2, 1);
    odd.pads = [0, 2, 1, 0];
    odd.kernel = [3, 2];
    let mut tdil = win(3, 2, 1);
    tdil.dilation = [2, 1];
    vec![
        (conv(3, 4, 1, win(3, 1, 1), false), [3, 9, 7], 3 * 4 * 9),
        (conv(2, 3, 1, win(3, 2, 1), false), [2, 11, 8], 2 * 3 * 9),
        (conv(2, 2, 1, dilated, false), [2, 10, 9], 2 * 2 * 9),
        (conv(4, 6, 2, win(3, 1, 1), false), [4, 6, 7], 6 * 2 * 9),
        (conv(3, 3, 3, win(3, 1, 1), false), [3, 8, 5], 3 * 9),
        (conv(2, 3, 1, odd, false), [2, 9, 10], 3 * 2 * 6),
        (conv(3, 2, 1, win(2, 2, 0), true), [3, 5, 4], 3 * 2 * 4),
        (
            conv_padded(2, 2, 1, win(4, 2, 1), true, [1, 0]),
            [2, 4, 5],
            2 * 2 * 16,
        ),
        (conv(2, 4, 2, tdil, true), [2, 5, 6], 2 * 2 * 9),
        (conv(2, 3, 1, win(3, 1, 0), true), [2, 6, 6], 2 * 3 * 9),
        (conv(5, 3, 1, win(1, 1, 0), false), [5, 6, 6], 15),
        (
            Kind::Affine {
                a: Vec::new(),
                b: Vec::new(),
            },
            [3, 5, 6],
            3,
        ),
        (
            Kind::PRelu {
                sh: 0,
                slope: Vec::new(),
            },
            [2, 4, 4],
            1,
        ),
    ]
}

fn map(r: &mut StdRng, [c, h, w]: Dims) -> Map<u64> {
    Map {
        c,
        h,
        w,
        v: uniform(r, c * h * w),
    }
}

/// The valid convolutions of `v` in the clear: groups x cout output planes.
fn valid_conv(v: &Valid, z: &[u64], k: &[u64]) -> Vec<u64> {
    let [k0, k1] = v.k;
    let (zp, [oh, ow]) = (v.z[0] * v.z[1], v.out);
    let mut out = vec![0u64; v.out_len()];
    for g in 0..v.groups {
        for o in 0..v.cout {
            for y in 0..oh {
                for x in 0..ow {
                    let mut s = 0u64;
                    for ci in 0..v.cin {
                        let plane = &z[(g * v.cin + ci) * zp..][..zp];
                        let kern = &k[((g * v.cout + o) * v.cin + ci) * k0 * k1..][..k0 * k1];
                        for ky in 0..k0 {
                            for kx in 0..k1 {
                                let zi = (y * v.step[0] + ky) * v.z[1] + x * v.step[1] + kx;
                                s = s.wrapping_add(kern[ky * k1 + kx].wrapping_mul(plane[zi]));
                            }
                        }
                    }
                    out[((g * v.cout + o) * oh + y) * ow + x] = s;
                }
            }
        }
    }
    out
}

#[test]
fn every_product_step_is_a_valid_convolution_of_its_rewriting() {
    let mut r = StdRng::seed_from_u64(1);
    for (kind, d, weights) in steps() {
        let (a, b) = (uniform(&mut r, weights), map(&mut r, d));
        let v = Valid::of(&kind, d).unwrap();
        let want = product(&kind, &a, &b).v;
        assert_eq!(
            valid_conv(&v, &v.planes(&b), &v.kernels(&a)),
            want,
            "{kind:?} over {d:?}"
        );
    }
}

/// a x b in Z_2^bits[X] / (X^n + 1), schoolbook.
fn negacyclic(a: &[u64], b: &[u64], mask: u64) -> Vec<u64> {
    let n = a.len();
    let mut c = vec![0u64; n];
    for (i, &x) in a.iter().enumerate().filter(|(_, x)| **x != 0) {
        for (j, &y) in b.iter().enumerate().filter(|(_, y)| **y != 0) {
            let p = x.wrapping_mul(y);
            let k = i + j;
            if k < n {
                c[k] = c[k].wrapping_add(p);
            } else {
                c[k - n] = c[k - n].wrapping_sub(p);
            }
        }
    }
    c.iter().map(|v| v & mask).collect()
}

#[test]
fn cheetahs_packing_gives_the_valid_convolution_on_every_cut() {
    let mut r = StdRng::seed_from_u64(2);
    let mask = (1u64 << 33) - 1;
    // Small rings force blocks along both axes and channel blocks.
    for degree in [64, 128, 1024] {
        for (kind, d, weights) in steps() {
            let (a, b) = (uniform(&mut r, weights), map(&mut r, d));
            let v = Valid::of(&kind, d).unwrap();
            let Ok(cut) = ConvBlocks::choose(degree, &v) else {
                assert!(v.k[0] * v.k[1] > degree, "{kind:?}: no cut at {degree}");
                continue;
            };
            let (z, k) = (v.planes(&b), v.kernels(&a));
            let (zg, kg) = (v.cin * v.z[0] * v.z[1], v.cout * v.cin * v.k[0] * v.k[1]);
            let plane = v.out[0] * v.out[1];
            let mut got = vec![u64::MAX; v.out_len()];
            for g in 0..v.groups {
                let (z, k) = (&z[g * zg..][..zg], &k[g * kg..][..kg]);
                for s in 0..cut.blocks() {
                    for o in 0..v.cout {
                        let mut sum = vec![0u64; degree];
                        for cb in 0..cut.cb {
                            let p = negacyclic(
                                &cut.z_poly(&v, z, s, cb, mask),
                                &cut.k_poly(&v, k, o, cb, mask),
                                mask,
                            );
                            sum.iter_mut()
                                .zip(&p)
                                .for_each(|(x, y)| *x = x.wrapping_add(*y) & mask);
                        }
                        for (coef, at) in cut.results(&v, s) {
                            let slot = &mut got[(g * v.cout + o) * plane + at];
                            assert_eq!(*slot, u64::MAX, "{kind:?}: output {at} twice");
                            *slot = sum[coef];
                        }
                    }
                }
            }
            let want: Vec<u64> = product(&kind, &a, &b).v.iter().map(|x| x & mask).collect();
            assert_eq!(got, want, "{kind:?} over {d:?} at degree {degree}: {cut:?}");
        }
    }
}

/// Both parties' sides of one product step over an in-memory channel, party 0 coming with
/// `c0`, each with its keys weakened by `guards`: party 1's share C1 and both parties' keys
/// (what each received).
fn run_triple(
    kind: &Kind,
    d: Dims,
    bits: u32,
    ops: [Operands; 2],
    c0: Vec<u64>,
    guards: [Guard; 2],
) -> (Vec<u64>, [Keys; 2]) {
    let he = He::new(bits).unwrap();
    let shape = ConvShape::new(kind, d, bits, he.set.degree).unwrap();
    let (mut ch0, mut ch1) = mem_pair();
    let [(a0, b0), (a1, b1)] = ops;
    std::thread::scope(|s| {
        let he0 = he.clone();
        let shape0 = &shape;
        let p0 = s.spawn(move || {
            let mut r = StdRng::seed_from_u64(7);
            let mut keys = Keys::start(&mut ch0, Party::S0, he0, &mut r)
                .unwrap()
                .weakened(guards[0]);
            let made = keys
                .conv_triple(
                    &mut ch0,
                    Party::S0,
                    kind,
                    shape0,
                    (&a0, &b0),
                    Some(&c0),
                    &mut r,
                )
                .unwrap();
            assert!(made.is_none(), "party 0 keeps nothing");
            keys
        });
        let mut r = StdRng::seed_from_u64(8);
        let mut keys = Keys::start(&mut ch1, Party::S1, he, &mut r)
            .unwrap()
            .weakened(guards[1]);
        let c1 = keys
            .conv_triple(&mut ch1, Party::S1, kind, &shape, (&a1, &b1), None, &mut r)
            .unwrap()
            .unwrap();
        (c1, [p0.join().unwrap(), keys])
    })
}

fn sum(x: &[u64], y: &[u64]) -> Vec<u64> {
    x.iter().zip(y).map(|(a, b)| a.wrapping_add(*b)).collect()
}

#[test]
fn a_convolution_triple_made_by_the_two_servers_satisfies_its_relation() {
    let mut r = StdRng::seed_from_u64(3);
    // Maps wider than one polynomial: blocks along both axes and channel blocks under the
    // encryption too.
    let big = [
        (conv(5, 2, 1, win(3, 1, 1), false), [5, 96, 90], 5 * 2 * 9),
        (conv(2, 3, 1, win(3, 2, 1), false), [2, 130, 70], 2 * 3 * 9),
        (
            Kind::Affine {
                a: Vec::new(),
                b: Vec::new(),
            },
            [2, 100, 100],
            2,
        ),
    ];
    for (n, (kind, d, weights)) in steps().into_iter().chain(big).enumerate() {
        let bits = [33, 20, 47][n % 3];
        let mask = (1u64 << bits) - 1;
        let ops = [0, 1].map(|_| (uniform(&mut r, weights), map(&mut r, d)));
        let v = Valid::of(&kind, d).unwrap();
        let c0 = uniform(&mut r, v.out_len());
        let a = sum(&ops[0].0, &ops[1].0);
        let b = Map {
            v: sum(&ops[0].1.v, &ops[1].1.v),
            ..ops[0].1.clone()
        };
        let (c1, _) = run_triple(&kind, d, bits, ops, c0.clone(), [Guard::ALL; 2]);
        let got: Vec<u64> = sum(&c0, &c1).iter().map(|x| x & mask).collect();
        let want: Vec<u64> = product(&kind, &a, &b).v.iter().map(|x| x & mask).collect();
        assert_eq!(
            got, want,
            "{kind:?} over {d:?}: C0 + C1 = (A0 + A1) (x) (B0 + B1) mod 2^{bits}"
        );
    }
}

/// A strided convolution whose B1 (party 1's, chosen to probe) is a unit at the top left and
/// A1 zero: every coefficient of the sums party 0 returns is then one of A0's kernel values
/// or zero, and the stride leaves most of them off the results. Whether party 1 finds A0's
/// values among the coefficients that are not results.
fn other_coefficients_show_a0(guard: Guard) -> bool {
    let kind = conv(2, 2, 1, win(3, 2, 1), false);
    let d = [2, 8, 8];
    let mut r = StdRng::seed_from_u64(4);
    let a0 = uniform(&mut r, 2 * 2 * 9);
    let b0 = map(&mut r, d);
    let mut b1 = Map {
        v: vec![0; 128],
        ..b0.clone()
    };
    b1.v[9] = 1;
    let v = Valid::of(&kind, d).unwrap();
    let c0 = uniform(&mut r, v.out_len());
    let ops = [(a0.clone(), b0), (vec![0; 36], b1)];
    let (_, [_, keys1]) = run_triple(&kind, d, 33, ops, c0, [guard, Guard::ALL]);
    let mask = (1u64 << 33) - 1;
    let cut = ConvBlocks::choose(8192, &v).unwrap();
    let kernel_values: Vec<u64> = a0.iter().map(|x| x & mask).filter(|x| *x != 0).collect();
    // Sums in the order they are sealed: output channel by output channel, block by block.
    (0..cut.blocks() * v.cout).any(|i| {
        let results: Vec<usize> = cut
            .results(&v, i % cut.blocks())
            .iter()
            .map(|(c, _)| *c)
            .collect();
        let got = keys1.open_seen(i);
        (0..got.len()).any(|c| !results.contains(&c) && kernel_values.contains(&got[c]))
    })
}

#[test]
fn the_coefficients_of_a_convolution_that_are_not_results_are_masked() {
    assert!(!other_coefficients_show_a0(Guard::ALL));
    let broken = Guard::ALL.without(Guard::MASK_ALL);
    assert!(
        other_coefficients_show_a0(broken),
        "the control must see A0"
    );
}

/// One product step's operands and A1 B0 (a function of party 0's map mask), for the
/// controls of what each side decrypts.
fn probe() -> (Kind, Dims, [Operands; 2], Vec<u64>, Vec<u64>) {
    probe_of(6, 5)
}

/// [`probe`] on an h x w map.
fn probe_of(h: usize, w: usize) -> (Kind, Dims, [Operands; 2], Vec<u64>, Vec<u64>) {
    let kind = conv(2, 3, 1, win(3, 1, 1), false);
    let d = [2, h, w];
    let mut r = StdRng::seed_from_u64(9);
    let ops = [0, 1].map(|_| (uniform(&mut r, 3 * 2 * 9), map(&mut r, d)));
    let c0 = uniform(&mut r, 3 * h * w);
    let a1b0 = product(&kind, &ops[1].0, &ops[0].1).v;
    (kind, d, ops, c0, a1b0)
}

/// The cross term party 0 sends last, as party 1 reads it with its own R1 left out (R1 = 0):
/// A1 B0 + R0, so A1 B0 itself unless party 0's fresh R0 masks it.
fn cross_term_shows_a1_b0(guard0: Guard) -> bool {
    let (kind, d, ops, c0, a1b0) = probe();
    let no_r1 = Guard::ALL.without(Guard::FRESH_R);
    let (_, [_, keys1]) = run_triple(&kind, d, 33, ops, c0, [guard0, no_r1]);
    let e = bytes_to_u64s(keys1.seen.last().unwrap(), a1b0.len(), "e").unwrap();
    let mask = (1u64 << 33) - 1;
    e.iter().zip(&a1b0).all(|(x, y)| *x == y & mask)
}

#[test]
fn the_cross_term_party_0_sends_is_masked_by_a_fresh_r() {
    assert!(!cross_term_shows_a1_b0(Guard::ALL));
    let broken = Guard::ALL.without(Guard::FRESH_R);
    assert!(cross_term_shows_a1_b0(broken), "the control must see A1 B0");
}

/// What party 0 decrypts on the kept outputs: A1 B0 - R1, so A1 B0 itself unless party 1's
/// fresh R1 masks it.
fn party_0_reads_a1_b0(guard1: Guard, (h, w): (usize, usize)) -> bool {
    let (kind, d, ops, c0, a1b0) = probe_of(h, w);
    let (_, [keys0, _]) = run_triple(&kind, d, 33, ops, c0, [Guard::ALL, guard1]);
    let v = Valid::of(&kind, d).unwrap();
    let cut = ConvBlocks::choose(8192, &v).unwrap();
    let mask = (1u64 << 33) - 1;
    let plane = v.out[0] * v.out[1];
    (0..cut.blocks() * v.cout).all(|i| {
        let got = keys0.open_seen(i);
        let o = i / cut.blocks();
        cut.results(&v, i % cut.blocks())
            .iter()
            .all(|&(coef, at)| got[coef] == a1b0[o * plane + at] & mask)
    })
}

/// On a map of one polynomial block and on one of several (where the sums' order, output
/// channel by output channel and block by block, is read as sealed).
#[test]
fn what_party_0_decrypts_is_masked_by_party_1s_fresh_r() {
    let wide = (100, 100);
    let v = Valid::of(&probe_of(wide.0, wide.1).0, [2, wide.0, wide.1]).unwrap();
    assert!(ConvBlocks::choose(8192, &v).unwrap().blocks() > 1);
    for hw in [(6, 5), wide] {
        assert!(!party_0_reads_a1_b0(Guard::ALL, hw));
        let broken = Guard::ALL.without(Guard::FRESH_R);
        assert!(
            party_0_reads_a1_b0(broken, hw),
            "the control must see A1 B0 ({hw:?})"
        );
    }
}
