//! Half-gates garbling (Zahur, Rosulek, Evans 2015) with free-XOR and
//! point-and-permute.
//!
//! Label convention: every garbler-side wire is its *zero label* `Z`; the one
//! label is `Z ⊕ Δ`, and `lsb(Δ) = 1` so the two labels have different colours.
//! The evaluator holds the *active label* `Z ⊕ v·Δ` for the wire's value `v`.
//! Constants are public: constant `b` is zero label `b·Δ` at the garbler and
//! active label `0` at the evaluator (both sides agree because
//! `b·Δ ⊕ b·Δ = 0`).
//!
//! Each AND gate appends two blocks `(T_G, T_E)` to the table and uses the
//! hash tweaks `2·g` and `2·g + 1` where `g` is a gate counter that both sides
//! advance identically. Tweaks must never repeat for one Δ, so keep one
//! `Garbler`/`Evaluator` pair per Δ for the whole session (or give parallel
//! instances disjoint counter ranges via `with_first_gate`). Bit 127 of every
//! GC tweak is 0; the OT module uses tweaks with bit 127 set.
//!
//! Outputs are never decoded: the colour bit of an output wire is a boolean
//! share (garbler share `lsb(Z)`, evaluator share `lsb(active)`).

use rand::{CryptoRng, RngCore};

use crate::circuit::Circuit;
use crate::corr::block::{Block, LengthError};
use crate::twopc::tccr::TccrHash;

#[inline(always)]
fn tweaks(gate: u64) -> (Block, Block) {
    let j = (gate as u128) << 1;
    (Block(j), Block(j | 1))
}

/// Half-gates garbling of one AND from the four hashes
/// `[H(A0, j0), H(A1, j0), H(B0, j1), H(B1, j1)]`: returns `(W0, T_G, T_E)`.
#[inline(always)]
fn garble_gate(a0: Block, b0: Block, d: Block, h: [Block; 4]) -> (Block, Block, Block) {
    let [ha0, ha1, hb0, hb1] = h;
    // Generator half: a ∧ p_b with p_b = lsb(B0) known to the garbler.
    let tg = ha0 ^ ha1 ^ d.select(b0.lsb());
    let wg0 = ha0 ^ tg.select(a0.lsb());
    // Evaluator half: a ∧ (b ⊕ p_b), the evaluator knows b ⊕ p_b.
    let te = hb0 ^ hb1 ^ a0;
    let we0 = hb0 ^ (te ^ a0).select(b0.lsb());
    (wg0 ^ we0, tg, te)
}

/// Block `i` of table bytes that hold at least `i + 1` blocks.
#[inline(always)]
fn block_at(t: &[u8], i: usize) -> Block {
    Block::from_bytes(
        t[i * Block::BYTES..(i + 1) * Block::BYTES]
            .try_into()
            .expect("16 bytes"),
    )
}

/// Evaluation of one AND from `H(A, j0)`, `H(B, j1)` and its table.
#[inline(always)]
fn eval_gate(a: Block, b: Block, ha: Block, hb: Block, tg: Block, te: Block) -> Block {
    let wg = ha ^ tg.select(a.lsb());
    let we = hb ^ (te ^ a).select(b.lsb());
    wg ^ we
}

/// Independent circuits garbled side by side: one `and` call garbles
/// `LANES` gates, so their 32 hashes go through AES-NI pipelined.
pub const LANES: usize = 8;

/// Garbler (S1). Wire = zero label.
pub struct Garbler<R> {
    delta: Block,
    gate: u64,
    /// The tables as they go on the wire (16 little-endian bytes per block): sent as they
    /// are, with no conversion pass.
    table: Vec<u8>,
    rng: R,
    hash: TccrHash,
}

impl<R> Drop for Garbler<R> {
    fn drop(&mut self) {
        // Δ is the garbler's secret (best effort, as for the COT sender's copy).
        zeroize::Zeroize::zeroize(&mut self.delta.0);
    }
}

