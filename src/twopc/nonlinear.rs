//! The engine interface: the nonlinear steps every secure job calls ([`Nonlinear`]), one
//! implementation per engine, and what an engine counts of its work.

use serde::Serialize;

use crate::circuit::activation::ActConsts;
use crate::corr::randomness::PartyRandomness;
use crate::corr::slot::Slot;
use crate::twopc::channel::Channel;
use crate::twopc::error::ProtocolError;
use crate::twopc::poly::SelShares;

/// The nonlinear steps, one implementation per engine: garbled circuits
/// ([`crate::twopc::gc::engine`], randomness from base OTs given at construction) and boolean
/// shares ([`crate::twopc::gmw`], AND triples and daBits drawn from `rand` at `at`).
pub trait Nonlinear {
    /// Arithmetic shares of the activation circuit's outputs for pre-activation shares `v`.
    fn select(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        c: &ActConsts,
        v: &[u64],
    ) -> Result<SelShares, ProtocolError>;
    /// Arithmetic shares of max(0, floor(v / 2^sh)), the signed k-bit truncation's ReLU
    /// (a CNN hidden layer's activation), correct mod 2^out_bits: the width at which the
    /// caller's readers read them (docs/protocol.md, "Ring width"; the boolean engine's
    /// dealer values are made at that width, the bits above it are arbitrary).
    #[allow(clippy::too_many_arguments)]
    fn relu(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError>;
    /// The exact rescaling (a graph's `Trunc`): shares of floor(V / 2^sh) as a signed k-bit
    /// value, sign-extended in the ring (the circuit's offset-binary output converted, and
    /// its offset taken off by party 1), correct mod 2^out_bits as for [`Self::relu`].
    #[allow(clippy::too_many_arguments)]
    fn trunc(
        &mut self,
        ch: &mut dyn Channel,
        rand: &mut PartyRandomness,
        at: Slot,
        sh: u32,
        k: u32,
        out_bits: u32,
        v: &[u64],
    ) -> Result<Vec<u64>, ProtocolError>;
    fn counters(&self) -> EngineCounters;
    /// Whether a CNN job's ReLU results are left mod 2^k and extended by their shares' top
    /// bits before the next layer's opening (the boolean engine: docs/protocol.md, "The ReLU
    /// by selection"). An engine that says so must give, from [`Self::relu`] at
    /// `out_bits = k`, shares of a value below 2^(k-1): the wrap is the top bits' OR only then.
    fn fuses_relu_extension(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EngineCounters {
    pub and_gates: u64,
    pub ots: u64,
    pub elements: u64,
    /// Rounds of the engine itself: message exchanges it waited for, both parties sending
    /// at once (the boolean engine: AND depth + 1 per circuit run; not counted for GC).
    pub rounds: u64,
}
