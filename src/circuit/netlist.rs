//! A circuit recorded once from its [`Circuit`] definition into a gate list, and scheduled by
//! AND depth: the boolean engine opens every AND gate of one depth, for every element of a
//! batch, in one round.

use crate::circuit::activation::{relu_sign_out, ActCircuit, TruncParams};
use crate::circuit::builder::Circuit;
use crate::circuit::gadgets::add_mod;

/// One recorded gate; operands are indices of earlier gates (so the list is in topological
/// order by construction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Bit `i` of S1's input (the garbler's `g` in the GC engine).
    InputS1(u32),
    /// Bit `i` of S0's input (the evaluator's `e`).
    InputS0(u32),
    /// Bit `i` of the element's edaBits (XOR-shared dealer randomness, see [`Conversion`]).
    InputR(u32),
    Const(bool),
    Not(u32),
    Xor(u32, u32),
    And(u32, u32),
}

/// Records gates; its wires are gate indices.
#[derive(Default)]
struct Recorder {
    gates: Vec<Gate>,
}

impl Recorder {
    /// A recorder holding the two parties' `n` input bits each (S1's first: the gates'
    /// indices are their bit positions), and their wires.
    fn with_inputs(n: usize) -> (Recorder, Vec<u32>, Vec<u32>) {
        let mut rec = Recorder::default();
        let g = (0..n).map(|i| rec.push(Gate::InputS1(i as u32))).collect();
        let e = (0..n).map(|i| rec.push(Gate::InputS0(i as u32))).collect();
        (rec, g, e)
    }

    fn push(&mut self, g: Gate) -> u32 {
        self.gates.push(g);
        (self.gates.len() - 1) as u32
    }
}

impl Circuit for Recorder {
    type Wire = u32;
    fn xor(&mut self, a: &u32, b: &u32) -> u32 {
        self.push(Gate::Xor(*a, *b))
    }
    fn and(&mut self, a: &u32, b: &u32) -> u32 {
        self.push(Gate::And(*a, *b))
    }
    fn not(&mut self, a: &u32) -> u32 {
        self.push(Gate::Not(*a))
    }
    fn constant(&mut self, bit: bool) -> u32 {
        self.push(Gate::Const(bit))
    }
}

/// How the outputs of one B2A group of the circuit ([`ActCircuit::b2a_layout`]) become an
/// additive share in Z_2^64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// Each bit opened masked by a daBit: `[v] = sum_j w_j [o_j]`. `outs`: (output index,
    /// weight).
    Bits(Vec<(usize, u64)>),
    /// An unsigned m-bit value y (weights 1, 2, ..., 2^(m-1)) converted with an edaBit, a
    /// random r < 2^m held as XOR-shared bits (circuit inputs `InputR`) and as an additive
    /// share: the circuit computes s = y + r in m + 1 bits (m AND gates); the low m bits of s
    /// are opened in the clear (uniform, since r is), the carry is opened masked by a daBit,
    /// and `[y] = c - [r] + 2^m [carry]`. Two explicit dealer values per element instead of m.
    Eda {
        /// Output indices of s's low bits, least significant first.
        open: Vec<usize>,
        /// Output index of the carry.
        carry: usize,
        /// Which of the element's edaBits (in `InputR` order).
        eda: usize,
    },
}