impl<R: RngCore + CryptoRng> Garbler<R> {
    /// `delta` is the free-XOR offset, the same Δ as the COT sender's; `hash` the job's.
    ///
    /// # Panics
    /// If `lsb(delta) == 0` (a local set-up bug, not peer input).
    pub fn new(delta: Block, hash: TccrHash, rng: R) -> Self {
        Self::with_first_gate(delta, hash, rng, 0)
    }

    /// Like [`Garbler::new`] but numbering gates from `first_gate`, for
    /// parallel garblers sharing one Δ on disjoint gate ranges.
    pub fn with_first_gate(delta: Block, hash: TccrHash, rng: R, first_gate: u64) -> Self {
        assert!(delta.lsb(), "free-XOR offset must have lsb 1");
        Garbler {
            delta,
            gate: first_gate,
            table: Vec::new(),
            rng,
            hash,
        }
    }

    pub fn delta(&self) -> Block {
        self.delta
    }

    /// Id of the next AND gate; the evaluator's counter must equal it.
    pub fn gate_counter(&self) -> u64 {
        self.gate
    }

    /// Pre-allocates table space for `ands` more AND gates.
    pub fn reserve_ands(&mut self, ands: usize) {
        self.table.reserve(2 * ands * Block::BYTES);
    }

    /// A wire for an evaluator input whose zero label came from the COT
    /// (`q_j`); the evaluator's active label is the matching `t_j`.
    pub fn input_with_zero_label(&self, zero: Block) -> Block {
        zero
    }

    /// Wires for the garbler's own input bits, with fresh random zero labels,
    /// and the active labels `Z ⊕ bit·Δ` to send to the evaluator.
    pub fn garbler_inputs(&mut self, bits: &[bool]) -> (Vec<Block>, Vec<Block>) {
        let zeros: Vec<Block> = bits.iter().map(|_| Block::random(&mut self.rng)).collect();
        let active = zeros
            .iter()
            .zip(bits)
            .map(|(z, &b)| *z ^ self.delta.select(b))
            .collect();
        (zeros, active)
    }

    /// Zero labels for the garbler's own input bits when their *active* labels are given
    /// (a stream both servers derive from a shared seed): zero = active ⊕ bit·Δ. The
    /// evaluator then needs no label message; active labels are uniform and independent of
    /// Δ and of the bits, exactly as if they had been sent.
    pub fn garbler_inputs_from_active(&self, bits: &[bool], active: &[Block]) -> Vec<Block> {
        assert_eq!(bits.len(), active.len(), "one active label per garbler bit");
        active
            .iter()
            .zip(bits)
            .map(|(a, &b)| *a ^ self.delta.select(b))
            .collect()
    }

    /// Garbler's boolean share of an output wire.
    pub fn output_share(&self, w: &Block) -> bool {
        w.lsb()
    }

    /// Garbler's boolean shares of output wires (their permute bits).
    pub fn output_shares(&self, ws: &[Block]) -> Vec<bool> {
        ws.iter().map(|w| w.lsb()).collect()
    }

    /// Moves the tables out as blocks (tests that inspect or tamper with them).
    #[cfg(test)]
    pub fn take_table(&mut self) -> Vec<Block> {
        let bytes = std::mem::take(&mut self.table);
        crate::corr::block::blocks_from_bytes("table", &bytes, bytes.len() / Block::BYTES)
            .expect("whole blocks")
    }

    /// Bytes the tables garbled so far take on the wire.
    pub fn table_bytes(&self) -> usize {
        self.table.len()
    }

    /// Hands the tables' bytes out whole and goes on garbling into `next` (cleared): a
    /// streaming garbler recycles the buffers its link has sent, so tables are neither
    /// copied nor written into fresh pages.
    pub fn swap_table(&mut self, mut next: Vec<u8>) -> Vec<u8> {
        next.clear();
        std::mem::replace(&mut self.table, next)
    }
}

