//! The ring Z_2^64: fixed point, secret sharing, the fixed-point plan and its oracle.
pub mod cnn;
pub mod fixed;
pub mod graph;
pub mod matmul;
pub mod oracle;
pub mod party;
pub mod plan;
pub mod share;
pub mod sweep;
pub mod tiles;

pub use party::Party;
