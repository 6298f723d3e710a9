//! One batch of an activation circuit garbled by S1 and evaluated by S0, element-major shares
//! in and boolean output shares out (the circuits themselves: [`crate::circuit::activation`]).

use rand::{CryptoRng, RngCore};

use super::halfgates::{Evaluator, Garbler, GcError, LANES};
use crate::circuit::activation::ActCircuit;
use crate::corr::block::{Block, LengthError};
/// The low `n` bits of each share, little-endian, element after element:
/// the garbler's input bits, or the evaluator's COT choice bits.
pub fn share_bits(n: usize, shares: &[u64]) -> Vec<bool> {
    shares
        .iter()
        .flat_map(|&x| (0..n).map(move |i| (x >> i) & 1 == 1))
        .collect()
}

/// Wires of elements `base..base+LANES` (element-major `labels`, `n` per
/// element) regrouped as lane wires.
fn to_lanes(labels: &[Block], n: usize, base: usize) -> Vec<[Block; LANES]> {
    (0..n)
        .map(|i| std::array::from_fn(|l| labels[(base + l) * n + i]))
        .collect()
}

/// Colour bits of lane outputs, back in element-major order.
fn push_lane_shares(out: &mut Vec<bool>, wires: &[[Block; LANES]]) {
    for l in 0..LANES {
        out.extend(wires.iter().map(|w| w[l].lsb()));
    }
}

/// Garbler (S1) side of a batch. `shares`: S1's shares, one per element;
/// `q`: the COT outputs for the evaluator's `n·len` input bits (the same
/// element order). Returns the active labels of S1's own input bits (to
/// send) and S1's boolean output shares (`out_len` per element). The tables
/// stay in the garbler's buffer for [`Garbler::swap_table`].
///
/// # Panics
/// If `q.len() != n · shares.len()` (a caller bug) or `circ` is invalid.
pub fn garble_batch<R: RngCore + CryptoRng>(
    garbler: &mut Garbler<R>,
    circ: &ActCircuit,
    shares: &[u64],
    q: &[Block],
) -> (Vec<Block>, Vec<bool>) {
    let n = circ.n();
    let (zeros, active) = garbler.garbler_inputs(&share_bits(n, shares));
    let rho = garble_with_zeros(garbler, circ, shares.len(), &zeros, q);
    (active, rho)
}

/// As [`garble_batch`], but the active labels of the garbler's own input bits are given
/// (derived by both servers from a shared seed), so they need not be sent. Returns the
/// garbler's boolean output shares.
pub fn garble_batch_shared_labels<R: RngCore + CryptoRng>(
    garbler: &mut Garbler<R>,
    circ: &ActCircuit,
    shares: &[u64],
    q: &[Block],
    own_active: &[Block],
) -> Vec<bool> {
    let zeros = garbler.garbler_inputs_from_active(&share_bits(circ.n(), shares), own_active);
    garble_with_zeros(garbler, circ, shares.len(), &zeros, q)
}

fn garble_with_zeros<R: RngCore + CryptoRng>(
    garbler: &mut Garbler<R>,
    circ: &ActCircuit,
    items: usize,
    zeros: &[Block],
    q: &[Block],
) -> Vec<bool> {
    circ.validate().expect("valid circuit parameters");
    let n = circ.n(); // ≥ 1 once validated
    assert_eq!(q.len(), n * items, "one COT per evaluator input bit");
    assert_eq!(
        zeros.len(),
        n * items,
        "one zero label per garbler input bit"
    );
    garbler.reserve_ands(items * circ.and_gates() as usize);
    let ew: Vec<Block> = q
        .iter()
        .map(|&z| garbler.input_with_zero_label(z))
        .collect();
    let mut rho = Vec::with_capacity(items * circ.out_len());
    // Full groups of LANES elements side by side, the rest one by one; the
    // evaluator splits the batch the same way.
    let full = items / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let (gl, el) = (to_lanes(zeros, n, base), to_lanes(&ew, n, base));
        let out = circ.build(&mut garbler.lanes(), &gl, &el);
        push_lane_shares(&mut rho, &out);
    }
    for (g, e) in zeros[full * n..]
        .chunks_exact(n)
        .zip(ew[full * n..].chunks_exact(n))
    {
        let out = circ.build(garbler, g, e);
        rho.extend(garbler.output_shares(&out));
    }
    rho
}

