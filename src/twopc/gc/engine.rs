//! The paper's nonlinearity engine: garbled circuits (S1 garbles, S0 evaluates) for exact
//! truncation, comparison and selection; IKNP correlated OT with the garbler's free-XOR
//! offset for S0's input labels; and COT-based boolean-to-arithmetic conversion of the
//! circuit's outputs. Base OTs come from the trusted dealer.
//!
//! Per chunk of elements (messages in order; across chunks, every message 1 goes first, and
//! the message 4 of chunk i follows the message 2 of chunk i + `B2A_LAG`):
//! 1. S0 -> S1: COT extension for S0's input bits (16 B/bit).
//! 2. S1 -> S0: the garbled tables (32 B/AND), two messages: the first half of the chunk's
//!    elements, then the second half, garbled on two threads with disjoint gate ranges (each
//!    half's buffer is sent as garbled and evaluated where received: no copy of ours). S1's own
//!    input labels are not sent: their active values come from a stream both servers derive
//!    from a dealer seed, and S1 sets its zero labels to `active ⊕ bit·Δ`.
//! 3. S0 -> S1: COT extension with S0's output colour bits as choices (16 B/bit).
//! 4. S1 -> S0: B2A corrections (8 B/bit). Both now hold arithmetic shares.

use crate::ring::Party;
use std::collections::VecDeque;

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::circuit::activation::ActConsts;
use crate::circuit::activation::{ActCircuit, TruncParams};
use crate::corr::base_ots::{BaseOtForReceiver, BaseOtForSender};
use crate::corr::block::Block;
use crate::corr::randomness::PartyRandomness;
use crate::corr::slot::Slot;
use crate::twopc::channel::{Channel, ChannelError, Expect};
use crate::twopc::error::ProtocolError;
use crate::twopc::gc::batch::garble_batch_shared_labels;
use crate::twopc::gc::{evaluate_batch, share_bits, Evaluator, Garbler, LANES};
use crate::twopc::nonlinear::{EngineCounters, Nonlinear};
use crate::twopc::ot::{b2a_receiver, b2a_sender, extend_msg_len, CotReceiver, CotSender, CtrPrg};
use crate::twopc::poly::SelShares;
use crate::twopc::tccr::TccrHash;

/// Elements per garbling chunk. Bounds memory (tables of a chunk are held once), and small
/// enough that a chunk's tables (about 5 MB at 78-81 AND gates per element) are still in
/// cache when the link seals them and when S0 evaluates them.
const CHUNK: usize = 2048;

/// Chunks whose B2A is still open: the garbler answers chunk i's B2A after sending the tables
/// of chunk i + B2A_LAG, so the link stays busy while an answer crosses it as long as
/// garbling, evaluating and one round trip take less than sending B2A_LAG chunks' tables
/// (about 125 ms at 1 Gbit/s). In the chunk loop the evaluator has at most B2A_LAG unread
/// sends before each send, which its writer queue holds, so it never waits on them and always
/// comes back to reading: no deadlock. (Its input COTs before the loop may wait on the queue;
/// the garbler reads all of them before it sends anything.)
const B2A_LAG: usize = 3;
const _: () = assert!(B2A_LAG >= 1 && B2A_LAG <= crate::twopc::channel::QUEUE_DEPTH);

/// First gate id of the second garbler/evaluator pair. Each chunk is split in two halves
/// garbled (and evaluated) on two threads; the halves number their gates from 0 and from
/// 2^62, so hash tweaks never repeat under the one Δ (a session garbles far fewer than
/// 2^62 gates).
const SECOND_HALF_FIRST_GATE: u64 = 1 << 62;

/// Elements of a chunk that go to the first half: about half, a multiple of the lane width
/// so both halves garble full lanes.
fn first_half(items: usize) -> usize {
    items / 2 / LANES * LANES
}

/// Splits a party's dealer bytes into its base-OT part, the shared label stream and the
/// job's hash (its key derived from the same fresh seed, see [`TccrHash::for_job`]).
fn split_dealer_bytes(bytes: &[u8]) -> Result<(&[u8], CtrPrg, TccrHash), ProtocolError> {
    if bytes.len() < 16 {
        return Err(ProtocolError::Setup(
            "triplets: base-OT data too short".into(),
        ));
    }
    let (base, seed) = bytes.split_at(bytes.len() - 16);
    let seed = Block::from_bytes(seed.try_into().expect("16 bytes"));
    Ok((base, CtrPrg::new(seed), TccrHash::for_job(seed)))
}

