//! The boolean engine (GMW with a trusted dealer, as ABY and CrypTen run it): the activation
//! circuit written once for the garbled-circuit engine ([`crate::circuit::activation::ActCircuit`]) is
//! recorded into a netlist, scheduled by AND depth, and evaluated on XOR-shared bits,
//! bit-sliced (64 elements per machine word), with dealer-made AND triples. Outputs become
//! additive shares through daBits. No AES, no OT; a few bits per AND on the link.
//!
//! Correlated randomness per circuit run (one hidden layer of one batch), from the dealer:
//! AND triples (a, b from each party's seed; c from party 0's seed, party 1's explicit) and
//! daBits (bits from each seed; additive shares from party 0's seed, party 1's explicit).
//! Each is derived from its own (layer, batch) stream and used once.
pub mod engine;
#[cfg(test)]
mod wire_masking;

pub use engine::GmwParty;
