//! The boolean engine's [`Nonlinear`] implementation: the activation circuit on XOR-shared,
//! bit-sliced bits with dealer AND triples, then daBits and edaBits turn the outputs into
//! additive shares. Both servers play the same role (no garbler and evaluator).
//!
//! One circuit run over the `E` elements of a batch (messages in order, each one a single
//! frame per direction, both sent before either is read):
//! 1. Inputs need no message: S0's share bits are XOR-shared as (bits, 0), S1's as (0, bits);
//!    each party's edaBit bits are its own XOR shares of them.
//! 2. One round per AND depth: for every AND gate of the level and every element, each party
//!    sends d = x ⊕ a and e = y ⊕ b (2 bits per AND per element per direction). The netlist
//!    includes the edaBit conversions' adders (see [`Conversion`]).
//! 3. One round for the outputs: each party sends its share of every output bit, XORed with
//!    its daBit share for a masked output (1 bit per output bit per element per direction);
//!    then [out] = c + (1 - 2c)[r] with the daBit's additive share [r], or
//!    [y] = c - [r] + 2^m [carry] for an edaBit-converted group.

use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::circuit::bitslice::{bit, slice, unslice};
use crate::circuit::netlist::{Conversion, Gate, Netlist};
use crate::corr::randomness::{AndTriples, DaBits, EdaBits, PartyRandomness};
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::ring::plan::ActConsts;
use crate::twopc::channel::{swap, Channel, ChannelError};
use crate::twopc::poly::SelShares;
use crate::twopc::protocol::{EngineCounters, Nonlinear, ProtocolError};

/// One server's side of the boolean engine.
pub struct GmwParty {
    party: u8,
    /// Netlists recorded so far (one per distinct circuit: a few per model).
    nets: Vec<(ActCircuit, Netlist)>,
    counters: EngineCounters,
}

impl GmwParty {
    pub fn new(party: u8) -> GmwParty {
        GmwParty {
            party,
            nets: Vec::new(),
            counters: EngineCounters::default(),
        }
    }

    /// Index in `nets` of `circ`'s netlist, recorded on first use.
    fn netlist(&mut self, circ: &ActCircuit) -> usize {
        match self.nets.iter().position(|(c, _)| c == circ) {
            Some(i) => i,
            None => {
                self.nets.push((*circ, Netlist::record(circ)));
                self.nets.len() - 1
            }
        }
    }

    /// Runs `circ` on this party's shares `v`; returns additive shares of the outputs grouped
    /// as [`ActCircuit::b2a_layout`] says (element after element).
    pub fn run_circuit(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        circ: &ActCircuit,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        circ.validate()
            .map_err(|e| ProtocolError::Setup(e.to_string()))?;
        let party = self.party;
        let e_count = v.len();
        if e_count == 0 {
            return Ok(Vec::new());
        }
        let ni = self.netlist(circ);
        let net = &self.nets[ni].1;
        let shape = RunShape::of(net, e_count);
        let w = shape.words;
        // Claimed before any message of this run, in the dealer's order.
        let trip = rand.and_triples(at.layer, at.batch, shape.and_gates, w)?;
        let dab = rand.dabits(at.layer, at.batch, shape.dabits, w, e_count)?;
        let eda = rand.edabits(at.layer, at.batch, shape.r_bits, w, shape.edas, e_count)?;

        let mut wires = vec![0u64; net.gates.len() * w];
        let own = slice(v, net.n);
        for (i, g) in net.gates.iter().enumerate() {
            let src = match (*g, party) {
                (Gate::InputS0(b), 0) | (Gate::InputS1(b), 1) => &own[b as usize * w..],
                (Gate::InputR(b), _) => &eda.bits[b as usize * w..],
                _ => continue,
            };
            wires[i * w..(i + 1) * w].copy_from_slice(&src[..w]);
        }
        drop(own);
        let mut rounds = 0;
        let mut and_index = 0;
        for lv in &net.levels {
            for &gi in &lv.free {
                eval_free(&mut wires, w, gi as usize, net.gates[gi as usize], party);
            }
            if lv.ands.is_empty() {
                continue;
            }
            let mut msg = Vec::with_capacity(2 * lv.ands.len() * w);
            for (j, &gi) in lv.ands.iter().enumerate() {
                let Gate::And(x, y) = net.gates[gi as usize] else {
                    unreachable!("AND level holds only AND gates")
                };
                let t = (and_index + j) * w;
                let (x, y) = (x as usize * w, y as usize * w);
                msg.extend((0..w).map(|k| wires[x + k] ^ trip.a[t + k]));
                msg.extend((0..w).map(|k| wires[y + k] ^ trip.b[t + k]));
            }
            let theirs = swap(ch, &msg, "masked AND inputs")?;
            rounds += 1;
            and_level(
                &mut wires,
                w,
                lv.ands.as_slice(),
                &msg,
                &theirs,
                &trip,
                and_index,
                party,
            );
            and_index += lv.ands.len();
        }
        debug_assert_eq!(and_index, shape.and_gates);

        let out = open_outputs(ch, &wires, w, net, &dab)?;
        rounds += 1;
        let result = convert(net, &out, w, e_count, party, &dab, &eda);
        self.counters.and_gates += (shape.and_gates * e_count) as u64;
        self.counters.elements += e_count as u64;
        self.counters.rounds += rounds;
        Ok(result)
    }
}

