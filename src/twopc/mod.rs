//! The two-party protocol between S0 and S1.
pub mod beaver;
pub mod channel;
pub mod engines;
pub mod extend;
pub mod gc;
pub mod gmw;
pub mod graph;
pub mod ot;
pub mod poly;
pub mod protocol;
pub mod tccr;
pub mod weights;
