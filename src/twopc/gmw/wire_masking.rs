//! Per-wire masking of the boolean engine (issue 31, item 1). What a server learns in a run is,
//! per round, its own message XOR the peer's: the opened `D = x ⊕ a`, `E = y ⊕ b` of every AND
//! gate of the level (an AND of the parties' own bits: the peer's masked bit), then every
//! output bit (XOR its daBit, or an edaBit-masked sum bit; a ReLU's carry in a round of its
//! chain); a ReLU's selection also opens, as sums, its truncated sum `X + t - a` and its
//! result `y + r` (each bit of them a wire here).
//! Each opened bit is a *wire* here, observed over many elements and runs. For any inputs,
//! every wire must be uniform, equal in distribution between two secrets, and independent of
//! every other wire (the XOR of any two is uniform).
//!
//! The inputs are fixed shares, not random ones: the masks must hide the wires whatever the
//! parties hold, and with fixed shares every wire that depends on the inputs alone is a
//! constant (only those behind an edaBit are random), so a missing
//! or reused mask shows at once (bulk byte histograms pool these small messages with the
//! rest and miss it). The broken engines of the negative controls exist in unit tests only.

use crate::ring::Party;
use std::thread;

use super::engine::{Broken, GmwParty, Slots};
use crate::circuit::activation::{relu_out_ref, ActCircuit, TruncParams};
use crate::circuit::bitslice::{slice, unslice};
use crate::circuit::netlist::Netlist;
use crate::corr::explicit::explicit_for;
use crate::corr::randomness::PartyRandomness;
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::model::mlp::{random_model, ModelMeta};
use crate::ring::cnn::CnnFixed;
use crate::ring::plan::{FixedParams, Plan};
use crate::twopc::channel::{mem_pair, Channel, Recording};

/// Elements per run (a multiple of 64: runs concatenate word by word) and runs per view.
const ELEMENTS: usize = 1024;
const RUNS: u32 = 4;
/// Bits observed per wire.
const N: f64 = (ELEMENTS * RUNS as usize) as f64;
/// A z-score above this fails (under uniformity p ~ 3e-12 per test: with some 10^5 tests a
/// false alarm has odds of about 1 in 10^6; a constant wire scores sqrt(N) = 64).
const Z_MAX: f64 = 7.0;

