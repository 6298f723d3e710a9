//! The two-party protocol between S0 and S1.
pub mod beaver;
pub mod channel;
pub mod engines;
pub mod error;
pub mod extend;
pub mod gc;
pub mod gmw;
pub mod graph;
pub mod job;
pub mod mlp;
pub mod nonlinear;
pub mod ot;
pub mod poly;
pub mod tccr;
pub mod weights;