fn malformed(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Channel(ChannelError::Malformed(e.to_string()))
}

/// S0: evaluator and OT receiver.
pub struct GcEvaluator {
    hash: TccrHash,
    cot: CotReceiver,
    labels: CtrPrg,
    ev: Evaluator,
    ev2: Evaluator,
    counters: EngineCounters,
}

impl GcEvaluator {
    pub fn new(base_ot: &[u8]) -> Result<Self, ProtocolError> {
        let (base, labels, hash) = split_dealer_bytes(base_ot)?;
        let base = BaseOtForReceiver::from_bytes(base)
            .map_err(|e| ProtocolError::Setup(format!("triplets: {e}")))?;
        Ok(GcEvaluator {
            cot: CotReceiver::new(base),
            labels,
            ev: Evaluator::new(hash.clone()),
            ev2: Evaluator::with_first_gate(hash.clone(), SECOND_HALF_FIRST_GATE),
            hash,
            counters: EngineCounters::default(),
        })
    }

    fn finish_b2a(
        &mut self,
        ch: &mut dyn Channel,
        circ: &ActCircuit,
        (t2, e, tweak, items): (Vec<Block>, Vec<bool>, u64, usize),
    ) -> Result<Vec<u64>, ProtocolError> {
        let corr = ch.recv(Expect::Exactly(8 * t2.len()))?;
        let (_, groups) = circ.b2a_layout(items);
        self.counters.ots += t2.len() as u64;
        b2a_receiver(&self.hash, &t2, &e, &corr, &groups, tweak).map_err(malformed)
    }
}

/// S1: garbler and OT sender.
pub struct GcGarbler {
    hash: TccrHash,
    cot: CotSender,
    labels: CtrPrg,
    gb: Garbler<ChaCha12Rng>,
    gb2: Garbler<ChaCha12Rng>,
    counters: EngineCounters,
}

impl GcGarbler {
    pub fn new(base_ot: &[u8]) -> Result<Self, ProtocolError> {
        // Wire labels come from a fresh local CSPRNG, never from dealer data.
        Self::with_label_rngs(
            base_ot,
            [ChaCha12Rng::from_entropy(), ChaCha12Rng::from_entropy()],
        )
    }

    /// [`GcGarbler::new`] with wire labels from the given seeds: tests that must be
    /// reproducible only (the server always uses [`GcGarbler::new`]).
    #[doc(hidden)]
    pub fn with_label_seeds(base_ot: &[u8], seeds: [u64; 2]) -> Result<Self, ProtocolError> {
        Self::with_label_rngs(base_ot, seeds.map(ChaCha12Rng::seed_from_u64))
    }

    fn with_label_rngs(base_ot: &[u8], rngs: [ChaCha12Rng; 2]) -> Result<Self, ProtocolError> {
        let (base, labels, hash) = split_dealer_bytes(base_ot)?;
        let base = BaseOtForSender::from_bytes(base)
            .map_err(|e| ProtocolError::Setup(format!("triplets: {e}")))?;
        let delta = base.delta;
        let [r1, r2] = rngs;
        Ok(GcGarbler {
            cot: CotSender::new(base),
            labels,
            gb: Garbler::new(delta, hash.clone(), r1),
            gb2: Garbler::with_first_gate(delta, hash.clone(), r2, SECOND_HALF_FIRST_GATE),
            hash,
            counters: EngineCounters::default(),
        })
    }

    fn answer_b2a(
        &mut self,
        ch: &mut dyn Channel,
        circ: &ActCircuit,
        (rho, items): (Vec<bool>, usize),
    ) -> Result<Vec<u64>, ProtocolError> {
        let tweak = self.cot.next_ot_index();
        let msg2 = ch.recv(Expect::Exactly(extend_msg_len(rho.len())))?;
        let q2 = self.cot.extend(rho.len(), &msg2).map_err(malformed)?;
        self.counters.ots += q2.len() as u64;
        let (weights, groups) = circ.b2a_layout(items);
        let (corr, shares) = b2a_sender(
            &self.hash,
            self.cot.delta(),
            &q2,
            &rho,
            &weights,
            &groups,
            tweak,
        );
        ch.send_owned(corr)?;
        Ok(shares)
    }
}