fn words(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// What party 0 learns, wire by wire (each wire's bits over all elements of all runs), when
/// the engines run `circ` on the fixed shares `shares` of every element; and the values the
/// two parties' output shares add up to in the last run.
/// A circuit and the width its outputs are read at.
type Circ = (ActCircuit, u32);

fn view(c: &Circ, shares: [u64; 2], broken: Option<Broken>) -> (Vec<Vec<u64>>, Vec<u64>) {
    let (circ, bits) = (&c.0, c.1);
    let w = ELEMENTS / 64;
    let mut wires: Vec<Vec<u64>> = Vec::new();
    let mut sums = Vec::new();
    for run in 0..RUNS {
        let at = Slot {
            layer: 0,
            batch: run,
        };
        // Fixed seeds, other for every run: a failure reruns the same.
        let seeds = [[run as u8; 32], [100 + run as u8; 32]];
        let r0 = PartyRandomness::new(Party::S0, seeds[0], Vec::new());
        let r1 = PartyRandomness::new(
            Party::S1,
            seeds[1],
            explicit_for(&seeds, at, &Netlist::record(circ), ELEMENTS, bits),
        );
        let (c0, mut c1) = mem_pair();
        let mut rec = Recording::new(c0);
        let play = |p: Party, ch: &mut dyn Channel, mut rand| {
            let mut e = GmwParty::new(p);
            e.broken = broken;
            let v = vec![shares[p as usize]; ELEMENTS];
            e.run_circuit(ch, &mut rand, at, circ, bits, &v).unwrap()
        };
        let (out0, out1) = thread::scope(|s| {
            let h1 = s.spawn(|| play(Party::S1, &mut c1, r1));
            (play(Party::S0, &mut rec, r0), h1.join().unwrap())
        });
        sums = out0
            .iter()
            .zip(&out1)
            .map(|(a, b)| a.wrapping_add(*b))
            .collect();
        assert_eq!(rec.sent.len(), rec.got.len());
        let mut i = 0;
        for (f, (mine, theirs)) in rec.sent.iter().zip(&rec.got).enumerate() {
            let opened = opened_planes(c, f, &words(mine), &words(theirs), w);
            for wire in opened.chunks_exact(w) {
                if run == 0 {
                    wires.push(Vec::new());
                }
                wires[i].extend_from_slice(wire);
                i += 1;
            }
        }
        assert_eq!(i, wires.len(), "every run opens the same wires");
    }
    (wires, sums)
}

/// What frame `f` of a run of `c` opens, bit-sliced (`w` words a wire): XOR-shared bits
/// XORed; a ReLU selection's sums (the last `min(k, bits)` wires of the outputs' frame, and
/// the k of the next when it extends its result) added as values of that many bits.
fn opened_planes(c: &Circ, f: usize, mine: &[u64], theirs: &[u64], w: usize) -> Vec<u64> {
    let net = Netlist::record(&c.0);
    let shape = RunShape::of(&net, ELEMENTS);
    let depth = net.and_depth();
    let added = match net.select {
        Some(_) if f == depth => shape.dabit_bits(c.1) as usize,
        Some(p) if f == depth + 1 && shape.extends(c.1) => p.k as usize,
        _ => 0,
    };
    let xored = mine.len() / w - added;
    let mut out: Vec<u64> = mine[..xored * w]
        .iter()
        .zip(theirs)
        .map(|(a, b)| a ^ b)
        .collect();
    // An AND of the parties' own bits has one slot, where each party sends its own input
    // masked: what party 0 learns there is S1's half alone, and what S1 learns is S0's half
    // alone, judged too (as one more wire of the frame).
    let owned = net.owned_ands();
    let levels = net
        .levels
        .iter()
        .enumerate()
        .filter(|l| !l.1.ands.is_empty());
    let first: usize = levels.clone().take(f).map(|l| l.1.ands.len()).sum();
    let level = levels.clone().nth(f).filter(|(_, lv)| {
        let n = lv.ands.len();
        owned[first..first + n].iter().any(Option::is_some)
    });
    if let Some((li, lv)) = level {
        // The engine's own layout of the level; a ReLU's carry is opened under its daBit
        // after the slots (XORed).
        let n = lv.ands.len();
        let slots = Slots::grouped(&lv.leader, &owned[first..first + n], first, w);
        let carry = usize::from(net.carry_round == Some(li));
        let mut s1_learns = Vec::new();
        for (&at, o) in slots.d.iter().zip(&slots.owned) {
            if o.is_some() {
                out[at..at + w].copy_from_slice(&theirs[at..at + w]);
                s1_learns.extend_from_slice(&mine[at..at + w]);
            }
        }
        assert_eq!(
            slots.words + carry * w,
            mine.len(),
            "frame {f} is the level's slots"
        );
        out.extend(s1_learns);
    }
    if added > 0 {
        let at = xored * w;
        let values = |m: &[u64]| unslice(added, ELEMENTS, |j, word| m[at + j * w + word]);
        let sum: Vec<u64> = values(mine)
            .iter()
            .zip(values(theirs))
            .map(|(a, b)| a.wrapping_add(b))
            .collect();
        out.extend(slice(&sum, added));
    }
    out
}

fn ones(v: &[u64]) -> f64 {
    v.iter().map(|x| x.count_ones()).sum::<u32>() as f64
}

/// The worst one-sample z-score of a wire against a fair coin, and the wire.
fn worst_wire(wires: &[Vec<u64>]) -> (f64, usize) {
    wires
        .iter()
        .map(|v| (2.0 * ones(v) - N).abs() / N.sqrt())
        .enumerate()
        .fold((0.0, 0), |m, (i, z)| if z > m.0 { (z, i) } else { m })
}

/// The worst z-score of the XOR of two wires against a fair coin, and the pair.
fn worst_pair(wires: &[Vec<u64>]) -> (f64, usize, usize) {
    let mut worst = (0.0, 0, 0);
    for i in 0..wires.len() {
        for j in i + 1..wires.len() {
            let x: u32 = wires[i]
                .iter()
                .zip(&wires[j])
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            let z = (2.0 * x as f64 - N).abs() / N.sqrt();
            if z > worst.0 {
                worst = (z, i, j);
            }
        }
    }
    worst
}

/// The worst two-sample z-score of one wire between two secrets' views.
fn worst_difference(a: &[Vec<u64>], b: &[Vec<u64>]) -> (f64, usize) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (ones(x) - ones(y)).abs() / (N / 2.0).sqrt())
        .enumerate()
        .fold((0.0, 0), |m, (i, z)| if z > m.0 { (z, i) } else { m })
}

