//! Files exchanged between parties: a typed, versioned, checksummed container and the
//! bodies of each kind.
pub mod bodies;
pub mod checks;
pub mod container;
pub mod error;
pub mod facts;
pub mod header;
pub mod inputs;
pub mod receiver_alpha;
pub mod receiver_facts;
pub mod sealed;
pub mod signing;
pub mod study;
pub mod triplet_stream;
