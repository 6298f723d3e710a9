//! A circuit recorded once from its [`Circuit`] definition into a gate list, and scheduled by
//! AND depth: the boolean engine opens every AND gate of one depth, for every element of a
//! batch, in one round.

use crate::twopc::gc::circuit::Circuit;
use crate::twopc::gc::ActCircuit;

/// One recorded gate; operands are indices of earlier gates (so the list is in topological
/// order by construction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Bit `i` of S1's input (the garbler's `g` in the GC engine).
    InputS1(u32),
    /// Bit `i` of S0's input (the evaluator's `e`).
    InputS0(u32),
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

/// A recorded circuit with its round schedule.
#[derive(Clone, Debug)]
pub struct Netlist {
    /// Live gates only (those an output depends on), renumbered, in topological order.
    pub gates: Vec<Gate>,
    /// Output wires, in the circuit's output order.
    pub outputs: Vec<u32>,
    /// `levels[d]`: the free gates whose AND depth is `d`, then the AND gates of depth
    /// `d + 1` (opened together in round `d + 1`). The last level has no AND gates.
    pub levels: Vec<Level>,
    /// Input bits per party per element.
    pub n: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Level {
    pub free: Vec<u32>,
    pub ands: Vec<u32>,
}

impl Netlist {
    /// Records `circ` (the definition the GC engine garbles) and schedules it.
    pub fn record(circ: &ActCircuit) -> Netlist {
        let n = circ.n();
        let mut rec = Recorder::default();
        let g: Vec<u32> = (0..n).map(|i| rec.push(Gate::InputS1(i as u32))).collect();
        let e: Vec<u32> = (0..n).map(|i| rec.push(Gate::InputS0(i as u32))).collect();
        let outputs = circ.build(&mut rec, &g, &e);
        Self::schedule(rec.gates, outputs, n)
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
            if matches!(g, Gate::InputS1(_) | Gate::InputS0(_)) {
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
                Gate::InputS1(_) | Gate::InputS0(_) => {}
                _ => levels[d].free.push(i as u32),
            }
        }
        Netlist {
            gates,
            outputs,
            levels,
            n,
        }
    }

    /// AND gates per element (the boolean engine's cost).
    pub fn and_gates(&self) -> usize {
        self.levels.iter().map(|l| l.ands.len()).sum()
    }

    /// Rounds of AND openings per batch (the AND depth).
    pub fn and_depth(&self) -> usize {
        self.levels.iter().filter(|l| !l.ands.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twopc::gc::circuit::{to_bits, PlainEval};
    use crate::twopc::gc::{ActParams, TruncParams};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    impl Netlist {
        /// Evaluates on cleartext bits, level by level as the engine does: checks the schedule.
        fn eval_plain(&self, s1: &[bool], s0: &[bool]) -> Vec<bool> {
            let mut w = vec![false; self.gates.len()];
            for (i, g) in self.gates.iter().enumerate() {
                match *g {
                    Gate::InputS1(b) => w[i] = s1[b as usize],
                    Gate::InputS0(b) => w[i] = s0[b as usize],
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
            ActCircuit::Trunc(TruncParams { sh: 36, k: 24 }),
        ] {
            let net = Netlist::record(&circ);
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
}