/// Which test failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failed {
    BiasedWire,
    CorrelatedPair,
    SecretDependent,
}

/// The three tests over the views of `secrets` (each a pair of fixed shares); the first
/// that fails, if any.
fn failure(circ: &Circ, secrets: &[[u64; 2]], broken: Option<Broken>) -> Option<(Failed, String)> {
    let views: Vec<Vec<Vec<u64>>> = secrets.iter().map(|s| view(circ, *s, broken).0).collect();
    for (s, v) in secrets.iter().zip(&views) {
        let (z, i) = worst_wire(v);
        if z > Z_MAX {
            let what = format!("shares {s:?}: wire {i} of {} is biased (z {z:.1})", v.len());
            return Some((Failed::BiasedWire, what));
        }
        let (z, i, j) = worst_pair(v);
        if z > Z_MAX {
            let what = format!("shares {s:?}: wires {i} and {j} are correlated (z {z:.1})");
            return Some((Failed::CorrelatedPair, what));
        }
    }
    for (a, b) in views.iter().zip(views.iter().skip(1)) {
        let (z, i) = worst_difference(a, b);
        if z > Z_MAX {
            let what = format!("wire {i} differs between two secrets (z {z:.1})");
            return Some((Failed::SecretDependent, what));
        }
    }
    None
}

/// The circuits the boolean engine runs: an MLP's tanh* selection and ReLU (at the default
/// fixed point), a CNN's ReLU (ws 13, k 18), and a CNN graph's exact rescaling (`Trunc`, at
/// the same setting) and max comparison (the ReLU at sh = 0), each with secrets that are
/// negative, zero and positive after the truncation, as fixed shares (one split held
/// entirely by party 0).
fn cases() -> Vec<(&'static str, Circ, Vec<[u64; 2]>)> {
    let tanh_model = random_model(&[9, 4, 1], 1, ModelMeta::default());
    let plan = Plan::from_model(&tanh_model, FixedParams::default()).unwrap();
    let tanh = ActCircuit::tanh_star(&plan.acts[0]);
    let mlp_relu = FixedParams::default().relu_trunc();
    let cnn = CnnFixed::default();
    let cnn_relu = TruncParams {
        sh: cnn.ws,
        k: cnn.k,
    };
    let secrets = |sh: u32| {
        vec![
            [0, 0],
            [5u64 << sh, 0],
            [(3u64 << sh).wrapping_neg(), 0],
            [1u64 << (sh + 2), 3u64 << sh],
        ]
    };
    let max = ActCircuit::Relu(TruncParams { sh: 0, k: cnn.k });
    vec![
        ("MLP tanh*", (tanh, 64), secrets(plan.acts[0].sh)),
        (
            "MLP ReLU",
            (ActCircuit::Relu(mlp_relu), 64),
            secrets(mlp_relu.sh),
        ),
        (
            "CNN ReLU",
            (ActCircuit::Relu(cnn_relu), 64),
            secrets(cnn_relu.sh),
        ),
        (
            "graph Trunc",
            (ActCircuit::Trunc(cnn_relu), 64),
            secrets(cnn_relu.sh),
        ),
        ("graph max", (max, 64), secrets(0)),
        // Read at k bits (a max pooling's next comparison) and below: no extension, the
        // selection's sum at those bits.
        ("graph max at k", (max, cnn.k), secrets(0)),
        (
            "CNN ReLU below k",
            (ActCircuit::Relu(cnn_relu), cnn.k - 5),
            secrets(cnn_relu.sh),
        ),
    ]
}

