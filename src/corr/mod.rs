//! The correlations: what the dealer writes and an engine reads, on a floor below both so
//! that `dealer/` produces, `twopc/` consumes, and neither imports the other. The streams'
//! names ([`crate::ring::share::Stream`]) sit lower still, in `ring`.
pub mod base_ots;
pub mod batches;
pub mod block;
pub mod engine_kind;
pub mod explicit;
pub mod masks;
pub mod operands;
pub mod pack;
pub mod randomness;
pub mod run_shape;
pub mod slot;