impl<R> Circuit for Garbler<R> {
    type Wire = Block;

    #[inline]
    fn xor(&mut self, a: &Block, b: &Block) -> Block {
        *a ^ *b
    }

    #[inline]
    fn and(&mut self, a: &Block, b: &Block) -> Block {
        let (a0, b0, d) = (*a, *b, self.delta);
        let (j0, j1) = tweaks(self.gate);
        self.gate += 1;
        let [ha0, ha1, hb0, hb1] = self
            .hash
            .tccr_many([a0, a0 ^ d, b0, b0 ^ d], [j0, j0, j1, j1]);
        let (w0, tg, te) = garble_gate(a0, b0, d, [ha0, ha1, hb0, hb1]);
        self.table.extend_from_slice(&tg.to_bytes());
        self.table.extend_from_slice(&te.to_bytes());
        w0
    }

    #[inline]
    fn not(&mut self, a: &Block) -> Block {
        *a ^ self.delta
    }

    #[inline]
    fn constant(&mut self, bit: bool) -> Block {
        self.delta.select(bit)
    }
}

impl<R> Garbler<R> {
    /// View that garbles [`LANES`] independent copies of a circuit at once
    /// (wire `i` of lane `l` is element `l`'s wire `i`). Gates use ids
    /// `g..g+LANES` of the shared counter and append `2·LANES` table blocks,
    /// lane by lane; [`Evaluator::lanes`] mirrors it.
    pub fn lanes(&mut self) -> GarblerLanes<'_, R> {
        GarblerLanes(self)
    }
}

/// See [`Garbler::lanes`].
pub struct GarblerLanes<'a, R>(&'a mut Garbler<R>);

impl<R> Circuit for GarblerLanes<'_, R> {
    type Wire = [Block; LANES];

    #[inline]
    fn xor(&mut self, a: &Self::Wire, b: &Self::Wire) -> Self::Wire {
        std::array::from_fn(|l| a[l] ^ b[l])
    }

    #[inline]
    fn and(&mut self, a: &Self::Wire, b: &Self::Wire) -> Self::Wire {
        let g = &mut *self.0;
        let d = g.delta;
        let base = g.gate;
        g.gate += LANES as u64;
        let tw: [(Block, Block); LANES] = std::array::from_fn(|l| tweaks(base + l as u64));
        let ha: [Block; 2 * LANES] = g.hash.tccr_many(
            std::array::from_fn(|i| a[i / 2] ^ d.select(i % 2 == 1)),
            std::array::from_fn(|i| tw[i / 2].0),
        );
        let hb: [Block; 2 * LANES] = g.hash.tccr_many(
            std::array::from_fn(|i| b[i / 2] ^ d.select(i % 2 == 1)),
            std::array::from_fn(|i| tw[i / 2].1),
        );
        let mut out = [0u8; 2 * LANES * Block::BYTES];
        let w = std::array::from_fn(|l| {
            let h = [ha[2 * l], ha[2 * l + 1], hb[2 * l], hb[2 * l + 1]];
            let (w0, tg, te) = garble_gate(a[l], b[l], d, h);
            out[32 * l..32 * l + 16].copy_from_slice(&tg.to_bytes());
            out[32 * l + 16..32 * l + 32].copy_from_slice(&te.to_bytes());
            w0
        });
        g.table.extend_from_slice(&out);
        w
    }

    #[inline]
    fn not(&mut self, a: &Self::Wire) -> Self::Wire {
        let d = self.0.delta;
        std::array::from_fn(|l| a[l] ^ d)
    }

    #[inline]
    fn constant(&mut self, bit: bool) -> Self::Wire {
        [self.0.delta.select(bit); LANES]
    }
}

/// Problems found in the garbled tables received from the garbler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcError {
    #[error("garbled table too short: {missing} AND gates had no table entry")]
    TableTooShort { missing: u64 },
    #[error("garbled table too long: {extra} blocks left unused")]
    TableTooLong { extra: usize },
    #[error(transparent)]
    Length(#[from] LengthError),
}