#[test]
fn every_opened_wire_is_uniform_independent_and_secret_free() {
    for (name, circ, secrets) in cases() {
        if let Some((_, f)) = failure(&circ, &secrets, None) {
            panic!("{name}: {f}");
        }
        let v = view(&circ, secrets[0], None).0;
        eprintln!(
            "{name}: {} wires, worst z: one wire {:.1}, a pair {:.1}",
            v.len(),
            worst_wire(&v).0,
            worst_pair(&v).0
        );
    }
}

/// Each broken variant is caught by the tests above, on every circuit where it can show, by
/// the test that should catch it: a reused triple makes two opened wires equal up to a constant, an
/// unmasked output shows its wire's value (a constant here; for the graph's Trunc, whose
/// output at secret 0 is the offset 2^(k-1), the unmasked carry is the edaBit's top bit:
/// uniform alone, but equal to an opened sum bit), a reused edaBit half makes two opened
/// sum bits equal, a `b` shared by ANDs with different second inputs makes their two E
/// equal up to a constant, a ReLU selection's sum or result opened without its mask shows
/// its value, and so does an AND of the parties' own bits opened without its masks. An AND triple reused across levels even keeps the result exact, so only these
/// tests can see it.
#[test]
fn negative_controls_broken_masks_are_caught_per_wire() {
    for (name, circ, secrets) in cases() {
        let relu = matches!(circ.0, ActCircuit::Relu(_));
        let extends = relu && name != "graph max at k" && name != "CNN ReLU below k";
        let owns = Netlist::record(&circ.0)
            .owned_ands()
            .iter()
            .any(Option::is_some);
        for (broken, expect) in [
            (Broken::AndTripleReusedAcrossLevels, Failed::CorrelatedPair),
            (Broken::OutputOpenedWithoutDaBit, Failed::BiasedWire),
            (Broken::EdaHighPartReused, Failed::CorrelatedPair),
            (Broken::BSharedAcrossInputs, Failed::CorrelatedPair),
            (Broken::SelectSumUnmasked, Failed::BiasedWire),
            (Broken::ExtensionUnmasked, Failed::BiasedWire),
            (Broken::OwnedInputUnmasked, Failed::BiasedWire),
        ] {
            let f = failure(&circ, &secrets, Some(broken));
            let cannot_show = match broken {
                // A ReLU's sign circuit has one AND a depth; the rescaling's depths pair an
                // adder's AND with an edaBit adder's, whose input the edaBit masks, so the
                // two E under one `b` XOR to a uniform bit.
                Broken::BSharedAcrossInputs => name != "MLP tanh*",
                // A ReLU has no edaBit (it is finished by selection), the others no selection.
                Broken::EdaHighPartReused => relu,
                Broken::SelectSumUnmasked => !relu,
                Broken::ExtensionUnmasked => !extends,
                Broken::OwnedInputUnmasked => !owns,
                _ => false,
            };
            if cannot_show {
                assert!(f.is_none(), "{name}: {broken:?}: {f:?}");
                continue;
            }
            let Some((kind, f)) = f else {
                panic!("{name}: {broken:?} went unnoticed")
            };
            let expect = match (name, broken) {
                ("graph Trunc", Broken::OutputOpenedWithoutDaBit) => Failed::CorrelatedPair,
                _ => expect,
            };
            eprintln!("{name}, {broken:?}: {f}");
            assert_eq!(kind, expect, "{name}, {broken:?}: {f}");
        }
    }
    let t = TruncParams { sh: 13, k: 18 };
    let v = 5u64 << 13;
    let (_, sums) = view(
        &(ActCircuit::Relu(t), 64),
        [v, 0],
        Some(Broken::AndTripleReusedAcrossLevels),
    );
    assert!(sums.iter().all(|&y| y == relu_out_ref(&t, v, 0)));
}