/// A recorded circuit with its round schedule.
#[derive(Clone, Debug)]
pub struct Netlist {
    /// Live gates only (those an output depends on), renumbered, in topological order.
    pub gates: Vec<Gate>,
    /// Output wires, in opening order.
    pub outputs: Vec<u32>,
    /// Per output: opened masked by a daBit (true) or in the clear (false: already masked
    /// by an edaBit).
    pub masked: Vec<bool>,
    /// One per B2A group of the circuit, in its order.
    pub conversions: Vec<Conversion>,
    /// Bits of each edaBit of an element (`InputR` bits are their concatenation).
    pub eda_bits: Vec<u32>,
    /// `levels[d]`: the free gates whose AND depth is `d`, then the AND gates of depth
    /// `d + 1` (opened together in round `d + 1`). The last level has no AND gates.
    pub levels: Vec<Level>,
    /// Input bits per party per element.
    pub n: usize,
    /// A ReLU finished in the ring (docs/protocol.md, "The ReLU by selection"): the outputs
    /// are [`relu_sign_out`]'s, each opened masked by a daBit; `conversions` converts all but
    /// the last (the sign), which selects `(g >> sh) + (e >> sh) + carry` with a product
    /// correlation.
    pub select: Option<TruncParams>,
    /// A ReLU's carry into bit sh (its first output, when sh > 0) is opened in the AND round
    /// of this level, the first after the carry is made, not with the sign: the engine adds
    /// it to the truncated sum before the sign is known.
    pub carry_round: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Level {
    pub free: Vec<u32>,
    pub ands: Vec<u32>,
    /// Per AND of `ands`: the index in `ands` of the AND whose triple's `b` it uses, itself
    /// or the first of the level with the same second input. ANDs of a level sharing an
    /// input share that `b`, so the input's masked value `E = y ⊕ b` is opened once for
    /// all of them (docs/protocol.md, "Shared AND inputs"): tanh*'s circuit has such groups
    /// (the whole ReLU circuit's selection did, every value bit ANDed with one sign bit).
    pub leader: Vec<u32>,
}

impl Netlist {
    /// Records `circ` (the definition the GC engine garbles), adds the conversion of each
    /// unsigned multi-bit output group by an edaBit (other outputs: a daBit per bit), and
    /// schedules it. The boolean engine and its dealer both build it this way.
    /// A ReLU is recorded as its sign circuit, finished in the ring ([`Self::select`]).
    pub fn record(circ: &ActCircuit) -> Netlist {
        match circ {
            ActCircuit::Relu(p) => Self::record_select(p),
            _ => Self::record_with(circ, true),
        }
    }

    /// The ReLU's sign circuit ([`relu_sign_out`]): every output masked by a daBit, the
    /// carry term converted as a bit of weight 1, the sign left to the engine's selection.
    fn record_select(p: &TruncParams) -> Netlist {
        let n = p.n();
        let (mut rec, g, e) = Recorder::with_inputs(n);
        let outputs = relu_sign_out(&mut rec, p, &g, &e);
        let carry_terms = outputs.len() - 1;
        let mut net = Self::schedule(rec.gates, outputs, n);
        net.masked = vec![true; carry_terms + 1];
        net.conversions = (0..carry_terms)
            .map(|j| Conversion::Bits(vec![(j, 1)]))
            .collect();
        net.select = Some(*p);
        if carry_terms > 0 {
            // The carry is a free gate of its level, or an AND of the level before (the
            // carry into bit 1); the chain's next AND is in that round (k >= 2).
            let t = net.outputs[0];
            let made = net.levels.iter().position(|l| l.free.contains(&t));
            let round = made.unwrap_or_else(|| {
                1 + net
                    .levels
                    .iter()
                    .position(|l| l.ands.contains(&t))
                    .expect("the carry is a gate of the chain")
            });
            assert!(
                !net.levels[round].ands.is_empty(),
                "no AND round after the carry"
            );
            net.carry_round = Some(round);
        }
        net
    }

