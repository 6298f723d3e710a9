//! The boolean engine's [`Nonlinear`] implementation: the activation circuit on XOR-shared,
//! bit-sliced bits with dealer AND triples, then daBits and edaBits turn the outputs into
//! additive shares. Both servers play the same role (no garbler and evaluator).
//!
//! One circuit run over the `E` elements of a batch (messages in order, each one a single
//! frame per direction, both sent before either is read):
//! 1. Inputs need no message: S0's share bits are XOR-shared as (bits, 0), S1's as (0, bits);
//!    each party's edaBit bits are its own XOR shares of them.
//! 2. One round per AND depth: for every AND gate of the level and every element, each party
//!    sends d = x ⊕ a, and e = y ⊕ b once per group of the level's ANDs sharing their second
//!    input y, whose triples share b (`Level::leader`): 2 bits per AND per element per
//!    direction, 1 + 1/group in a group, 1 for an AND of the two parties' own input bits
//!    (each opens only its own: [`Netlist::owned_ands`]). The netlist includes the edaBit
//!    conversions' adders (see [`Conversion`]). A ReLU's carry into bit sh is opened under
//!    its daBit in the round of the chain's AND after it is made ([`Netlist::carry_round`]).
//! 3. One round for the outputs: each party sends its share of every output bit, XORed with
//!    its daBit share for a masked output (1 bit per output bit per element per direction);
//!    then [out] = c + (1 - 2c)[r] with the daBit's additive share [r], or
//!    [y] = c - [r] + 2^m [carry] for an edaBit-converted group. A ReLU opens its sign and
//!    its selection's masked sum instead ([`SelectRun`]).

use crate::circuit::activation::ActConsts;
use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::circuit::bitslice::{bit, put_planes, slice, unslice, word_planes, word_values};
use crate::circuit::netlist::{Conversion, Gate, Netlist};
use crate::corr::pack::low_mask;
use crate::corr::randomness::{AndTriples, DaBits, EdaBits, PartyRandomness, ReluSelection};
use crate::corr::run_shape::RunShape;
use crate::corr::slot::Slot;
use crate::ring::plan::MLP_OPEN_BITS;
use crate::ring::Party;
use crate::twopc::channel::{swap, Channel, ChannelError};
use crate::twopc::error::ProtocolError;
use crate::twopc::nonlinear::{EngineCounters, Nonlinear};
use crate::twopc::poly::SelShares;

/// One server's side of the boolean engine.
pub struct GmwParty {
    party: Party,
    /// Netlists recorded so far (one per distinct circuit: a few per model).
    nets: Vec<(ActCircuit, Netlist)>,
    counters: EngineCounters,
    /// A deliberately broken variant, for the masking tests' negative controls: compiled
    /// into unit tests only, never into the binary.
    #[cfg(test)]
    pub(super) broken: Option<Broken>,
}

/// The broken variants of the negative controls (`super::wire_masking`). Each keeps the
/// engine running; the first even keeps its results exact.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Broken {
    /// Every AND level takes its triples from the first: a triple serves one gate per level.
    AndTripleReusedAcrossLevels,
    /// Outputs are opened without their daBits (a ReLU's carry and value bits, tanh*'s
    /// indicator bits).
    OutputOpenedWithoutDaBit,
    /// The high half of each edaBit repeats its low half.
    EdaHighPartReused,
    /// Every group of a level's ANDs sharing an input opens it under the level's first `b`:
    /// a `b` shared by ANDs whose second inputs differ.
    BSharedAcrossInputs,
    /// A ReLU selection opens its truncated sum without the product's mask `a`.
    SelectSumUnmasked,
    /// A ReLU selection opens its result for the extension without the mask `r`.
    ExtensionUnmasked,
    /// An AND of the parties' own bits opens each party's input bit without its mask.
    OwnedInputUnmasked,
}

/// [`Broken`] as flags the engine reads: all false outside unit tests.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    reuse_triples: bool,
    unmasked_outputs: bool,
    eda_high_reused: bool,
    b_shared_across_inputs: bool,
    select_sum_unmasked: bool,
    extension_unmasked: bool,
    owned_unmasked: bool,
}

impl GmwParty {
    pub fn new(party: Party) -> GmwParty {
        GmwParty {
            party,
            nets: Vec::new(),
            counters: EngineCounters::default(),
            #[cfg(test)]
            broken: None,
        }
    }

