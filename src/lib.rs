//! ppdenoise: privacy-preserving two-server neural image denoising.
//!
//! Layout: `plain` (images, models, metrics, float inference: no secrets involved), `ring`
//! (fixed point in Z_2^64, sharing, the fixed-point plan and its plaintext oracle), `circuit`
//! (boolean circuits written once), `corr` (the correlations: what the dealer writes and the
//! engines read), `dealer` (the trusted dealer, which makes them), `twopc` (the two-party
//! protocol, which consumes them: Beaver products, garbled circuits, GMW, oblivious transfer), `net` (the authenticated S0<->S1 link),
//! `formats` (files between parties), `server` (a server's job: files checked into a ready
//! job, the randomness claimed, the link, the run), `cli` (the `ppdenoise` subcommands).

pub mod circuit;
pub mod cli;
pub mod corr;
pub mod dealer;
pub mod fileio;
pub mod formats;
pub mod image;
pub mod import;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod net;
pub mod ring;
pub mod server;
pub mod twopc;