/// Additive shares of each B2A group's value from the opened outputs `out` (bit-sliced,
/// output after output), element after element: per [`Conversion`].
fn convert(
    net: &Netlist,
    out: &[u64],
    w: usize,
    e_count: usize,
    party: u8,
    dab: &DaBits,
    eda: &EdaBits,
) -> Vec<u64> {
    let per = net.conversions.len();
    let one = party as u64;
    // daBit index of each masked output.
    let mut dab_of = vec![usize::MAX; net.outputs.len()];
    for (d, j) in (0..net.outputs.len())
        .filter(|&j| net.masked[j])
        .enumerate()
    {
        dab_of[j] = d;
    }
    // [b] = c + (1 - 2c) [r] for a daBit-masked output bit b (party 1 adds the public c).
    let bit_share = |j: usize, i: usize| {
        let c = bit(&out[j * w..(j + 1) * w], i);
        let ra = dab.arith[dab_of[j] * e_count + i];
        (c & one).wrapping_add(ra.wrapping_mul(1u64.wrapping_sub(2 * c)))
    };
    let mut result = vec![0u64; e_count * per];
    for (g, conv) in net.conversions.iter().enumerate() {
        match conv {
            Conversion::Bits(outs) => {
                for i in 0..e_count {
                    result[i * per + g] = outs.iter().fold(0u64, |acc, &(j, wt)| {
                        acc.wrapping_add(bit_share(j, i).wrapping_mul(wt))
                    });
                }
            }
            Conversion::Eda {
                open,
                carry,
                eda: e,
            } => {
                // [y] = c - [r] + 2^m [carry], c public (party 1 adds it).
                let cs = unslice(open.len(), e_count, |b, word| out[open[b] * w + word]);
                for (i, c) in cs.into_iter().enumerate() {
                    result[i * per + g] = (c & one.wrapping_neg())
                        .wrapping_sub(eda.arith[e * e_count + i])
                        .wrapping_add(bit_share(*carry, i) << open.len());
                }
            }
        }
    }
    result
}

fn eval_free(wires: &mut [u64], w: usize, i: usize, g: Gate, party: u8) {
    let dst = i * w;
    match g {
        Gate::Const(b) => {
            // Party 0 holds a public constant; party 1's share is zero.
            let v = if b && party == 0 { u64::MAX } else { 0 };
            wires[dst..dst + w].fill(v);
        }
        Gate::Not(a) => {
            let flip = if party == 0 { u64::MAX } else { 0 };
            for k in 0..w {
                wires[dst + k] = wires[a as usize * w + k] ^ flip;
            }
        }
        Gate::Xor(a, b) => {
            for k in 0..w {
                wires[dst + k] = wires[a as usize * w + k] ^ wires[b as usize * w + k];
            }
        }
        other => unreachable!("{other:?} is not a free gate"),
    }
}

/// z = c ⊕ (D ∧ b) ⊕ (E ∧ a) ⊕ [party 0](D ∧ E), with D, E the opened masked inputs.
#[allow(clippy::too_many_arguments)]
fn and_level(
    wires: &mut [u64],
    w: usize,
    ands: &[u32],
    mine: &[u64],
    theirs: &[u64],
    trip: &AndTriples,
    first: usize,
    party: u8,
) {
    let both = if party == 0 { u64::MAX } else { 0 };
    for (j, &gi) in ands.iter().enumerate() {
        let t = (first + j) * w;
        let (dm, em) = (&mine[2 * j * w..], &mine[(2 * j + 1) * w..]);
        let (dt, et) = (&theirs[2 * j * w..], &theirs[(2 * j + 1) * w..]);
        let dst = gi as usize * w;
        for k in 0..w {
            let d = dm[k] ^ dt[k];
            let e = em[k] ^ et[k];
            wires[dst + k] =
                trip.c[t + k] ^ (d & trip.b[t + k]) ^ (e & trip.a[t + k]) ^ (d & e & both);
        }
    }
}

/// Opens every output, bit-sliced, output after output: `out ⊕ r` with the next daBit for a
/// masked output, `out` itself for one already masked by an edaBit.
fn open_outputs(
    ch: &mut dyn Channel,
    wires: &[u64],
    w: usize,
    net: &Netlist,
    dab: &DaBits,
) -> Result<Vec<u64>, ChannelError> {
    let mut msg = Vec::with_capacity(net.outputs.len() * w);
    let mut d = 0;
    for (&o, &masked) in net.outputs.iter().zip(&net.masked) {
        let src = &wires[o as usize * w..(o as usize + 1) * w];
        if masked {
            let r = &dab.bits[d * w..(d + 1) * w];
            msg.extend(src.iter().zip(r).map(|(x, r)| x ^ r));
            d += 1;
        } else {
            msg.extend_from_slice(src);
        }
    }
    let theirs = swap(ch, &msg, "masked output bits")?;
    Ok(msg.iter().zip(&theirs).map(|(a, b)| a ^ b).collect())
}

impl Nonlinear for GmwParty {
    fn select(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        c: &ActConsts,
        v: &[u64],
    ) -> Result<SelShares, ProtocolError> {
        let shares = self.run_circuit(ch, rand, at, &ActCircuit::tanh_star(c), v)?;
        Ok(SelShares::from_grouped(&shares))
    }

    fn relu(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        self.run_circuit(ch, rand, at, &ActCircuit::Relu(TruncParams { sh, k }), v)
    }

    fn counters(&self) -> EngineCounters {
        self.counters
    }
}