/// Evaluator (S0) side of a batch, after [`Evaluator::load_table_buffer`]:
/// `g_active` are the garbler's labels, `t` S0's COT outputs. Returns S0's
/// boolean output shares; errors if the peer's data has the wrong size.
///
/// # Panics
/// If `t.len()` is not a multiple of `n` (a caller bug) or `circ` is invalid.
pub fn evaluate_batch(
    evaluator: &mut Evaluator,
    circ: &ActCircuit,
    g_active: &[Block],
    t: &[Block],
) -> Result<Vec<bool>, GcError> {
    circ.validate().expect("valid circuit parameters");
    let n = circ.n();
    assert_eq!(t.len() % n, 0, "COT outputs must be whole elements");
    if g_active.len() != t.len() {
        return Err(LengthError {
            what: "garbler input labels",
            expected: t.len() * Block::BYTES,
            got: g_active.len() * Block::BYTES,
        }
        .into());
    }
    let gw: Vec<Block> = g_active.iter().map(|&l| evaluator.input(l)).collect();
    let ew: Vec<Block> = t.iter().map(|&l| evaluator.input(l)).collect();
    let items = t.len() / n;
    let mut shares = Vec::with_capacity(items * circ.out_len());
    let full = items / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let (gl, el) = (to_lanes(&gw, n, base), to_lanes(&ew, n, base));
        let out = circ.build(&mut evaluator.lanes(), &gl, &el);
        push_lane_shares(&mut shares, &out);
    }
    for (g, e) in gw[full * n..]
        .chunks_exact(n)
        .zip(ew[full * n..].chunks_exact(n))
    {
        let out = circ.build(evaluator, g, e);
        shares.extend(evaluator.output_shares(&out));
    }
    evaluator.finish()?;
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::activation::tests::{cases, paper};
    use crate::circuit::activation::*;
    use crate::circuit::builder::{from_bits, to_bits};
    use crate::twopc::gc::halfgates::tests::TwoParty;
    use crate::twopc::ot::{b2a_receiver, b2a_sender};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    #[test]
    fn garbled_activations_match_ref() {
        let mut rng = ChaCha12Rng::seed_from_u64(23);
        let mut tp = TwoParty::new(24);
        let p = paper(24);
        let n = p.n();
        for (g, e) in cases(n, p.sh, p.k, &[p.a_fix, p.b_fix], &mut rng)
            .into_iter()
            .take(120)
        {
            let out = tp.run(&p, &to_bits(g, n), &to_bits(e, n));
            assert_eq!(
                decode_tanh_select(&p, &out).unwrap(),
                tanh_select_ref(&p, g, e)
            );
        }
        let q = TruncParams { sh: 36, k: 24 };
        for (g, e) in cases(q.n(), q.sh, q.k, &[], &mut rng).into_iter().take(60) {
            let out = tp.run(&q, &to_bits(g, q.n()), &to_bits(e, q.n()));
            assert_eq!(from_bits(&out), trunc_out_ref(&q, g, e));
        }
        let r = ActCircuit::Relu(TruncParams { sh: 12, k: 20 });
        for (g, e) in cases(r.n(), 12, 20, &[], &mut rng).into_iter().take(60) {
            let out = tp.run(&r, &to_bits(g, r.n()), &to_bits(e, r.n()));
            assert_eq!(
                from_bits(&out),
                relu_out_ref(&TruncParams { sh: 12, k: 20 }, g, e)
            );
        }
    }

    /// `cargo test --release -- --ignored --nocapture throughput`
    #[test]
    #[ignore]
    fn throughput() {
        use crate::circuit::builder::AndCounter;
        use crate::corr::base_ots::deal_base_ots;
        use crate::twopc::ot::{CotReceiver, CotSender};
        use std::time::Instant;
        let p = paper(24);
        let n = p.n();
        let items = 100_000;
        let mut rng = ChaCha12Rng::seed_from_u64(1);
        let delta = Block(Block::random(&mut rng).0 | 1);
        let hash = crate::twopc::gc::halfgates::tests::test_hash();
        let mut g = Garbler::new(delta, hash.clone(), ChaCha12Rng::seed_from_u64(2));
        let (gw, act) = g.garbler_inputs(&vec![false; 2 * n]);
        let mut cnt = AndCounter::default();
        drop(tanh_select(&mut cnt, &p, &vec![(); n], &vec![(); n]));
        // Stream in batches as the protocol does: tables go out per batch, the garbler
        // going on in a buffer whose pages are already in (no page faults in the timing).
        let batch = 1000;
        let table_bytes = batch * cnt.ands as usize * 32;
        let touched = || {
            let mut b = vec![0u8; table_bytes];
            b.clear();
            b
        };
        g.reserve_ands(batch * cnt.ands as usize);
        let mut tables = Vec::new();
        let (mut tg, mut te) = (0.0, 0.0);
        let mut e = Evaluator::new(hash.clone());
        for _ in 0..items / batch {
            let next = touched();
            let t0 = Instant::now();
            for _ in 0..batch {
                drop(tanh_select(&mut g, &p, &gw[..n], &gw[n..]));
            }
            tables.push(g.swap_table(next));
            tg += t0.elapsed().as_secs_f64();
        }
        for t in tables {
            let t0 = Instant::now();
            e.load_table_buffer(t).unwrap();
            for _ in 0..batch {
                drop(tanh_select(&mut e, &p, &act[..n], &act[n..]));
            }
            te += t0.elapsed().as_secs_f64();
            e.finish().unwrap();
        }
        let ands = (items as u64 * cnt.ands) as f64;
        println!(
            "tanh_select x{items}: garble {:.1} M AND/s ({tg:.3} s), evaluate {:.1} M AND/s ({te:.3} s)",
            ands / tg / 1e6,
            ands / te / 1e6
        );
        // The batch API: LANES elements garbled side by side.
        let circ = ActCircuit::TanhSelect(p);
        let per = 4096;
        let shares: Vec<u64> = (0..per).map(|_| rng.gen()).collect();
        let q: Vec<Block> = (0..per * n).map(|_| Block::random(&mut rng)).collect();
        let (mut tg, mut te) = (0.0, 0.0);
        for _ in 0..items / per {
            let t0 = Instant::now();
            let (act, _) = garble_batch(&mut g, &circ, &shares, &q);
            // The evaluator's last buffer goes back to the garbler, as the link's spares do.
            let tables = g.swap_table(e.take_table_buffer());
            tg += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            e.load_table_buffer(tables).unwrap();
            evaluate_batch(&mut e, &circ, &act, &q).unwrap();
            te += t0.elapsed().as_secs_f64();
        }
        let ands = ((items / per * per) as u64 * cnt.ands) as f64;
        println!(
            "garble_batch/evaluate_batch: garble {:.1} M AND/s, evaluate {:.1} M AND/s",
            ands / tg / 1e6,
            ands / te / 1e6
        );
        let (br, bs) = deal_base_ots(&mut rng);
        let (mut r, mut s) = (CotReceiver::new(br), CotSender::new(bs));
        let m = 4_000_000;
        let choices: Vec<bool> = (0..m).map(|i| i % 3 == 0).collect();
        let t0 = Instant::now();
        let (msg, _t) = r.extend(&choices);
        let tr = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let q = s.extend(m, &msg).unwrap();
        let ts = t0.elapsed().as_secs_f64();
        println!(
            "COT x{m}: receiver {:.1} M OT/s ({tr:.3} s), sender {:.1} M OT/s ({ts:.3} s), {} bytes",
            m as f64 / tr / 1e6,
            m as f64 / ts / 1e6,
            msg.len()
        );
        let rho = vec![true; m];
        let w = vec![1u64; m];
        let groups = vec![1usize; m];
        let t0 = Instant::now();
        let (bmsg, _) = crate::twopc::ot::b2a_sender(&hash, s.delta(), &q, &rho, &w, &groups, 0);
        println!(
            "B2A sender x{m}: {:.1} M bits/s",
            m as f64 / t0.elapsed().as_secs_f64() / 1e6
        );
        let t0 = Instant::now();
        b2a_receiver(&hash, &_t, &choices, &bmsg, &groups, 0).unwrap();
        println!(
            "B2A receiver x{m}: {:.1} M bits/s",
            m as f64 / t0.elapsed().as_secs_f64() / 1e6
        );
    }

    /// The full path with the batch API and bytes between the parties:
    /// COT for S0's input bits, garbling, evaluation, B2A of the output bits;
    /// arithmetic shares reconstruct the reference values.
    #[test]
    fn batches_then_b2a_reconstruct() {
        use crate::corr::block::{blocks_from_bytes, blocks_to_bytes};
        let mut rng = ChaCha12Rng::seed_from_u64(25);
        let mut tp = TwoParty::new(26);
        let (p, q) = (paper(42), TruncParams { sh: 36, k: 24 });
        // Sizes with and without a partial group of LANES elements.
        for (circ, items) in [
            (ActCircuit::TanhSelect(p), 43),
            (ActCircuit::Relu(q), 16),
            (ActCircuit::TanhSelect(paper(24)), 5),
            (ActCircuit::Relu(TruncParams { sh: 12, k: 20 }), 21),
            (ActCircuit::Trunc(TruncParams { sh: 13, k: 18 }), 19),
            (ActCircuit::Trunc(TruncParams { sh: 0, k: 18 }), 7),
        ] {
            // Full 64-bit shares: the circuits only read their low n bits.
            let s1: Vec<u64> = (0..items).map(|_| rng.gen()).collect();
            let s0: Vec<u64> = (0..items).map(|_| rng.gen()).collect();
            let n = circ.n();
            // S0 -> S1: COT extension for S0's input bits.
            let (msg, t) = tp.cot_r.extend(&share_bits(n, &s0));
            let qs = tp.cot_s.extend(n * items, &msg).unwrap();
            // S1 -> S0: own labels and tables.
            let (active, rho) = garble_batch(&mut tp.garbler, &circ, &s1, &qs);
            let tables = tp.garbler.swap_table(Vec::new());
            assert_eq!(tables.len() as u64, 32 * circ.and_gates() * items as u64);
            let labels = blocks_to_bytes(&active);
            // S0 evaluates.
            let g_act = blocks_from_bytes("labels", &labels, n * items).unwrap();
            tp.evaluator.load_table_buffer(tables).unwrap();
            let e_sh = evaluate_batch(&mut tp.evaluator, &circ, &g_act, &t).unwrap();
            // B2A: S0 -> S1 COT extension with S0's shares as choices, S1 -> S0 corrections.
            let (w, groups) = circ.b2a_layout(items);
            let tweak = tp.cot_r.next_ot_index();
            let (msg, t2) = tp.cot_r.extend(&e_sh);
            let q2 = tp.cot_s.extend(e_sh.len(), &msg).unwrap();
            let (bmsg, a1) = b2a_sender(&tp.hash, tp.cot_s.delta(), &q2, &rho, &w, &groups, tweak);
            let a0 = b2a_receiver(&tp.hash, &t2, &e_sh, &bmsg, &groups, tweak).unwrap();
            let sum: Vec<u64> = a0
                .iter()
                .zip(&a1)
                .map(|(x, y)| x.wrapping_add(*y))
                .collect();
            for i in 0..items {
                match &circ {
                    ActCircuit::TanhSelect(p) => {
                        let (tc, r1, r2, s1b, s2b, sgn) = tanh_select_ref(p, s1[i], s0[i]);
                        let want = [tc, r1 as u64, r2 as u64, s1b as u64, s2b as u64, sgn as u64];
                        assert_eq!(&sum[6 * i..6 * i + 6], &want, "item {i}");
                    }
                    ActCircuit::Relu(q) => {
                        assert_eq!(sum[i], relu_out_ref(q, s1[i], s0[i]), "item {i}");
                    }
                    ActCircuit::Trunc(q) => {
                        assert_eq!(sum[i], rescale_out_ref(q, s1[i], s0[i]), "item {i}");
                    }
                }
            }
        }
        // A wrong label count from the peer is an error, not a panic.
        let circ = ActCircuit::Relu(q);
        assert!(evaluate_batch(&mut tp.evaluator, &circ, &[], &[Block::ZERO; 60]).is_err());
    }
}