    /// The broken variant switched on, as flags (none outside unit tests).
    #[allow(clippy::let_and_return)]
    fn faults(&self) -> Faults {
        #[cfg(test)]
        let f = Faults {
            reuse_triples: self.broken == Some(Broken::AndTripleReusedAcrossLevels),
            unmasked_outputs: self.broken == Some(Broken::OutputOpenedWithoutDaBit),
            eda_high_reused: self.broken == Some(Broken::EdaHighPartReused),
            b_shared_across_inputs: self.broken == Some(Broken::BSharedAcrossInputs),
            select_sum_unmasked: self.broken == Some(Broken::SelectSumUnmasked),
            extension_unmasked: self.broken == Some(Broken::ExtensionUnmasked),
            owned_unmasked: self.broken == Some(Broken::OwnedInputUnmasked),
        };
        #[cfg(not(test))]
        let f = Faults::default();
        f
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
    /// as [`ActCircuit::b2a_layout`] says (element after element), correct mod 2^out_bits
    /// (the daBits' and edaBits' additive shares are dealt at that width; a ReLU's daBits at
    /// min(k, out_bits), its selection extending the result: [`SelectRun`]).
    pub fn run_circuit(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        circ: &ActCircuit,
        out_bits: u32,
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
        let mut trip = rand.and_triples(at.layer, at.batch, shape.and_gates, w)?;
        let owned = net.owned_ands();
        trip.keep_owned(&owned, party, w);
        let sw = shape.dabit_bits(out_bits);
        let dab = rand.dabits(at.layer, at.batch, shape.dabits, w, e_count, sw)?;
        let eda = rand.edabits(
            at.layer,
            at.batch,
            shape.r_bits,
            w,
            shape.edas,
            e_count,
            out_bits,
        )?;
        let sel = match net.select {
            Some(p) => {
                let extend = shape.extends(out_bits).then_some((out_bits, p.k));
                rand.relu_select(at.layer, at.batch, e_count, sw, extend)?
            }
            None => ReluSelection::default(),
        };

        let mut wires = vec![0u64; net.gates.len() * w];
        let own = slice(v, net.n);
        let faults = self.faults();
        for (i, g) in net.gates.iter().enumerate() {
            let src = match (*g, party) {
                (Gate::InputS0(b), Party::S0) | (Gate::InputS1(b), Party::S1) => {
                    &own[b as usize * w..]
                }
                (Gate::InputR(b), _) if faults.eda_high_reused => {
                    &eda.bits[high_from_low(&net.eda_bits, b) * w..]
                }
                (Gate::InputR(b), _) => &eda.bits[b as usize * w..],
                _ => continue,
            };
            wires[i * w..(i + 1) * w].copy_from_slice(&src[..w]);
        }
        drop(own);
        let mut rounds = 0;
        let mut and_index = 0;
        let reuse = faults.reuse_triples;
        let b_src = if reuse { net.b_sources() } else { Vec::new() };
        // A ReLU's carry into bit sh, opened under its daBit (the first) in the round of
        // the chain's AND after it is made.
        let mut carry = Vec::new();
        for (li, lv) in net.levels.iter().enumerate() {
            for &gi in &lv.free {
                eval_free(&mut wires, w, gi as usize, net.gates[gi as usize], party);
            }
            if lv.ands.is_empty() {
                continue;
            }
            let first = if reuse { 0 } else { and_index };
            let n = lv.ands.len();
            let lv_owned = &owned[and_index..and_index + n];
            let slots = if faults.b_shared_across_inputs {
                // Every group opens its E under the level's first `b`.
                Slots::new(vec![first; n], &lv.leader, lv_owned, w)
            } else if reuse {
                // Triples 0.. again, each with the `b` the dealer paired it with and its own
                // E: the result stays exact, only the masking tests can see the reuse.
                let own: Vec<u32> = (0..n as u32).collect();
                Slots::new(b_src[..n].to_vec(), &own, lv_owned, w)
            } else {
                Slots::grouped(&lv.leader, lv_owned, first, w)
            };
            let mut msg = Vec::with_capacity(slots.words);
            for (j, &gi) in lv.ands.iter().enumerate() {
                let Gate::And(x, y) = net.gates[gi as usize] else {
                    unreachable!("AND level holds only AND gates")
                };
                let (t, tb) = ((first + j) * w, slots.b[j] * w);
                let (x, y) = (x as usize * w, y as usize * w);
                // An AND of the parties' own bits: each opens only its own input.
                let (send_d, send_e) = match slots.owned[j] {
                    Some(p) => (p == u8::from(party), p != u8::from(party)),
                    None => (true, slots.own_e[j]),
                };
                // The broken variant's owned AND sends its input bit bare.
                let bare = if faults.owned_unmasked && slots.owned[j].is_some() {
                    0
                } else {
                    u64::MAX
                };
                if send_d {
                    msg.extend((0..w).map(|k| wires[x + k] ^ (trip.a[t + k] & bare)));
                }
                if send_e {
                    msg.extend((0..w).map(|k| wires[y + k] ^ (trip.b[tb + k] & bare)));
                }
            }
            debug_assert_eq!(msg.len(), slots.words);
            let early = net.carry_round == Some(li);
            if early {
                push_masked(&mut msg, &wires, w, net.outputs[0], Some((&dab, 0)), faults);
            }
            let theirs = swap(ch, &msg, "masked AND inputs")?;
            rounds += 1;
            if early {
                let at = slots.words;
                carry.extend((at..at + w).map(|k| msg[k] ^ theirs[k]));
            }
            and_level(
                &mut wires,
                w,
                lv.ands.as_slice(),
                &slots,
                &msg,
                &theirs,
                &trip,
                first,
                party,
            );
            and_index += lv.ands.len();
        }
        debug_assert_eq!(and_index, shape.and_gates);

        let result = match net.select {
            Some(p) => {
                let run = SelectRun {
                    p,
                    sw,
                    out_bits,
                    party,
                    dab: &dab,
                    sel: &sel,
                    faults,
                };
                let (result, r) = run.finish(ch, &wires, w, net, &carry, v)?;
                rounds += r;
                result
            }
            None => {
                let out = open_outputs(ch, &wires, w, net, &dab, faults.unmasked_outputs)?;
                rounds += 1;
                convert(net, &out, w, e_count, party, &dab, &eda)
            }
        };
        self.counters.and_gates += (shape.and_gates * e_count) as u64;
        self.counters.elements += e_count as u64;
        self.counters.rounds += rounds;
        Ok(result)
    }
}

/// The ring half of a ReLU finished by selection (docs/protocol.md, "The ReLU by
/// selection"): the chain's rounds opened the carry `t` into bit sh under its daBit, and
/// the circuit gave XOR shares of the sign `s`; with `X` this party's n-bit input share
/// shifted right by sh (the parties' X add up to the truncated sum less its carry) and
/// `X' = X + [t]`, `y = X' (1 - s) mod 2^sw`, then extended to the readers' width.
struct SelectRun<'a> {
    p: TruncParams,
    /// The width of the product and of the daBits' shares: min(k, out_bits).
    sw: u32,
    out_bits: u32,
    party: Party,
    dab: &'a DaBits,
    sel: &'a ReluSelection,
    faults: Faults,
}