/// Evaluator (S0). Wire = active label.
pub struct Evaluator {
    gate: u64,
    /// The tables as received (16 little-endian bytes per block), read in place.
    table: Vec<u8>,
    /// Bytes of `table` consumed.
    pos: usize,
    missing: u64,
    hash: TccrHash,
}

impl Evaluator {
    /// `hash` is the job's, the garbler's.
    pub fn new(hash: TccrHash) -> Self {
        Self::with_first_gate(hash, 0)
    }

    /// Mirrors [`Garbler::with_first_gate`].
    pub fn with_first_gate(hash: TccrHash, first_gate: u64) -> Self {
        Evaluator {
            gate: first_gate,
            table: Vec::new(),
            pos: 0,
            missing: 0,
            hash,
        }
    }

    pub fn gate_counter(&self) -> u64 {
        self.gate
    }

    /// Installs tables given as blocks (tests).
    #[cfg(test)]
    pub fn load_table(&mut self, table: Vec<Block>) {
        self.load_table_buffer(crate::corr::block::blocks_to_bytes(&table))
            .expect("whole blocks");
    }

    /// Installs the peer's table bytes (16 per block) for the next gates as they are, no copy
    /// (replacing any unread rest; call [`Evaluator::finish`] first to detect that).
    pub fn load_table_buffer(&mut self, bytes: Vec<u8>) -> Result<(), GcError> {
        if !bytes.len().is_multiple_of(Block::BYTES) {
            return Err(LengthError {
                what: "garbled table",
                expected: bytes.len() / Block::BYTES * Block::BYTES,
                got: bytes.len(),
            }
            .into());
        }
        self.table = bytes;
        self.pos = 0;
        Ok(())
    }

    /// The current table buffer, emptied, to receive the next tables into (its
    /// allocation is reused: no fresh pages per chunk).
    pub fn take_table_buffer(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.table);
        buf.clear();
        self.pos = 0;
        buf
    }

    /// Checks that the loaded tables were exactly consumed. Outputs computed
    /// since the last successful `finish` are garbage if this fails.
    pub fn finish(&mut self) -> Result<(), GcError> {
        if self.missing > 0 {
            let missing = self.missing;
            self.missing = 0;
            return Err(GcError::TableTooShort { missing });
        }
        if self.pos != self.table.len() {
            return Err(GcError::TableTooLong {
                extra: (self.table.len() - self.pos) / Block::BYTES,
            });
        }
        Ok(())
    }

    /// Evaluator input wire from its active label (from COT or the garbler).
    pub fn input(&self, active: Block) -> Block {
        active
    }

    /// Evaluator's boolean share of an output wire.
    pub fn output_share(&self, w: &Block) -> bool {
        w.lsb()
    }

    /// Evaluator's boolean shares of output wires (their colour bits).
    pub fn output_shares(&self, ws: &[Block]) -> Vec<bool> {
        ws.iter().map(|w| w.lsb()).collect()
    }
}

impl Circuit for Evaluator {
    type Wire = Block;

    #[inline]
    fn xor(&mut self, a: &Block, b: &Block) -> Block {
        *a ^ *b
    }

    #[inline]
    fn and(&mut self, a: &Block, b: &Block) -> Block {
        let (j0, j1) = tweaks(self.gate);
        self.gate += 1;
        // A short table is the peer's fault: record it and keep the gate
        // counter in step; `finish` reports it.
        let (tg, te) = match self.table.get(self.pos..self.pos + 2 * Block::BYTES) {
            Some(t) => (block_at(t, 0), block_at(t, 1)),
            None => {
                self.missing += 1;
                return Block::ZERO;
            }
        };
        self.pos += 2 * Block::BYTES;
        let [ha, hb] = self.hash.tccr_many([*a, *b], [j0, j1]);
        eval_gate(*a, *b, ha, hb, tg, te)
    }

