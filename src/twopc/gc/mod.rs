//! The garbled-circuit engine: half-gates garbling (free-XOR, point-and-permute) of the
//! circuits of [`crate::circuit`], with IKNP OT ([`crate::twopc::ot`]).
//!
//! One batch of an activation between S0 (evaluator, OT receiver) and S1
//! (garbler, OT sender), with `Δ` shared by the garbler and the COT sender:
//! 1. S0 → S1: `CotReceiver::extend(share_bits(n, s0))` message (16 B/bit).
//! 2. S1: `q = CotSender::extend`, `garble_batch(q)`; S1 → S0: its own active
//!    labels (16 B/bit) and the tables (32 B per AND gate).
//! 3. S0: `load_table_buffer` (the received bytes, read in place), `evaluate_batch(labels, t)` → boolean output
//!    shares; S1's are the `rho` from `garble_batch`.
//! 4. S0 → S1: `CotReceiver::extend(S0's output shares)` (16 B/bit).
//! 5. S1: `b2a_sender`; S1 → S0: corrections (8 B/bit); S0: `b2a_receiver`.
//!    Both pass the same `tweak_base` (`next_ot_index()` before step 4).
//!
//! Never reuse: a base-OT deal (the PRG streams restart at zero), a COT (one
//! use each: a GC input label or one B2A bit), or a gate id under one Δ (keep
//! one `Garbler`/`Evaluator` pair per session).
pub mod batch;
pub mod engine;
#[cfg(test)]
mod garbled_gadgets;
pub mod halfgates;

pub use batch::{evaluate_batch, garble_batch, share_bits};
pub use halfgates::{Evaluator, Garbler, GcError, LANES};