impl SelectRun<'_> {
    /// One round: the sign masked by its daBit and `X' - a` (bit-sliced, sw bits an
    /// element), opened together; `X' s = c X' + (1 - 2c)(e [r_s] + [a r_s])` with
    /// `c = s ⊕ r_s` and `e = X' - a` opened (`carry`: the opened `t ⊕ r_t`, w words, none
    /// when sh = 0). Then, when out_bits > k, one more: `z = y + r mod 2^k`
    /// opened and `[y] = z - [r] + 2^k (1 - msb z) [msb r]` (y < 2^(k-1), so y + r wraps
    /// past 2^k exactly when r's top bit is set and z's is not). Returns the shares and the
    /// rounds.
    fn finish(
        &self,
        ch: &mut dyn Channel,
        wires: &[u64],
        w: usize,
        net: &Netlist,
        carry: &[u64],
        v: &[u64],
    ) -> Result<(Vec<u64>, u64), ProtocolError> {
        let (p, sw, e, sel) = (self.p, self.sw as usize, v.len(), self.sel);
        // A carry opened in another round, or not opened, would be a wrong sum, silently.
        assert_eq!(
            carry.len(),
            if p.sh > 0 { w } else { 0 },
            "the opened carry"
        );
        let n_low = low_mask(p.n() as u32);
        let x = |i: usize| (v[i] & n_low) >> p.sh;
        // Outputs: the carry (when sh > 0) first, opened in the chain's rounds, the sign last.
        let s = net.outputs.len() - 1;
        let one = self.party as u64;
        // [t] = c_t + (1 - 2 c_t)[r_t], party 1 adding the public c_t; X + [t] is this
        // party's share of the truncated sum with its carry.
        let xt = |i: usize| {
            let t = match carry.get(i / 64) {
                Some(planes) => {
                    let ct = (planes >> (i % 64)) & 1;
                    let rt = self.dab.arith[i];
                    (ct & one).wrapping_add(1u64.wrapping_sub(2 * ct).wrapping_mul(rt))
                }
                None => 0,
            };
            x(i).wrapping_add(t)
        };
        // X + t - a for element i: what this party opens of the truncated sum.
        let masked = |i: usize| {
            if self.faults.select_sum_unmasked {
                xt(i)
            } else {
                xt(i).wrapping_sub(sel.a[i])
            }
        };
        let mut msg = Vec::with_capacity((1 + sw) * w);
        let sign = (self.dab, s);
        push_masked(&mut msg, wires, w, net.outputs[s], Some(sign), self.faults);
        let nb = msg.len();
        msg.resize(nb + sw * w, 0);
        for word in 0..w {
            put_planes(&mut msg[nb..], w, word, &word_planes(e, word, masked)[..sw]);
        }
        let theirs = swap(ch, &msg, "masked sign and selection sum")?;
        let extend = self.out_bits > p.k;
        let k = p.k as usize;
        let mut result = Vec::with_capacity(e);
        let mut z_msg = vec![0u64; if extend { k * w } else { 0 }];
        for word in 0..w {
            let theirs_e = word_values(sw, |j| theirs[nb + j * w + word]);
            let sign = msg[word] ^ theirs[word];
            let mut z = [0u64; 64];
            for l in 0..(e - 64 * word).min(64) {
                let i = 64 * word + l;
                let ei = masked(i).wrapping_add(theirs_e[l]);
                let c = (sign >> l) & 1;
                let rs = self.dab.arith[s * e + i];
                let xr = ei.wrapping_mul(rs).wrapping_add(sel.ar[i]);
                let xti = xt(i);
                let xs = (c * xti).wrapping_add(1u64.wrapping_sub(2 * c).wrapping_mul(xr));
                let y = xti.wrapping_sub(xs) & low_mask(self.sw);
                if !extend {
                    result.push(y);
                } else if self.faults.extension_unmasked {
                    z[l] = y & low_mask(p.k);
                } else {
                    z[l] = y.wrapping_add(sel.r[i]) & low_mask(p.k);
                }
            }
            if extend {
                let planes = word_planes(64, 0, |l| z[l]);
                put_planes(&mut z_msg, w, word, &planes[..k]);
            }
        }
        if !extend {
            return Ok((result, 1));
        }
        let theirs = swap(ch, &z_msg, "masked selection result")?;
        for word in 0..w {
            let values = |m: &[u64]| word_values(k, |j| m[j * w + word]);
            let (own, other) = (values(&z_msg), values(&theirs));
            for l in 0..(e - 64 * word).min(64) {
                let i = 64 * word + l;
                let z = own[l].wrapping_add(other[l]) & low_mask(p.k);
                let wraps = 1 - ((z >> (k - 1)) & 1);
                result.push(
                    (one * z)
                        .wrapping_sub(sel.r[i])
                        .wrapping_add((wraps * sel.msb[i]) << k),
                );
            }
        }
        Ok((result, 2))
    }
}

