//! The extended opening of a boolean-engine ReLU's result (`twopc::extend`) against the
//! dealer's correlation for it (`dealer::graph::emit_map_extension`): here, not in dealer/
//! or twopc/, as the test needs both (docs/architecture.md, "The floors").

use crate::corr::pack::low_mask;
use crate::corr::randomness::{extension_bits, PartyRandomness};
use crate::dealer::graph::emit_map_extension;
use crate::ring::share::{add, Prg, Seed, Stream};
use crate::ring::Party;
use crate::twopc::channel::{mem_pair, Recording};
use crate::twopc::extend::{open_extending, top_bits_bare};

const SEEDS: [Seed; 2] = [[1u8; 32], [2u8; 32]];

/// One party's side of an extended opening: its opened map, the first message it
/// received (the peer's masked top bits) and its ρ.
struct Side {
    v: Vec<u64>,
    got: Vec<u8>,
    rho: Vec<u64>,
}

/// Both parties' openings of ReLU results held as shares `y[0]`, `y[1]` mod 2^k under
/// masks `b`, extended to `bits`, with `seeds` (both the same: one ρ for both) and party
/// 1's explicit values; `bare` runs the negative control that sends the top bits bare.
fn open_both(
    y: [&[u64]; 2],
    b: &[Vec<u64>; 2],
    (k, bits): (u32, u32),
    seeds: [Seed; 2],
    bare: bool,
) -> ([Side; 2], Vec<u64>) {
    let n = y[0].len();
    let mut p1 = Vec::new();
    emit_map_extension::<std::convert::Infallible>(&seeds, 3, n, bits - k, &mut |v, w| {
        p1.extend(v.iter().map(|x| x & low_mask(w)));
        Ok(())
    })
    .unwrap();
    let explicit = p1.clone();
    let (c0, c1) = mem_pair();
    let side = |p: Party, ch, corr| {
        top_bits_bare(bare);
        let mut rec = Recording::new(ch);
        let mut r = PartyRandomness::new(p, seeds[p as usize], corr);
        let pi = p as usize;
        let v = open_extending(&mut rec, p, &mut r, 3, y[pi], &b[pi], k, bits).unwrap();
        r.finish().unwrap();
        top_bits_bare(false);
        let rho = extension_bits(&mut Prg::new(&seeds[pi], Stream::MapExtend(3)), n);
        let got = rec.got.swap_remove(0);
        Side { v, got, rho }
    };
    let sides = std::thread::scope(|s| {
        let h = s.spawn(|| side(Party::S1, c1, p1));
        let s0 = side(Party::S0, c0, Vec::new());
        [s0, h.join().unwrap()]
    });
    (sides, explicit)
}

/// Shares mod 2^k of `y`, the first party's uniform.
fn shares_of(y: &[u64], k: u32, rng: &mut Prg) -> [Vec<u64>; 2] {
    let y0: Vec<u64> = rng.vec(y.len()).iter().map(|v| v & low_mask(k)).collect();
    let y1 = y
        .iter()
        .zip(&y0)
        .map(|(y, s)| y.wrapping_sub(*s) & low_mask(k))
        .collect();
    [y0, y1]
}

/// A layer's input extended by its shares' top bits (`twopc::extend::open_extending`, the
/// dealer's `emit_map_extension`) and opened is V = y - B mod 2^bits for every result y
/// of a ReLU held mod 2^k (0 <= y < 2^(k-1)), whatever the shares: at the edges of y,
/// with every pair of top bits, at a hidden layer's width and at 64.
#[test]
fn an_extended_opening_is_the_masked_relu_result() {
    let (k, n) = (18u32, 4096usize);
    let mut rng = Prg::new(&[7; 32], Stream::ImageShare);
    let top = (1u64 << (k - 1)) - 1;
    let y: Vec<u64> = (0..n)
        .map(|i| match i % 4 {
            0 => 0,
            1 => top,
            _ => rng.vec(1)[0] & top,
        })
        .collect();
    for bits in [31u32, 64] {
        let b = [rng.vec(n), rng.vec(n)];
        let ys = shares_of(&y, k, &mut rng);
        let mut pairs = [0usize; 4];
        for (a, b) in ys[0].iter().zip(&ys[1]) {
            pairs[((a >> (k - 1)) * 2 + (b >> (k - 1))) as usize] += 1;
        }
        assert!(pairs.iter().all(|&c| c > 100), "top bits {pairs:?}");
        let ([s0, s1], _) = open_both([&ys[0], &ys[1]], &b, (k, bits), SEEDS, false);
        assert_eq!(s0.v, s1.v, "both parties open the same map");
        let bs = add(&b[0], &b[1]);
        for i in 0..n {
            let want = y[i].wrapping_sub(bs[i]) & low_mask(bits);
            assert_eq!(s0.v[i], want, "element {i} (y {}), {bits} bits", y[i]);
        }
    }
}