/// One side of the garbled-circuit engine: runs an activation circuit on its shares and
/// returns arithmetic shares of the outputs. Both roles get [`Nonlinear`] from it.
trait GcRole {
    fn run_circuit(
        &mut self,
        ch: &mut dyn Channel,
        circ: &ActCircuit,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError>;
    fn engine_counters(&self) -> EngineCounters;
    /// S0 for the evaluator, S1 for the garbler (`engine_for`'s numbering).
    fn party(&self) -> Party;
}

impl GcRole for GcEvaluator {
    /// Runs `circ` on the shares, returns arithmetic shares (one per B2A group).
    ///
    /// Pipelined: all input COTs go first, then chunk i is evaluated while the garbler
    /// garbles the next ones, and the B2A of chunk i completes [`B2A_LAG`] chunks later.
    fn run_circuit(
        &mut self,
        ch: &mut dyn Channel,
        circ: &ActCircuit,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        let n = circ.n();
        let chunks: Vec<&[u64]> = v.chunks(CHUNK).collect();
        let mut ts = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let (msg, t) = self.cot.extend(&share_bits(n, chunk));
            ch.send_owned(msg)?;
            self.counters.ots += t.len() as u64;
            ts.push(t);
        }
        let mut result = Vec::with_capacity(v.len() * circ.b2a_layout(1).1.len());
        let mut pending: VecDeque<(Vec<Block>, Vec<bool>, u64, usize)> = VecDeque::new();
        for (chunk, t) in chunks.iter().zip(ts) {
            // Each half's half-gates tables: two blocks per AND gate per element, received
            // into the buffer its evaluator read the last chunk's from.
            let per_item = circ.and_gates() as usize * 2 * Block::BYTES;
            let h = first_half(chunk.len());
            for (ev, items) in [(&mut self.ev, h), (&mut self.ev2, chunk.len() - h)] {
                let mut buf = ev.take_table_buffer();
                ch.recv_into(Expect::Exactly(items * per_item), &mut buf)?;
                ev.load_table_buffer(buf).map_err(malformed)?;
            }
            let g_active = self.labels.blocks(t.len());
            let (g1, g2) = g_active.split_at(h * n);
            let (t1, t2) = t.split_at(h * n);
            let (ev, ev2) = (&mut self.ev, &mut self.ev2);
            let (e1, e2) = rayon::join(
                || evaluate_batch(ev, circ, g1, t1),
                || evaluate_batch(ev2, circ, g2, t2),
            );
            let mut e = e1.map_err(malformed)?;
            e.extend(e2.map_err(malformed)?);
            let tweak = self.cot.next_ot_index();
            let (msg2, t2) = self.cot.extend(&e);
            ch.send_owned(msg2)?;
            if pending.len() == B2A_LAG {
                let p = pending.pop_front().expect("B2A_LAG > 0");
                result.extend(self.finish_b2a(ch, circ, p)?);
            }
            pending.push_back((t2, e, tweak, chunk.len()));
            self.counters.and_gates += circ.and_gates() * chunk.len() as u64;
            self.counters.elements += chunk.len() as u64;
        }
        for p in pending {
            result.extend(self.finish_b2a(ch, circ, p)?);
        }
        Ok(result)
    }

    fn engine_counters(&self) -> EngineCounters {
        self.counters
    }

    fn party(&self) -> Party {
        Party::S0
    }
}