/// The broken variant's edaBit bit for `InputR(b)`: a bit of an edaBit's high half is read
/// from its low half.
fn high_from_low(eda_bits: &[u32], b: u32) -> usize {
    let mut first = 0;
    for &m in eda_bits {
        if b < first + m {
            let (j, half) = (b - first, m / 2);
            return (if half > 0 && j >= half {
                first + j - half
            } else {
                b
            }) as usize;
        }
        first += m;
    }
    b as usize
}

/// Additive shares of each B2A group's value from the opened outputs `out` (bit-sliced,
/// output after output), element after element: per [`Conversion`].
fn convert(
    net: &Netlist,
    out: &[u64],
    w: usize,
    e_count: usize,
    party: Party,
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

fn eval_free(wires: &mut [u64], w: usize, i: usize, g: Gate, party: Party) {
    let dst = i * w;
    match g {
        Gate::Const(b) => {
            // Party 0 holds a public constant; party 1's share is zero.
            let v = if b && party.is_s0() { u64::MAX } else { 0 };
            wires[dst..dst + w].fill(v);
        }
        Gate::Not(a) => {
            let flip = if party.is_s0() { u64::MAX } else { 0 };
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

/// Where each AND of a level finds its opened inputs in the level's message, and whose
/// triple's `b` masks its second input: D for every AND, then E where the AND opens its own
/// (it leads its group of ANDs sharing that input, [`crate::circuit::netlist::Level::leader`]);
/// the others read their group's. An AND of the parties' own bits
/// ([`crate::circuit::netlist::Netlist::owned_ands`]) has one slot, where its first input's
/// owner sends D and the other party E: the two messages keep one length.
pub(super) struct Slots {
    /// Per AND: the word offset of its D and of its E (the same slot for an owned AND).
    pub(super) d: Vec<usize>,
    e: Vec<usize>,
    /// Per AND: the run's index of the triple whose `b` masks its E, and whether it opens
    /// that E itself.
    b: Vec<usize>,
    own_e: Vec<bool>,
    /// Per AND: `Some(p)` for an AND of the parties' own bits, p owning its first input.
    pub(super) owned: Vec<Option<u8>>,
    /// Words of the level's message.
    pub(super) words: usize,
}

impl Slots {
    /// The level's layout for triples `b`, groups `leader` (each AND's group's first AND,
    /// which opens the group's E; the others read it) and owned ANDs `owned`.
    fn new(b: Vec<usize>, leader: &[u32], owned: &[Option<u8>], w: usize) -> Slots {
        let n = b.len();
        let (mut d, mut e, mut own_e) = (Vec::new(), Vec::with_capacity(n), Vec::new());
        let mut words = 0;
        for (j, &l) in leader.iter().enumerate() {
            let own = l as usize == j;
            own_e.push(own);
            if owned[j].is_some() {
                d.push(words);
                e.push(words);
                words += w;
                continue;
            }
            d.push(words);
            words += w;
            e.push(if own { words } else { e[l as usize] });
            words += if own { w } else { 0 };
        }
        Slots {
            d,
            e,
            b,
            own_e,
            owned: owned.to_vec(),
            words,
        }
    }

    /// The layout of a level whose first AND is the run's triple `first`: each AND's group's
    /// `b`, an E per group.
    pub(super) fn grouped(leader: &[u32], owned: &[Option<u8>], first: usize, w: usize) -> Slots {
        let b = leader.iter().map(|&l| first + l as usize).collect();
        Slots::new(b, leader, owned, w)
    }
}

/// z = c ⊕ (D ∧ b) ⊕ (E ∧ a) ⊕ [party 0](D ∧ E), with D, E the opened masked inputs and b
/// the `b` of the AND's group: E = y ⊕ b is opened once per group, c = a ∧ b per AND.
#[allow(clippy::too_many_arguments)]
fn and_level(
    wires: &mut [u64],
    w: usize,
    ands: &[u32],
    slots: &Slots,
    mine: &[u64],
    theirs: &[u64],
    trip: &AndTriples,
    first: usize,
    party: Party,
) {
    let both = if party.is_s0() { u64::MAX } else { 0 };
    for (j, &gi) in ands.iter().enumerate() {
        let (t, tb) = ((first + j) * w, slots.b[j] * w);
        let dst = &mut wires[gi as usize * w..(gi as usize + 1) * w];
        let (a, b, c) = (&trip.a[t..t + w], &trip.b[tb..tb + w], &trip.c[t..t + w]);
        match slots.owned[j] {
            // One slot: D from the first input's owner, E from the other party.
            Some(p) => {
                let (from_d, from_e) = if p == u8::from(party) {
                    (mine, theirs)
                } else {
                    (theirs, mine)
                };
                let (ds, es) = (&from_d[slots.d[j]..], &from_e[slots.e[j]..]);
                and_words(dst, (a, b, c), both, |k| ds[k], |k| es[k]);
            }
            None => {
                let (dm, em) = (&mine[slots.d[j]..], &mine[slots.e[j]..]);
                let (dt, et) = (&theirs[slots.d[j]..], &theirs[slots.e[j]..]);
                and_words(dst, (a, b, c), both, |k| dm[k] ^ dt[k], |k| em[k] ^ et[k]);
            }
        }
    }
}

/// One AND gate's output words from its triple's (a, b, c) and the opened D and E.
fn and_words(
    dst: &mut [u64],
    (a, b, c): (&[u64], &[u64], &[u64]),
    both: u64,
    d: impl Fn(usize) -> u64,
    e: impl Fn(usize) -> u64,
) {
    for (k, z) in dst.iter_mut().enumerate() {
        let (d, e) = (d(k), e(k));
        *z = c[k] ^ (d & b[k]) ^ (e & a[k]) ^ (d & e & both);
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
    broken_unmasked: bool,
) -> Result<Vec<u64>, ChannelError> {
    let msg = masked_outputs(wires, w, net, dab, broken_unmasked);
    let theirs = swap(ch, &msg, "masked output bits")?;
    Ok(msg.iter().zip(&theirs).map(|(a, b)| a ^ b).collect())
}

/// This party's message of [`open_outputs`].
fn masked_outputs(
    wires: &[u64],
    w: usize,
    net: &Netlist,
    dab: &DaBits,
    broken_unmasked: bool,
) -> Vec<u64> {
    let mut msg = Vec::with_capacity(net.outputs.len() * w);
    let mut d = 0;
    let faults = Faults {
        unmasked_outputs: broken_unmasked,
        ..Faults::default()
    };
    for (&o, &masked) in net.outputs.iter().zip(&net.masked) {
        push_masked(&mut msg, wires, w, o, masked.then_some((dab, d)), faults);
        d += usize::from(masked);
    }
    msg
}

/// Appends output wire `o` (w words) to `msg`, XORed with daBit `d`'s bits when `dab` gives
/// one (an output already masked by an edaBit goes as it is; so does a masked one in the
/// broken variant that drops the daBits).
fn push_masked(
    msg: &mut Vec<u64>,
    wires: &[u64],
    w: usize,
    o: u32,
    dab: Option<(&DaBits, usize)>,
    faults: Faults,
) {
    let src = &wires[o as usize * w..(o as usize + 1) * w];
    match dab {
        Some((dab, d)) if !faults.unmasked_outputs => {
            let r = &dab.bits[d * w..(d + 1) * w];
            msg.extend(src.iter().zip(r).map(|(x, r)| x ^ r));
        }
        _ => msg.extend_from_slice(src),
    }
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
        // tanh*'s selections feed the polynomial, whose result is opened at 64 bits.
        let shares = self.run_circuit(ch, rand, at, &ActCircuit::tanh_star(c), MLP_OPEN_BITS, v)?;
        Ok(SelShares::from_grouped(&shares))
    }

    fn relu(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        let circ = ActCircuit::Relu(TruncParams { sh, k });
        self.run_circuit(ch, rand, at, &circ, out_bits, v)
    }

    fn trunc(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        let p = TruncParams { sh, k };
        let mut out = self.run_circuit(ch, rand, at, &ActCircuit::Trunc(p), out_bits, v)?;
        if self.party.is_s1() {
            p.take_offset(&mut out);
        }
        Ok(out)
    }

    fn counters(&self) -> EngineCounters {
        self.counters
    }

    fn fuses_relu_extension(&self) -> bool {
        true
    }
}

/// Known answers for each gadget (issue 31, item 3): fixed shares worked out by hand, each
/// party's result pinned, not only their sum. The variants that keep the sum and move a
/// public term to the other party (party 1 adding D∧E, party 1 flipping a NOT, party 0 adding
/// the opened c) give other shares and fail here.
#[cfg(test)]
mod tests {
    use super::*;

    const ONE: u64 = u64::MAX;

    /// The AND gate of wires 0 and 1 into wire 2 for both parties; returns (z0, z1).
    fn and_both(x: [u64; 2], y: [u64; 2], a: [u64; 2], b: [u64; 2], c: [u64; 2]) -> [u64; 2] {
        let slots = Slots::grouped(&[0], &[None], 0, 1);
        let msg = |p: usize| vec![x[p] ^ a[p], y[p] ^ b[p]];
        one_and(&slots, [x, y], [a, b, c], msg)
    }

    /// One AND of wires 0 and 1 into wire 2, laid out by `slots`, for both parties, from
    /// their input shares `xy`, triple shares `abc` and messages `msg(p)`; returns (z0, z1).
    fn one_and(
        slots: &Slots,
        xy: [[u64; 2]; 2],
        abc: [[u64; 2]; 3],
        msg: impl Fn(usize) -> Vec<u64>,
    ) -> [u64; 2] {
        [0, 1].map(|p| {
            let trip = AndTriples {
                a: vec![abc[0][p]],
                b: vec![abc[1][p]],
                c: vec![abc[2][p]],
            };
            let mut wires = vec![xy[0][p], xy[1][p], 0];
            and_level(
                &mut wires,
                1,
                &[2],
                slots,
                &msg(p),
                &msg(1 - p),
                &trip,
                0,
                Party::BOTH[p],
            );
            wires[2]
        })
    }

    /// A level's message layout: D for every AND, E once per group sharing a second input,
    /// right after its leader's D, under the leader's `b` (triple indices of the run: the
    /// level starts at triple 7 here); every AND opening its own E when told so.
    #[test]
    fn slots_open_one_e_per_group() {
        let s = Slots::grouped(&[0, 0, 2, 0, 2], &[None; 5], 7, 3);
        assert_eq!(s.d, [0, 6, 9, 15, 18]);
        assert_eq!(s.e, [3, 3, 12, 3, 12]);
        assert_eq!(s.b, [7, 7, 9, 7, 9]);
        assert_eq!(s.own_e, [true, false, true, false, false]);
        assert_eq!(s.words, 21);
        let s = Slots::new(vec![4; 3], &[0, 1, 2], &[None; 3], 1);
        assert_eq!(
            (s.d, s.e, s.b, s.words),
            (vec![0, 2, 4], vec![1, 3, 5], vec![4; 3], 6)
        );
    }

    /// Two ANDs sharing their second input y, one triple `b` for both: x1 ∧ y and x2 ∧ y
    /// from one opened E, in all four input combinations (lanes 0-3), each party's share
    /// pinned. A group that used each AND's own `b`, or the leader's `a`, fails here.
    #[test]
    fn a_shared_input_is_opened_once_and_both_ands_hold() {
        let (x1, x2, y) = (0b1010u64, 0b0110, 0b1100);
        let (a1, a2, b) = (0b0011u64, 0b0101, 0b1001);
        let (c1, c2) = (a1 & b, a2 & b);
        // Shares: party 1 holds the masks r, party 0 the rest.
        let r = [
            0b0111u64, 0b1110, 0b0001, 0b1011, 0b0100, 0b1101, 0b0010, 0b1000,
        ];
        let sh = |v: u64, r: u64| [v ^ r, r];
        let (x1s, x2s, ys) = (sh(x1, r[0]), sh(x2, r[1]), sh(y, r[2]));
        let (a1s, a2s, bs) = (sh(a1, r[3]), sh(a2, r[4]), sh(b, r[5]));
        let (c1s, c2s) = (sh(c1, r[6]), sh(c2, r[7]));
        let slots = Slots::grouped(&[0, 0], &[None; 2], 0, 1);
        let msg = |p: usize| vec![x1s[p] ^ a1s[p], ys[p] ^ bs[p], x2s[p] ^ a2s[p]];
        let z = [0, 1].map(|p| {
            let trip = AndTriples {
                a: vec![a1s[p], a2s[p]],
                b: vec![bs[p], 0xdead],
                c: vec![c1s[p], c2s[p]],
            };
            let mut wires = vec![x1s[p], x2s[p], ys[p], 0, 0];
            and_level(
                &mut wires,
                1,
                &[3, 4],
                &slots,
                &msg(p),
                &msg(1 - p),
                &trip,
                0,
                Party::BOTH[p],
            );
            [wires[3], wires[4]]
        });
        assert_eq!(z[0][0] ^ z[1][0], x1 & y);
        assert_eq!(z[0][1] ^ z[1][1], x2 & y);
        // Party 1: c1 ⊕ D b1 ⊕ E a1 with D = x2 ⊕ a2, E = y ⊕ b (the second AND).
        let (d2, e) = (x2 ^ a2, y ^ b);
        assert_eq!(z[1][1], c2s[1] ^ (d2 & bs[1]) ^ (e & a2s[1]));
    }

    /// An AND of S1's bit x and S0's bit y, each party's own: `a` is S1's alone, `b` S0's
    /// alone, and the one slot holds S1's D = x ⊕ a and S0's E = y ⊕ b. All four input
    /// combinations in lanes 0-3, each party's share pinned. Reading the slot as D ⊕ E,
    /// or taking D from the wrong party, breaks the sum.
    #[test]
    fn an_and_of_the_parties_own_bits_opens_one_bit_each() {
        let (x, y) = (0b1010u64, 0b1100u64);
        let (a, b, r) = (0b0110u64, 0b0011u64, 0b1001u64);
        // The parties' (a, b, c) shares and input wires (x is S1's, y S0's).
        let abc = [[0, a], [b, 0], [(a & b) ^ r, r]];
        let msg = |p: usize| vec![[y ^ b, x ^ a][p]];
        let slots = Slots::grouped(&[0], &[Some(1)], 0, 1);
        assert_eq!(slots.words, 1);
        let z = one_and(&slots, [[0, x], [y, 0]], abc, msg);
        assert_eq!(z[0] ^ z[1], x & y);
        // D = x ⊕ a = 0b1100, E = y ⊕ b = 0b1111: z0 = c0 ⊕ D b ⊕ D E, z1 = c1 ⊕ E a.
        let (d, e) = (x ^ a, y ^ b);
        assert_eq!(z[0], (a & b) ^ r ^ (d & b) ^ (d & e));
        assert_eq!(z[1], r ^ (e & a));
    }

    #[test]
    fn and_gate_known_answers() {
        // x = y = 1, triple a = b = c = 0: D = x ^ a = 1, E = 1, so D∧E = 1 goes to party 0.
        // z0 = c0 ^ D b0 ^ E a0 ^ D E = 1 ^ 0 ^ 1 ^ 1 = 1; z1 = c1 ^ D b1 ^ E a1 = 1 ^ 0 ^ 1 = 0.
        let z = and_both([ONE, 0], [ONE, 0], [ONE, ONE], [0, 0], [ONE, ONE]);
        assert_eq!(z, [ONE, 0]);
        // All four input combinations at once in lanes 0-3 (x = 0b1010, y = 0b1100), a triple
        // of other lane patterns, each value split into two shares.
        let (x, y) = (0b1010, 0b1100);
        let (a, b) = (0b0110, 0b0011);
        let z = and_both(
            [x ^ 0b0101, 0b0101],
            [y, 0],
            [a, 0],
            [b ^ 0b1001, 0b1001],
            [a & b, 0],
        );
        assert_eq!(z[0] ^ z[1], x & y, "the sum");
        // D = x ^ a = 0b1100, E = y ^ b = 0b1111: z0 = c0 ^ D b0 ^ E a0 ^ D E.
        let (d, e) = (0b1100u64, 0b1111u64);
        assert_eq!(z[0], (a & b) ^ (d & (b ^ 0b1001)) ^ (e & a) ^ (d & e));
        assert_eq!(z[1], d & 0b1001);
    }

    #[test]
    fn not_and_constant_known_answers() {
        let free = |g: Gate, p: Party| {
            let mut wires = vec![0b0110, 0];
            eval_free(&mut wires, 1, 1, g, p);
            wires[1]
        };
        // NOT: party 0 flips its share, party 1 copies its own.
        assert_eq!(free(Gate::Not(0), Party::S0), !0b0110);
        assert_eq!(free(Gate::Not(0), Party::S1), 0b0110);
        // A constant: party 0 holds it, party 1 holds zeros.
        assert_eq!(free(Gate::Const(true), Party::S0), ONE);
        assert_eq!(free(Gate::Const(true), Party::S1), 0);
        assert_eq!(free(Gate::Const(false), Party::S0), 0);
        assert_eq!(free(Gate::Const(false), Party::S1), 0);
    }

    fn net(outputs: usize, masked: Vec<bool>, conversions: Vec<Conversion>) -> Netlist {
        Netlist {
            gates: Vec::new(),
            outputs: vec![0; outputs],
            masked,
            conversions,
            eda_bits: Vec::new(),
            levels: Vec::new(),
            n: 0,
            select: None,
            carry_round: None,
        }
    }

    #[test]
    fn dabit_conversion_known_answer() {
        // b = 0 masked by r = 1 opens c = 1; r's additive shares 5 and 2^64 - 4.
        // [b] = c + (1 - 2c)[r]: party 0: -5; party 1: 1 - (2^64 - 4) = 5. Sum 0 = b.
        let n = net(1, vec![true], vec![Conversion::Bits(vec![(0, 1)])]);
        let dab = |p: usize| DaBits {
            bits: Vec::new(),
            arith: vec![[5, 4u64.wrapping_neg()][p]],
        };
        let eda = EdaBits::default();
        let got = Party::BOTH.map(|p| convert(&n, &[1], 1, 1, p, &dab(p.index()), &eda)[0]);
        assert_eq!(got, [5u64.wrapping_neg(), 5]);
        // Weights scale each bit's share: weight 4 gives 4 times the shares.
        let n = net(1, vec![true], vec![Conversion::Bits(vec![(0, 4)])]);
        let got = Party::BOTH.map(|p| convert(&n, &[1], 1, 1, p, &dab(p.index()), &eda)[0]);
        assert_eq!(got, [20u64.wrapping_neg(), 20]);
    }

    #[test]
    fn edabit_conversion_known_answer() {
        // y = 3 in m = 2 bits, edaBit r = 2 (shares 10 and 2^64 - 8): s = y + r = 0b101 opens
        // its low bits c = 1 in the clear; the carry 1, masked by a daBit r' = 0 (shares 7 and
        // 2^64 - 7), opens as 1. [carry] = 1 + (1 - 2)[r']: party 0 -7, party 1 1 + 7 = 8.
        // [y] = c - [r] + 4 [carry]: party 0: -10 - 28 = -38; party 1: 1 + 8 + 32 = 41.
        let n = net(
            3,
            vec![false, false, true],
            vec![Conversion::Eda {
                open: vec![0, 1],
                carry: 2,
                eda: 0,
            }],
        );
        let out = [1, 0, 1];
        let dab = |p: usize| DaBits {
            bits: Vec::new(),
            arith: vec![[7, 7u64.wrapping_neg()][p]],
        };
        let eda = |p: usize| EdaBits {
            bits: Vec::new(),
            arith: vec![[10, 8u64.wrapping_neg()][p]],
        };
        let got =
            Party::BOTH.map(|p| convert(&n, &out, 1, 1, p, &dab(p.index()), &eda(p.index()))[0]);
        assert_eq!(got, [38u64.wrapping_neg(), 41]);
        assert_eq!(got[0].wrapping_add(got[1]), 3);
    }
}