/// z-score of `n` bits against a fair coin.
fn z_of(bits: impl Iterator<Item = u64>, n: usize) -> f64 {
    let ones = bits.filter(|&b| b & 1 == 1).count();
    (ones as f64 - n as f64 / 2.0).abs() / (n as f64 / 4.0).sqrt()
}

/// The largest z-score of party 1's explicit shares of ρ_0 ρ_1 (at `width` bits): each
/// bit must be uniform, the low one also beside the product.
fn explicit_z(explicit: &[u64], product: impl Fn(usize) -> u64, width: u32) -> f64 {
    let n = explicit.len();
    (0..width)
        .map(|j| {
            let bit = |i: usize| (explicit[i] >> j) ^ if j == 0 { product(i) } else { 0 };
            z_of((0..n).map(bit), n)
        })
        .fold(0.0, f64::max)
}

/// What each party learns from the top-bit message: for y = 0 everywhere the two
/// shares' top bits differ almost always, so the peer's bit beside the party's own top
/// bit, and beside its own top bit and ρ (which would unmask the peer's bit were ρ the
/// same for both), must be uniform (z below 7 of a binomial over 4096 elements), and so
/// must each bit of party 1's explicit share of ρ_0 ρ_1, the low one beside the product.
/// Three negative controls must fail: the top bits sent without ρ and one seed's ρ for
/// both (each exact), and the product itself as party 1's share, scored as the share is.
#[test]
fn the_shares_top_bits_cross_masked() {
    let (k, bits, n) = (18u32, 31u32, 4096usize);
    let mut rng = Prg::new(&[9; 32], Stream::ImageShare);
    let y = vec![0u64; n];
    let worst = |bare: bool, seeds: [Seed; 2], rng: &mut Prg| {
        let ys = shares_of(&y, k, rng);
        let b = [rng.vec(n), rng.vec(n)];
        let (sides, explicit) = open_both([&ys[0], &ys[1]], &b, (k, bits), seeds, bare);
        let bs = add(&b[0], &b[1]);
        assert!(
            (0..n).all(|i| sides[0].v[i] == bs[i].wrapping_neg() & low_mask(bits)),
            "exact (bare: {bare})"
        );
        let mut z: Vec<f64> = Vec::new();
        for (p, s) in sides.iter().enumerate() {
            assert_eq!(s.got.len(), n / 8, "one bit an element");
            let peer = |i: usize| (s.got[i / 8] >> (i % 8)) as u64 & 1;
            let own = |i: usize| ys[p][i] >> (k - 1);
            z.push(z_of((0..n).map(|i| peer(i) ^ own(i)), n));
            z.push(z_of((0..n).map(|i| peer(i) ^ own(i) ^ s.rho[i]), n));
        }
        let (r0, r1) = (&sides[0].rho, &sides[1].rho);
        let product = |i: usize| r0[i] & r1[i];
        z.push(explicit_z(&explicit, product, bits - k));
        // The control of the score: the product dealt bare, as a dealer that shared it
        // with a zero would, must be told apart.
        let bare_product: Vec<u64> = (0..n).map(product).collect();
        let z_bare = explicit_z(&bare_product, product, bits - k);
        assert!(
            z_bare > 7.0,
            "a bare product went unnoticed (z {z_bare:.1})"
        );
        z.into_iter().fold(0.0, f64::max)
    };
    let z = worst(false, SEEDS, &mut rng);
    assert!(z < 7.0, "the masked top bits are biased (z {z:.1})");
    let z = worst(true, SEEDS, &mut rng);
    assert!(z > 7.0, "top bits sent bare went unnoticed (z {z:.1})");
    let z = worst(false, [SEEDS[0]; 2], &mut rng);
    assert!(z > 7.0, "one ρ for both parties went unnoticed (z {z:.1})");
}
