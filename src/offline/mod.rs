//! The dealer-free offline phase (issue 74; docs/dealer-free-plan.md): the two servers make
//! a job's correlated randomness between themselves, with nobody else. What exists so far:
//! the linear layers' products by lattice homomorphic encryption, CHEETAH's coefficient
//! packing, no rotations (`he.rs` the parameters and the safe return, `packing.rs` the
//! packing, `product.rs` one product, `triple.rs` a matrix triple: party 1 leaves with the
//! very value a dealer knowing both seeds writes in its file; `mlp.rs` an MLP job's
//! hidden-layer triples in the dealer's order; `conv.rs` a CNN graph's product step, any
//! convolution or per-channel scale, by CHEETAH's convolution packing, and `graph.rs` a
//! graph job's product steps in the dealer's order). docs/protocol.md,
//! "Dealer-free products", says why each message is safe.

pub mod base_ot;
pub mod conv;
pub mod graph;
pub mod he;
pub mod mlp;
pub mod packing;
pub mod product;
pub mod triple;

#[cfg(test)]
mod conv_tests;
#[cfg(test)]
mod tests;