impl GcRole for GcGarbler {
    /// Mirror of the evaluator's `run_circuit`: all input COTs first, then garble chunk
    /// i + [`B2A_LAG`] before answering the B2A of chunk i, so both servers compute at the
    /// same time.
    fn run_circuit(
        &mut self,
        ch: &mut dyn Channel,
        circ: &ActCircuit,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        let n = circ.n();
        let chunks: Vec<&[u64]> = v.chunks(CHUNK).collect();
        let mut qs = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let msg = ch.recv(Expect::Exactly(extend_msg_len(n * chunk.len())))?;
            let q = self.cot.extend(n * chunk.len(), &msg).map_err(malformed)?;
            self.counters.ots += q.len() as u64;
            qs.push(q);
        }
        // Gate tweaks must never repeat: the first half's counter must stay below the second
        // half's first gate for the whole run (a real check, before anything is garbled).
        let needed = circ.and_gates().saturating_mul(v.len() as u64);
        if self
            .gb
            .gate_counter()
            .checked_add(needed)
            .is_none_or(|end| end >= SECOND_HALF_FIRST_GATE)
        {
            return Err(ProtocolError::Setup(format!(
                "the garbler's gate counter would pass 2^62 ({needed} more AND gates): \
                 split the job"
            )));
        }
        let mut result = Vec::with_capacity(v.len() * circ.b2a_layout(1).1.len());
        let mut pending: VecDeque<(Vec<bool>, usize)> = VecDeque::new();
        for (chunk, q) in chunks.iter().zip(qs) {
            let own = self.labels.blocks(q.len());
            let h = first_half(chunk.len());
            let (c1, c2) = chunk.split_at(h);
            let (q1, q2) = q.split_at(h * n);
            let (o1, o2) = own.split_at(h * n);
            let (gb, gb2) = (&mut self.gb, &mut self.gb2);
            let (mut rho, rho2) = rayon::join(
                || garble_batch_shared_labels(gb, circ, c1, q1, o1),
                || garble_batch_shared_labels(gb2, circ, c2, q2, o2),
            );
            rho.extend(rho2);
            drop((q, own));
            // Each half's tables go out as garbled; the garbler goes on in a buffer the link
            // has finished sending.
            for gb in [&mut self.gb, &mut self.gb2] {
                let next = ch.spare(gb.table_bytes());
                ch.send_owned(gb.swap_table(next))?;
            }
            if pending.len() == B2A_LAG {
                let p = pending.pop_front().expect("B2A_LAG > 0");
                result.extend(self.answer_b2a(ch, circ, p)?);
            }
            pending.push_back((rho, chunk.len()));
            self.counters.and_gates += circ.and_gates() * chunk.len() as u64;
            self.counters.elements += chunk.len() as u64;
        }
        for p in pending {
            result.extend(self.answer_b2a(ch, circ, p)?);
        }
        Ok(result)
    }

    fn engine_counters(&self) -> EngineCounters {
        self.counters
    }

    fn party(&self) -> Party {
        Party::S1
    }
}

impl<T: GcRole> Nonlinear for T {
    fn select(
        &mut self,
        ch: &mut dyn Channel,
        _rand: &mut PartyRandomness,
        _at: Slot,
        c: &ActConsts,
        v: &[u64],
    ) -> Result<SelShares, ProtocolError> {
        let shares = self.run_circuit(ch, &ActCircuit::tanh_star(c), v)?;
        Ok(SelShares::from_grouped(&shares))
    }

    fn relu(
        &mut self,
        ch: &mut dyn Channel,
        _rand: &mut PartyRandomness,
        _at: Slot,
        sh: u32,
        k: u32,
        _out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        // Its B2A makes whole 64-bit shares by OT; no dealer value to narrow.
        self.run_circuit(ch, &ActCircuit::Relu(TruncParams { sh, k }), v)
    }

    fn trunc(
        &mut self,
        ch: &mut dyn Channel,
        _rand: &mut PartyRandomness,
        _at: Slot,
        sh: u32,
        k: u32,
        _out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError> {
        let p = TruncParams { sh, k };
        let mut out = self.run_circuit(ch, &ActCircuit::Trunc(p), v)?;
        if self.party().is_s1() {
            p.take_offset(&mut out);
        }
        Ok(out)
    }

    fn counters(&self) -> EngineCounters {
        self.engine_counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The job's hash is keyed from the seed dealt with that job, the same at both servers,
    /// and a new dealing gives a new key (a constant key would pass every other test).
    #[test]
    fn each_dealing_keys_its_own_hash() {
        let probe = |b: &[u8]| {
            let (_, _, h) = split_dealer_bytes(b).unwrap();
            h.tccr(Block(5), Block(9))
        };
        let (r1, s1) = crate::corr::base_ots::deal_gc_setup();
        let (r2, s2) = crate::corr::base_ots::deal_gc_setup();
        assert_eq!(probe(&r1), probe(&s1));
        assert_eq!(probe(&r2), probe(&s2));
        let seed = Block::from_bytes(r1[r1.len() - 16..].try_into().unwrap());
        assert_eq!(probe(&r1), TccrHash::for_job(seed).tccr(Block(5), Block(9)));
        assert_ne!(probe(&r1), probe(&r2));
    }
}