    /// `eda`: convert unsigned groups with edaBits (false: the bare circuit, every output
    /// bit with a daBit).
    fn record_with(circ: &ActCircuit, eda: bool) -> Netlist {
        let n = circ.n();
        let (mut rec, g, e) = Recorder::with_inputs(n);
        let bits = circ.build(&mut rec, &g, &e);
        let (weights, groups) = circ.b2a_layout(1);
        let (mut outputs, mut masked, mut conversions, mut eda_bits) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        for len in groups {
            let (gb, gw) = (&bits[at..at + len], &weights[at..at + len]);
            at += len;
            let unsigned = gw.iter().enumerate().all(|(j, &w)| w == 1u64 << j);
            // m + 1 bits of y + r must fit a ring element's shift: m < 64.
            if eda && (2..64).contains(&len) && unsigned {
                let first = eda_bits.iter().sum::<u32>();
                let r: Vec<u32> = (0..len as u32)
                    .map(|j| rec.push(Gate::InputR(first + j)))
                    .collect();
                let zero = rec.push(Gate::Const(false));
                let (mut y, mut rr) = (gb.to_vec(), r);
                y.push(zero);
                rr.push(zero);
                let sum = add_mod(&mut rec, &y, &rr);
                let base = outputs.len();
                outputs.extend_from_slice(&sum);
                masked.extend(std::iter::repeat_n(false, len));
                masked.push(true);
                conversions.push(Conversion::Eda {
                    open: (base..base + len).collect(),
                    carry: base + len,
                    eda: eda_bits.len(),
                });
                eda_bits.push(len as u32);
            } else {
                let base = outputs.len();
                outputs.extend_from_slice(gb);
                masked.extend(std::iter::repeat_n(true, len));
                conversions.push(Conversion::Bits(
                    gw.iter().enumerate().map(|(j, &w)| (base + j, w)).collect(),
                ));
            }
        }
        let mut net = Self::schedule(rec.gates, outputs, n);
        net.masked = masked;
        net.conversions = conversions;
        net.eda_bits = eda_bits;
        net
    }

    /// Outputs opened masked by a daBit.
    pub fn dabits(&self) -> usize {
        self.masked.iter().filter(|&&m| m).count()
    }

    /// edaBit input bits per element.
    pub fn r_bits(&self) -> usize {
        self.eda_bits.iter().sum::<u32>() as usize
    }

    fn schedule(all: Vec<Gate>, outputs: Vec<u32>, n: usize) -> Netlist {
        // Liveness: walk back from the outputs; a dead AND would cost a triple and a round.
        let mut live = vec![false; all.len()];
        for &o in &outputs {
            live[o as usize] = true;
        }
        for i in (0..all.len()).rev() {
            if !live[i] {
                continue;
            }
            match all[i] {
                Gate::Not(a) => live[a as usize] = true,
                Gate::Xor(a, b) | Gate::And(a, b) => {
                    live[a as usize] = true;
                    live[b as usize] = true;
                }
                _ => {}
            }
        }
        // Inputs stay in place (their indices are their bit positions) even when unused.
        for (i, g) in all.iter().enumerate() {
            if matches!(g, Gate::InputS1(_) | Gate::InputS0(_) | Gate::InputR(_)) {
                live[i] = true;
            }
        }
        let mut new_index = vec![u32::MAX; all.len()];
        let mut gates = Vec::new();
        for (i, g) in all.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let m = |w: u32| new_index[w as usize];
            let ng = match *g {
                Gate::Not(a) => Gate::Not(m(a)),
                Gate::Xor(a, b) => Gate::Xor(m(a), m(b)),
                Gate::And(a, b) => Gate::And(m(a), m(b)),
                other => other,
            };
            new_index[i] = gates.len() as u32;
            gates.push(ng);
        }
        let outputs: Vec<u32> = outputs.iter().map(|&o| new_index[o as usize]).collect();

