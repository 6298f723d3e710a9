//! The two nonlinearity engines, by name: what `--engine` selects, what the dealer's file and
//! the servers' session tag record.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum EngineKind {
    /// Garbled circuits (half-gates) with IKNP OT: S1 garbles, S0 evaluates.
    Gc,
    /// Boolean shares with dealer AND triples (GMW), bit-sliced.
    #[default]
    Gmw,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Gc => "gc",
            EngineKind::Gmw => "gmw",
        }
    }

    /// The name and wire version the servers' session tag carries: two builds that would
    /// compute differently from the same files (the garbled-circuit engine's hash changed in
    /// b711eb0) must refuse each other, not run and write a wrong image.
    pub fn wire_name(self) -> &'static str {
        match self {
            EngineKind::Gc => "gc+tccr2",
            EngineKind::Gmw => "gmw",
        }
    }

    /// Patches per batch when the dealer is not told: the boolean engine pays one round per
    /// AND depth per batch, so it wants fewer, larger batches.
    pub fn default_batch(self) -> usize {
        match self {
            EngineKind::Gc => 128,
            EngineKind::Gmw => 2048,
        }
    }

    /// ReLU elements per circuit run of a CNN job when the dealer is not told: the boolean
    /// engine's run holds about 40 B per element (bit-sliced wires, triples, conversions),
    /// the garbled-circuit engine's about 450 B (input OTs up front) per element.
    pub fn default_relu_batch(self) -> usize {
        match self {
            EngineKind::Gc => 1 << 20,
            EngineKind::Gmw => 1 << 23,
        }
    }

    /// The dealer's per-job data that is not a triple share: base OTs and the label seed
    /// for the GC engine, nothing for the boolean engine.
    pub fn deal_setup(self) -> (Vec<u8>, Vec<u8>) {
        match self {
            EngineKind::Gc => crate::corr::base_ots::deal_gc_setup(),
            EngineKind::Gmw => (Vec::new(), Vec::new()),
        }
    }

    /// [`EngineKind::deal_setup`] from the given generator (tests that must be reproducible;
    /// the dealer uses fresh randomness).
    #[doc(hidden)]
    pub fn deal_setup_with<R: rand::RngCore + rand::CryptoRng>(
        self,
        rng: &mut R,
    ) -> (Vec<u8>, Vec<u8>) {
        match self {
            EngineKind::Gc => crate::corr::base_ots::deal_gc_setup_with(rng),
            EngineKind::Gmw => (Vec::new(), Vec::new()),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
