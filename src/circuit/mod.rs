//! Boolean circuits, each written once and interpreted many ways: in the clear (the oracle),
//! counted, recorded as a netlist (the boolean engine, and the dealer sizing its AND
//! triples), garbled and evaluated (the garbled-circuit engine).
pub mod activation;
pub mod bitslice;
pub mod builder;
pub mod gadgets;
pub mod netlist;

pub use builder::{AndCounter, Build, Circuit, PlainEval};