        let mut depth = vec![0u32; gates.len()];
        for (i, g) in gates.iter().enumerate() {
            depth[i] = match *g {
                Gate::Not(a) => depth[a as usize],
                Gate::Xor(a, b) => depth[a as usize].max(depth[b as usize]),
                Gate::And(a, b) => depth[a as usize].max(depth[b as usize]) + 1,
                _ => 0,
            };
        }
        let max_depth = depth.iter().copied().max().unwrap_or(0) as usize;
        let mut levels = vec![Level::default(); max_depth + 1];
        for (i, g) in gates.iter().enumerate() {
            let d = depth[i] as usize;
            match g {
                Gate::And(..) => levels[d - 1].ands.push(i as u32),
                Gate::InputS1(_) | Gate::InputS0(_) | Gate::InputR(_) => {}
                _ => levels[d].free.push(i as u32),
            }
        }
        for lv in &mut levels {
            lv.leader = group_shared_inputs(&mut gates, &lv.ands);
        }
        Netlist {
            gates,
            outputs,
            masked: Vec::new(),
            conversions: Vec::new(),
            eda_bits: Vec::new(),
            levels,
            n,
            select: None,
            carry_round: None,
        }
    }

    /// AND gates per element (the boolean engine's cost).
    pub fn and_gates(&self) -> usize {
        self.levels.iter().map(|l| l.ands.len()).sum()
    }

    /// Per AND triple, in the engine's order (level after level, AND after AND): the index
    /// of the triple whose `b` it uses ([`Level::leader`]).
    pub fn b_sources(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.and_gates());
        for lv in &self.levels {
            let base = out.len();
            out.extend(lv.leader.iter().map(|&j| base + j as usize));
        }
        out
    }

    /// Masked inputs opened per element in the AND rounds: a D for every AND, an E for
    /// every group of ANDs sharing an input; one for an AND of the two parties' own input
    /// bits ([`Self::owned_ands`]), each party opening its own.
    pub fn and_openings(&self) -> usize {
        let owned = self.owned_ands().iter().filter(|o| o.is_some()).count();
        let all: usize = self
            .levels
            .iter()
            .map(|l| {
                let leaders = l.leader.iter().enumerate();
                l.ands.len() + leaders.filter(|&(j, &f)| j == f as usize).count()
            })
            .sum();
        all - owned
    }

    /// Per AND triple, in the engine's order: `Some(p)` when the AND's first input is a bit
    /// of party p's own input and its second a bit of the other party's, and no other AND of
    /// its level shares that second input (a ReLU's first carry, `g_0 ∧ e_0`). Such an AND's
    /// `a` is known to p alone and its `b` to the other party alone
    /// ([`crate::corr::randomness::AndTriples::keep_owned`]): each party opens only its own
    /// input, one bit a direction instead of two (docs/protocol.md, "ANDs of the parties'
    /// own bits").
    pub fn owned_ands(&self) -> Vec<Option<u8>> {
        let owner = |w: u32| match self.gates[w as usize] {
            Gate::InputS0(_) => Some(0u8),
            Gate::InputS1(_) => Some(1),
            _ => None,
        };
        let mut out = Vec::with_capacity(self.and_gates());
        for lv in &self.levels {
            for (j, &gi) in lv.ands.iter().enumerate() {
                let Gate::And(x, y) = self.gates[gi as usize] else {
                    unreachable!("AND level holds only AND gates")
                };
                let alone = lv.leader[j] as usize == j
                    && lv.leader.iter().filter(|&&l| l as usize == j).count() == 1;
                out.push(match (owner(x), owner(y)) {
                    (Some(p), Some(q)) if p != q && alone => Some(p),
                    _ => None,
                });
            }
        }
        out
    }

    /// What a dealer and a server must agree on to lay out a run's correlations and
    /// messages: (AND gates, daBits, edaBits, AND inputs opened) per element. Triplet headers
    /// record it (`dealer::boolean::BooleanDeal::shapes`, `dealer::graph::circuit_shapes`).
    pub fn shape(&self) -> (usize, usize, usize, usize) {
        (
            self.and_gates(),
            self.dabits(),
            self.eda_bits.len(),
            self.and_openings(),
        )
    }

    /// Rounds of AND openings per batch (the AND depth).
    pub fn and_depth(&self) -> usize {
        self.levels.iter().filter(|l| !l.ands.is_empty()).count()
    }
}