    #[inline]
    fn not(&mut self, a: &Block) -> Block {
        *a
    }

    #[inline]
    fn constant(&mut self, _bit: bool) -> Block {
        Block::ZERO
    }
}

impl Evaluator {
    /// Mirror of [`Garbler::lanes`].
    pub fn lanes(&mut self) -> EvaluatorLanes<'_> {
        EvaluatorLanes(self)
    }
}

/// See [`Evaluator::lanes`].
pub struct EvaluatorLanes<'a>(&'a mut Evaluator);

impl Circuit for EvaluatorLanes<'_> {
    type Wire = [Block; LANES];

    #[inline]
    fn xor(&mut self, a: &Self::Wire, b: &Self::Wire) -> Self::Wire {
        std::array::from_fn(|l| a[l] ^ b[l])
    }

    #[inline]
    fn and(&mut self, a: &Self::Wire, b: &Self::Wire) -> Self::Wire {
        let e = &mut *self.0;
        let base = e.gate;
        e.gate += LANES as u64;
        let Some(t) = e.table.get(e.pos..e.pos + 2 * LANES * Block::BYTES) else {
            e.missing += LANES as u64;
            return [Block::ZERO; LANES];
        };
        // A fixed-size view, so the per-block bounds checks fold away.
        let t: &[u8; 2 * LANES * Block::BYTES] = t.try_into().expect("2·LANES blocks");
        let t: [Block; 2 * LANES] = std::array::from_fn(|i| block_at(t, i));
        e.pos += 2 * LANES * Block::BYTES;
        let tw: [(Block, Block); LANES] = std::array::from_fn(|l| tweaks(base + l as u64));
        let h: [Block; 2 * LANES] = e.hash.tccr_many(
            std::array::from_fn(|i| if i < LANES { a[i] } else { b[i - LANES] }),
            std::array::from_fn(|i| if i < LANES { tw[i].0 } else { tw[i - LANES].1 }),
        );
        std::array::from_fn(|l| eval_gate(a[l], b[l], h[l], h[LANES + l], t[2 * l], t[2 * l + 1]))
    }

    #[inline]
    fn not(&mut self, a: &Self::Wire) -> Self::Wire {
        *a
    }

    #[inline]
    fn constant(&mut self, _bit: bool) -> Self::Wire {
        [Block::ZERO; LANES]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::circuit::builder::{Build, PlainEval};
    use crate::corr::base_ots::deal_base_ots;
    use crate::corr::block::{blocks_from_bytes, blocks_to_bytes};
    use crate::twopc::ot::{CotReceiver, CotSender};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    /// The hash of the tests' job (any seed: the key is public, fresh per job in the protocol).
    pub(crate) fn test_hash() -> TccrHash {
        TccrHash::for_job(Block(0x7e57))
    }

    /// Runs both parties in one process the way the protocol does: COT for
    /// the evaluator's input labels, the garbler's active labels and tables
    /// sent as bytes, outputs as XOR of colour bits. Checks the plaintext
    /// evaluation agrees and returns the reconstructed outputs.
    pub(crate) struct TwoParty {
        pub garbler: Garbler<ChaCha12Rng>,
        pub evaluator: Evaluator,
        pub cot_s: CotSender,
        pub cot_r: CotReceiver,
        pub hash: TccrHash,
    }

    impl TwoParty {
        pub(crate) fn new(seed: u64) -> Self {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            let (br, bs) = deal_base_ots(&mut rng);
            let delta = bs.delta;
            TwoParty {
                garbler: Garbler::new(
                    delta,
                    test_hash(),
                    ChaCha12Rng::seed_from_u64(seed ^ 0x5a5a),
                ),
                evaluator: Evaluator::new(test_hash()),
                cot_s: CotSender::new(bs),
                cot_r: CotReceiver::new(br),
                hash: test_hash(),
            }
        }

        pub(crate) fn run<B: Build>(
            &mut self,
            b: &B,
            g_bits: &[bool],
            e_bits: &[bool],
        ) -> Vec<bool> {
            // Evaluator's inputs by COT.
            let (msg, t) = self.cot_r.extend(e_bits);
            let q = self.cot_s.extend(e_bits.len(), &msg).unwrap();
            // Garbler side.
            let ge: Vec<Block> = q
                .iter()
                .map(|&z| self.garbler.input_with_zero_label(z))
                .collect();
            let (gg, g_active) = self.garbler.garbler_inputs(g_bits);
            let g_out = b.build(&mut self.garbler, &gg, &ge);
            let table = self.garbler.swap_table(Vec::new());
            let g_active_bytes = blocks_to_bytes(&g_active);
            let g_shares: Vec<bool> = g_out.iter().map(|w| self.garbler.output_share(w)).collect();
            // Evaluator side, from bytes only.
            let g_act = blocks_from_bytes("garbler labels", &g_active_bytes, g_bits.len()).unwrap();
            let eg: Vec<Block> = g_act.iter().map(|&l| self.evaluator.input(l)).collect();
            let ee: Vec<Block> = t.iter().map(|&l| self.evaluator.input(l)).collect();
            self.evaluator.load_table_buffer(table).unwrap();
            let e_out = b.build(&mut self.evaluator, &eg, &ee);
            self.evaluator.finish().unwrap();
            assert_eq!(self.garbler.gate_counter(), self.evaluator.gate_counter());
            let out: Vec<bool> = g_shares
                .iter()
                .zip(&e_out)
                .map(|(gs, w)| gs ^ self.evaluator.output_share(w))
                .collect();
            let plain = b.build(&mut PlainEval, g_bits, e_bits);
            assert_eq!(out, plain, "garbled result differs from PlainEval");
            out
        }
    }

    /// Known answer: a small circuit (two ANDs, a XOR, a NOT) garbled with a fixed Δ and
    /// label seed and the tests' job hash. Pins the half-gates tables, the gate numbering
    /// (tweaks) and the hash.
    #[test]
    fn garbling_known_answer() {
        let mut rng = ChaCha12Rng::seed_from_u64(11);
        let delta = Block(Block::random(&mut rng).0 | 1);
        let mut g = Garbler::new(delta, test_hash(), ChaCha12Rng::seed_from_u64(12));
        let (w, _) = g.garbler_inputs(&[true, false, true, true]);
        let x = g.xor(&w[2], &w[3]);
        let a = g.and(&w[0], &w[1]);
        let n = g.not(&x);
        let z = g.and(&a, &n);
        let mut all = g.swap_table(Vec::new());
        assert_eq!(all.len(), 2 * 32, "two AND gates, 32 bytes each");
        for b in w.iter().chain([&z]) {
            all.extend_from_slice(&b.to_bytes());
        }
        assert_eq!(
            blake3::hash(&all).to_hex().as_str(),
            "dae3114be190d79ec1d96fd8fb6cd0037623b78ab6c2f6740c735a63747bc382"
        );
    }

    #[test]
    fn single_gates_all_inputs() {
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        let delta = Block(Block::random(&mut rng).0 | 1);
        let mut g = Garbler::new(delta, test_hash(), ChaCha12Rng::seed_from_u64(8));
        let mut e = Evaluator::new(test_hash());
        for a in [false, true] {
            for b in [false, true] {
                let (gw, act) = g.garbler_inputs(&[a, b]);
                let (x, y) = (e.input(act[0]), e.input(act[1]));
                let gz = [
                    g.and(&gw[0], &gw[1]),
                    g.xor(&gw[0], &gw[1]),
                    g.not(&gw[0]),
                    g.constant(true),
                    g.constant(false),
                ];
                let cz = {
                    let c1 = g.constant(true);
                    let c0 = g.constant(false);
                    [g.and(&gw[0], &c1), g.and(&c0, &gw[1])]
                };
                e.load_table(g.take_table());
                let ez = [
                    e.and(&x, &y),
                    e.xor(&x, &y),
                    e.not(&x),
                    e.constant(true),
                    e.constant(false),
                ];
                let ec = {
                    let c1 = e.constant(true);
                    let c0 = e.constant(false);
                    [e.and(&x, &c1), e.and(&c0, &y)]
                };
                e.finish().unwrap();
                let want = [a & b, a ^ b, !a, true, false, a, false];
                let all_g: Vec<Block> = gz.iter().chain(&cz).copied().collect();
                let all_e: Vec<Block> = ez.iter().chain(&ec).copied().collect();
                for i in 0..want.len() {
                    // The active label is exactly zero ⊕ v·Δ, and the colour
                    // bits XOR to the value.
                    assert_eq!(all_e[i], all_g[i] ^ delta.select(want[i]), "gate {i}");
                    assert_eq!(
                        g.output_share(&all_g[i]) ^ e.output_share(&all_e[i]),
                        want[i]
                    );
                }
            }
        }
        assert_eq!(g.gate_counter(), e.gate_counter());
    }

    #[test]
    fn random_circuit_matches_plain_and_counters_advance() {
        let mut rng = ChaCha12Rng::seed_from_u64(9);
        let delta = Block(Block::random(&mut rng).0 | 1);
        let mut g = Garbler::new(delta, test_hash(), ChaCha12Rng::seed_from_u64(10));
        let mut e = Evaluator::new(test_hash());
        let mut seen_tables = std::collections::HashSet::new();
        for round in 0..3 {
            let bits: Vec<bool> = (0..16).map(|_| rng.gen()).collect();
            let (mut gw, act) = g.garbler_inputs(&bits);
            let mut ew: Vec<Block> = act.iter().map(|&l| e.input(l)).collect();
            let mut pw = bits.clone();
            let mut p = PlainEval;
            // Same random gate list on all three interpretations.
            let ops: Vec<(u8, usize, usize)> = (0..200)
                .map(|_| {
                    (
                        rng.gen_range(0..4),
                        rng.gen_range(0..16),
                        rng.gen_range(0..16),
                    )
                })
                .collect();
            for &(op, i, j) in &ops {
                let k = (i + j) % 16;
                match op {
                    0 => {
                        gw[k] = g.and(&gw[i], &gw[j]);
                        pw[k] = p.and(&pw[i], &pw[j]);
                    }
                    1 => {
                        gw[k] = g.xor(&gw[i], &gw[j]);
                        pw[k] = p.xor(&pw[i], &pw[j]);
                    }
                    2 => {
                        gw[k] = g.not(&gw[i]);
                        pw[k] = p.not(&pw[i]);
                    }
                    _ => {
                        gw[k] = g.constant(i % 2 == 0);
                        pw[k] = p.constant(i % 2 == 0);
                    }
                }
            }
            let table = g.take_table();
            for t in &table {
                assert!(
                    seen_tables.insert(*t),
                    "table block repeated in round {round}"
                );
            }
            e.load_table(table);
            for &(op, i, j) in &ops {
                let k = (i + j) % 16;
                ew[k] = match op {
                    0 => e.and(&ew[i], &ew[j]),
                    1 => e.xor(&ew[i], &ew[j]),
                    2 => e.not(&ew[i]),
                    _ => e.constant(i % 2 == 0),
                };
            }
            e.finish().unwrap();
            for k in 0..16 {
                assert_eq!(g.output_share(&gw[k]) ^ e.output_share(&ew[k]), pw[k]);
            }
            assert_eq!(g.gate_counter(), e.gate_counter());
        }
    }

    #[test]
    fn lanes_agree_with_plain_and_mix_with_scalar_gates() {
        let mut rng = ChaCha12Rng::seed_from_u64(17);
        let delta = Block(Block::random(&mut rng).0 | 1);
        let mut g = Garbler::new(delta, test_hash(), ChaCha12Rng::seed_from_u64(18));
        let mut e = Evaluator::new(test_hash());
        let bits: Vec<bool> = (0..3 * LANES).map(|_| rng.gen()).collect();
        let (gw, act) = g.garbler_inputs(&bits);
        let lane =
            |v: &[Block], k: usize| -> [Block; LANES] { std::array::from_fn(|l| v[l * 3 + k]) };
        // A scalar gate, then a lane gate ((x∧y)⊕¬z, z∧1), then a scalar gate.
        let s1 = g.and(&gw[0], &gw[1]);
        let (lo, lc) = {
            let mut gl = g.lanes();
            let (x, y, z) = (lane(&gw, 0), lane(&gw, 1), lane(&gw, 2));
            let xy = gl.and(&x, &y);
            let nz = gl.not(&z);
            let one = gl.constant(true);
            (gl.xor(&xy, &nz), gl.and(&z, &one))
        };
        let s2 = g.and(&gw[4], &gw[5]);
        e.load_table(g.take_table());
        let es1 = e.and(&act[0], &act[1]);
        let (elo, elc) = {
            let mut el = e.lanes();
            let (x, y, z) = (lane(&act, 0), lane(&act, 1), lane(&act, 2));
            let xy = el.and(&x, &y);
            let nz = el.not(&z);
            let one = el.constant(true);
            (el.xor(&xy, &nz), el.and(&z, &one))
        };
        let es2 = e.and(&act[4], &act[5]);
        e.finish().unwrap();
        assert_eq!(g.gate_counter(), 2 + 2 * LANES as u64);
        assert_eq!(g.gate_counter(), e.gate_counter());
        assert_eq!(s1.lsb() ^ es1.lsb(), bits[0] & bits[1]);
        assert_eq!(s2.lsb() ^ es2.lsb(), bits[4] & bits[5]);
        for l in 0..LANES {
            let (x, y, z) = (bits[3 * l], bits[3 * l + 1], bits[3 * l + 2]);
            assert_eq!(elo[l], lo[l] ^ delta.select((x & y) ^ !z));
            assert_eq!(elc[l], lc[l] ^ delta.select(z));
        }
        // A table short by one lane gate is reported.
        let (gw, act) = g.garbler_inputs(&[true; LANES]);
        g.lanes()
            .and(&gw[..].try_into().unwrap(), &gw[..].try_into().unwrap());
        let mut t = g.take_table();
        t.pop();
        e.load_table(t);
        let a: [Block; LANES] = act[..].try_into().unwrap();
        e.lanes().and(&a, &a);
        assert_eq!(
            e.finish(),
            Err(GcError::TableTooShort {
                missing: LANES as u64
            })
        );
    }

    #[test]
    fn malformed_tables_are_errors_not_panics() {
        let delta = Block(3);
        let mut g = Garbler::new(delta, test_hash(), ChaCha12Rng::seed_from_u64(1));
        let mut e = Evaluator::new(test_hash());
        let (gw, act) = g.garbler_inputs(&[true, false]);
        g.and(&gw[0], &gw[1]);
        g.and(&gw[0], &gw[1]);
        let bytes = g.swap_table(Vec::new());
        assert_eq!(bytes.len(), 64);
        assert!(e.load_table_buffer(bytes[..63].to_vec()).is_err());
        // One gate's worth only: the second AND is missing.
        e.load_table_buffer(bytes[..32].to_vec()).unwrap();
        e.and(&act[0], &act[1]);
        e.and(&act[0], &act[1]);
        assert_eq!(e.finish(), Err(GcError::TableTooShort { missing: 1 }));
        // Too many blocks.
        e.load_table_buffer(bytes).unwrap();
        e.and(&act[0], &act[1]);
        assert_eq!(e.finish(), Err(GcError::TableTooLong { extra: 2 }));
    }
}