/// Puts the more shared input of each AND of `ands` (one level) second, then returns each
/// AND's leader: the first AND of the level with the same second input. AND is symmetric,
/// so swapping its inputs changes nothing but which of them is opened as E.
fn group_shared_inputs(gates: &mut [Gate], ands: &[u32]) -> Vec<u32> {
    let inputs = |g: Gate| match g {
        Gate::And(x, y) => (x, y),
        other => unreachable!("{other:?} in an AND level"),
    };
    let mut uses = std::collections::HashMap::<u32, usize>::new();
    for &gi in ands {
        let (x, y) = inputs(gates[gi as usize]);
        *uses.entry(x).or_default() += 1;
        *uses.entry(y).or_default() += 1;
    }
    let mut first = std::collections::HashMap::<u32, u32>::new();
    ands.iter()
        .enumerate()
        .map(|(j, &gi)| {
            let (x, y) = inputs(gates[gi as usize]);
            let y = if uses[&x] > uses[&y] {
                gates[gi as usize] = Gate::And(y, x);
                x
            } else {
                y
            };
            *first.entry(y).or_insert(j as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::activation::{ActParams, TruncParams};
    use crate::circuit::builder::{to_bits, PlainEval};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    impl Netlist {
        /// Evaluates on cleartext bits, level by level as the engine does: checks the schedule.
        fn eval_plain(&self, s1: &[bool], s0: &[bool]) -> Vec<bool> {
            self.eval_plain_r(s1, s0, &[])
        }

        fn eval_plain_r(&self, s1: &[bool], s0: &[bool], r: &[bool]) -> Vec<bool> {
            let mut w = vec![false; self.gates.len()];
            for (i, g) in self.gates.iter().enumerate() {
                match *g {
                    Gate::InputS1(b) => w[i] = s1[b as usize],
                    Gate::InputS0(b) => w[i] = s0[b as usize],
                    Gate::InputR(b) => w[i] = r[b as usize],
                    _ => {}
                }
            }
            for lv in &self.levels {
                for &i in &lv.free {
                    w[i as usize] = match self.gates[i as usize] {
                        Gate::Const(b) => b,
                        Gate::Not(a) => !w[a as usize],
                        Gate::Xor(a, b) => w[a as usize] ^ w[b as usize],
                        g => unreachable!("free level holds {g:?}"),
                    };
                }
                for &i in &lv.ands {
                    if let Gate::And(a, b) = self.gates[i as usize] {
                        w[i as usize] = w[a as usize] & w[b as usize];
                    }
                }
            }
            self.outputs.iter().map(|&o| w[o as usize]).collect()
        }
    }

    #[test]
    fn schedule_matches_the_definition() {
        let mut rng = ChaCha12Rng::seed_from_u64(5);
        for circ in [
            ActCircuit::TanhSelect(ActParams {
                sh: 36,
                k: 19,
                a_fix: 1556,
                b_fix: 2632,
            }),
            ActCircuit::TanhSelect(ActParams {
                sh: 2,
                k: 6,
                a_fix: 20,
                b_fix: 7,
            }),
            ActCircuit::Relu(TruncParams { sh: 36, k: 24 }),
        ] {
            let net = Netlist::record_with(&circ, false);
            assert_eq!(net.and_gates() as u64, circ.and_gates());
            for _ in 0..300 {
                let (g, e): (u64, u64) = (rng.gen(), rng.gen());
                let (gb, eb) = (to_bits(g, circ.n()), to_bits(e, circ.n()));
                assert_eq!(
                    net.eval_plain(&gb, &eb),
                    circ.build(&mut PlainEval, &gb, &eb)
                );
            }
        }
    }

    #[test]
    fn edabit_conversion_reconstructs_every_group() {
        // Opened low bits c, carry w and r give y = c - r + 2^m w for each converted group;
        // the other groups' bits are the circuit's.
        let mut rng = ChaCha12Rng::seed_from_u64(6);
        for circ in [
            ActCircuit::TanhSelect(ActParams {
                sh: 36,
                k: 19,
                a_fix: 1556,
                b_fix: 2632,
            }),
            ActCircuit::Relu(TruncParams { sh: 10, k: 18 }),
            ActCircuit::Relu(TruncParams { sh: 12, k: 44 }),
        ] {
            // A ReLU's own netlist is its sign circuit ([`Netlist::record_select`]); its
            // edaBit conversion is exercised here as the conversion of any unsigned group.
            let net = Netlist::record_with(&circ, true);
            let bare = Netlist::record_with(&circ, false);
            let (weights, groups) = circ.b2a_layout(1);
            assert_eq!(net.conversions.len(), groups.len());
            let eda_groups = groups
                .iter()
                .scan(0, |at, &len| {
                    let ws = &weights[*at..*at + len];
                    *at += len;
                    Some(len >= 2 && ws.iter().enumerate().all(|(j, &w)| w == 1 << j))
                })
                .filter(|&e| e)
                .count();
            assert_eq!(net.eda_bits.len(), eda_groups, "{circ:?}");
            for _ in 0..200 {
                let (g, e): (u64, u64) = (rng.gen(), rng.gen());
                let (gb, eb) = (to_bits(g, circ.n()), to_bits(e, circ.n()));
                let r: Vec<bool> = (0..net.r_bits()).map(|_| rng.gen()).collect();
                let want = bare.eval_plain(&gb, &eb);
                let got = net.eval_plain_r(&gb, &eb, &r);
                let mut at = 0;
                for (gi, &len) in groups.iter().enumerate() {
                    let value = (0..len).fold(0u64, |acc, j| {
                        acc.wrapping_add((want[at + j] as u64).wrapping_mul(weights[at + j]))
                    });
                    at += len;
                    let conv = match &net.conversions[gi] {
                        Conversion::Bits(outs) => outs.iter().fold(0u64, |acc, &(j, w)| {
                            acc.wrapping_add((got[j] as u64).wrapping_mul(w))
                        }),
                        Conversion::Eda { open, carry, eda } => {
                            let first: usize =
                                net.eda_bits[..*eda].iter().map(|&m| m as usize).sum();
                            let rv = (0..open.len())
                                .fold(0u64, |acc, j| acc | ((r[first + j] as u64) << j));
                            let c = open
                                .iter()
                                .enumerate()
                                .fold(0u64, |acc, (j, &o)| acc | ((got[o] as u64) << j));
                            c.wrapping_sub(rv)
                                .wrapping_add((got[*carry] as u64) << open.len())
                        }
                    };
                    assert_eq!(conv, value, "{circ:?} group {gi}");
                }
            }
        }
    }

    /// The boolean engine's ReLU netlist is the sign circuit: per element its outputs are
    /// [`crate::circuit::activation::relu_sign_ref`]'s, and finishing in the ring as the
    /// engine does, `((g >> sh) + (e >> sh) + t) (1 - s) mod 2^k` with the carry t opened in
    /// round sh, gives the ReLU of the exact truncation. n - 1 ANDs for the carries, one per
    /// depth, none sharing an input, the first of the two parties' own bits.
    #[test]
    fn a_relu_is_recorded_as_its_sign_and_finished_in_the_ring() {
        use crate::circuit::activation::{relu_out_ref, relu_sign_ref};
        let mut rng = ChaCha12Rng::seed_from_u64(8);
        for t in [
            TruncParams { sh: 13, k: 18 },
            TruncParams { sh: 0, k: 20 },
            TruncParams { sh: 1, k: 2 },
            TruncParams { sh: 24, k: 40 },
        ] {
            let net = Netlist::record(&ActCircuit::Relu(t));
            let n = t.n();
            assert_eq!(net.select, Some(t));
            let carry_term = usize::from(t.sh > 0);
            assert_eq!(net.and_gates(), n - 1, "{t:?}");
            assert_eq!(net.and_depth(), net.and_gates(), "{t:?}");
            // The first carry ANDs the parties' own bits: one opening, not two.
            assert_eq!(net.owned_ands()[0], Some(1));
            assert_eq!(net.and_openings(), 2 * net.and_gates() - 1, "{t:?}");
            assert_eq!(net.masked, vec![true; 1 + carry_term]);
            assert_eq!(net.conversions.len(), carry_term);
            // The carry into bit sh is made at depth sh and opened in round sh (0-based),
            // beside the AND making the carry into bit sh + 1.
            assert_eq!(
                net.carry_round,
                (t.sh > 0).then_some(t.sh as usize),
                "{t:?}"
            );
            assert!(net.eda_bits.is_empty());
            let low = |b: usize| if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
            for i in 0..400 {
                let (g, e): (u64, u64) = (rng.gen(), rng.gen());
                // Edges too: all ones, zero, a carry into bit sh and no other.
                let (g, e) = match i {
                    0 => (u64::MAX, 1),
                    1 => (0, 0),
                    2 => (low(t.sh as usize), 1),
                    _ => (g, e),
                };
                let (g, e) = (g & low(n), e & low(n));
                let bits = net.eval_plain(&to_bits(g, n), &to_bits(e, n));
                assert_eq!(bits, relu_sign_ref(&t, g, e), "{t:?} {g:#x} {e:#x}");
                let (s, tc) = (bits[carry_term] as u64, bits[0] as u64 * carry_term as u64);
                let x = (g >> t.sh) + (e >> t.sh) + tc;
                let y = (x * (1 - s)) & low(t.k as usize);
                assert_eq!(y, relu_out_ref(&t, g, e), "{t:?} {g:#x} {e:#x}");
            }
        }
    }

    /// Each AND's leader is itself or an earlier AND of its level with the same second input,
    /// and leads itself; ANDs of a level with the same second input have one leader; the
    /// ReLU's selection (k - 1 ANDs with the sign's complement) is one group, and the
    /// openings count a D per AND and an E per group.
    #[test]
    fn ands_sharing_an_input_form_one_group() {
        let t = TruncParams { sh: 13, k: 18 };
        for circ in [ActCircuit::Relu(t), ActCircuit::Trunc(t)] {
            // The ReLU as a whole circuit (the GC engine's, here with the edaBit conversion):
            // its k - 1 selections are the group the grouping is for.
            let net = Netlist::record_with(&circ, true);
            let mut groups = 0;
            for lv in &net.levels {
                let y = |j: usize| match net.gates[lv.ands[j] as usize] {
                    Gate::And(_, y) => y,
                    other => panic!("{other:?} in an AND level"),
                };
                assert_eq!(lv.leader.len(), lv.ands.len());
                for (j, &l) in lv.leader.iter().enumerate() {
                    let l = l as usize;
                    assert!(
                        l <= j && lv.leader[l] as usize == l && y(l) == y(j),
                        "{circ:?}"
                    );
                    for k in 0..j {
                        assert_eq!(y(k) == y(j), lv.leader[k] == lv.leader[j], "{circ:?}");
                    }
                    groups += usize::from(l == j);
                }
            }
            let owned = net.owned_ands().iter().filter(|o| o.is_some()).count();
            assert_eq!(owned, 1, "the first carry, {circ:?}");
            assert_eq!(net.and_openings(), net.and_gates() + groups - owned);
            let sel = net
                .levels
                .iter()
                .filter(|lv| lv.ands.len() == t.k as usize - 1);
            if matches!(circ, ActCircuit::Relu(_)) {
                let sel: Vec<_> = sel.collect();
                assert_eq!(sel.len(), 1, "one selection level");
                assert!(sel[0].leader.iter().all(|&l| l == 0), "one group");
                assert_eq!(
                    net.and_openings(),
                    2 * net.and_gates() - (t.k as usize - 2) - 1
                );
            }
        }
    }
}
